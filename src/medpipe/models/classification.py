"""The classification task: wraps any net for binary, multiclass and multilabel data."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medpipe.data.processed import DatasetMeta
from medpipe.evaluation.metrics import ClassificationMetrics, train_accuracy
from medpipe.models.task import MedTask


def class_weights_from(spec: Any, meta: DatasetMeta) -> torch.Tensor | None:
    """null | 'balanced' (n / (k * count) over the training split) | an explicit list."""
    if spec is None:
        return None
    if spec == "balanced":
        counts = torch.tensor(meta.class_counts["train"], dtype=torch.float32).clamp(min=1)
        if meta.task == "multilabel":
            return (meta.sizes["train"] - counts) / counts  # pos_weight per label
        return counts.sum() / (len(counts) * counts)
    return torch.tensor(list(spec), dtype=torch.float32)


def num_outputs(meta: DatasetMeta, loss: str) -> int:
    return 1 if (meta.task == "binary" and loss == "bce") else meta.num_outputs


class ClassificationTask(MedTask):
    """Cross-entropy (or BCE) on logits; metrics read probabilities."""

    train_metric_name = "acc"

    def __init__(
        self,
        net: nn.Module,
        meta: DatasetMeta,
        loss: str = "cross_entropy",
        class_weights: Any = None,
        label_smoothing: float = 0.0,
        **common: Any,
    ):
        """`common`: MedTask's options (normalize, optimizer, scheduler, max_epochs, ...)."""
        super().__init__(net, meta, **common)
        self.loss_name = loss
        self.label_smoothing = float(label_smoothing)
        weights = class_weights_from(class_weights, meta)
        self.register_buffer("class_weight", weights if weights is not None else torch.empty(0))
        self.val_metrics = ClassificationMetrics(meta.task, meta.classes, meta.score_classes)
        self.test_metrics = ClassificationMetrics(meta.task, meta.classes, meta.score_classes)
        self.train_metric = train_accuracy(meta.task, len(meta.classes))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Binary: P(positive) (N,); multiclass: softmax (N, C); multilabel: sigmoid (N, K)."""
        if self.task == "binary":
            return torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else logits.softmax(1)[:, 1]
        if self.task == "multiclass":
            return logits.softmax(1)
        return torch.sigmoid(logits)

    outputs = probabilities

    def metric_target(self, y: torch.Tensor) -> torch.Tensor:
        return y.long() if self.task == "multilabel" else y  # multi-hot targets are stored as float

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = self.class_weight if self.class_weight.numel() else None
        if self.task == "multilabel":
            return F.binary_cross_entropy_with_logits(logits, y.float(), pos_weight=w)
        if logits.shape[1] == 1:  # binary with one logit (loss=bce)
            pos_weight = (w[1] / w[0]).reshape(1) if w is not None else None
            return F.binary_cross_entropy_with_logits(
                logits[:, 0], y.float(), pos_weight=pos_weight
            )
        return F.cross_entropy(logits, y.long(), weight=w, label_smoothing=self.label_smoothing)


class InferenceModel(nn.Module):
    """What is exported to MLflow: raw intensities (stored scale, float32) in, probabilities out."""

    def __init__(self, task: ClassificationTask):
        super().__init__()
        self.preprocess, self.net, self.kind = task.preprocess, task.net, task.task
        self.one_logit = num_outputs(task.meta, task.loss_name) == 1 and task.task == "binary"

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.preprocess(x)
        logits = self.net(x) if lengths is None else self.net(x, lengths=lengths)
        if self.kind == "multiclass" or (self.kind == "binary" and not self.one_logit):
            return logits.softmax(1)
        return torch.sigmoid(logits)
