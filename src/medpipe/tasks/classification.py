"""The classification task kind: any net on binary, multiclass and multilabel data, with an
operating point (temperature and threshold) chosen on the validation split after training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medpipe.data.processed import DatasetMeta
from medpipe.evaluation.metrics import (
    CLASSIFICATION_METRICS,
    ClassificationMetrics,
    train_accuracy,
)
from medpipe.models.windows import read_net
from medpipe.tasks.base import MedTask
from medpipe.tasks.kinds import TaskKind, register_task_kind


class ClassificationOptions(BaseModel):
    """Read from the `model` config section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # cross_entropy | bce (bce: one logit per label; binary and multilabel)
    loss: Literal["cross_entropy", "bce"] = "cross_entropy"
    # null | balanced (inverse class frequency of the training split) | [w0, w1, ...]
    class_weights: (
        Literal["balanced"]
        | Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)]
        | None
    ) = None
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0


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


class ClassificationTask(MedTask):
    """Cross-entropy (or BCE) on logits; metrics read probabilities."""

    Options = ClassificationOptions
    train_metric_name = "acc"

    @staticmethod
    def num_outputs(meta: DatasetMeta, options: ClassificationOptions) -> int:
        return 1 if (meta.task == "binary" and options.loss == "bce") else meta.num_outputs

    @staticmethod
    def option_problems(meta: DatasetMeta, options: ClassificationOptions) -> list[str]:
        """What the options cannot do on this data (the config check reports these)."""
        problems = []
        if options.loss == "bce" and meta.task == "multiclass":
            problems.append(
                f"model.loss: bce needs binary or multilabel data; {meta.name} is multiclass, "
                "use cross_entropy"
            )
        weights = options.class_weights
        if isinstance(weights, list) and len(weights) != len(meta.classes):
            problems.append(
                f"model.class_weights: {len(weights)} weights for the {len(meta.classes)} "
                f"classes of {meta.name} ({', '.join(meta.classes)})"
            )
        return problems

    def __init__(self, net: nn.Module, meta: DatasetMeta, options: Any = None, **common: Any):
        """`options`: ClassificationOptions (or its dict); `common`: MedTask's settings
        (normalize, optimizer, scheduler, max_epochs, ...)."""
        super().__init__(net, meta, **common)
        o = self.Options.model_validate(options or {})
        self.options = o
        self.loss_name = o.loss
        self.label_smoothing = float(o.label_smoothing)
        weights = class_weights_from(o.class_weights, meta)
        self.register_buffer("class_weight", weights if weights is not None else torch.empty(0))
        self.val_metrics = ClassificationMetrics(meta.task, meta.classes, meta.score_classes)
        self.train_metric = train_accuracy(meta.task, len(meta.classes))
        # The operating point, set after training from the validation split (evaluate_outputs):
        # logits are divided by `temperature`; binary: positive when P >= threshold; multilabel:
        # one threshold per label; multiclass: argmax (no threshold).
        self.register_buffer("temperature", torch.ones(()))
        shapes = {"binary": (), "multilabel": (len(meta.classes),), "multiclass": (0,)}
        self.register_buffer("threshold", torch.full(shapes[meta.task], 0.5))
        self.threshold_rule = "0.5"
        # the windows of a record are combined as probabilities (models/windows.py)
        one_logit = self.num_outputs(meta, o) == 1 or meta.task == "multilabel"
        self.window_link = "sigmoid" if one_logit else "softmax"

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

    def operating_point(self) -> dict[str, Any]:
        """What the checkpoint and the exported model carry: rule, threshold(s), temperature."""
        threshold: float | list[float] | None = None
        if self.task == "binary":
            threshold = float(self.threshold)
        elif self.task == "multilabel":
            threshold = [float(t) for t in self.threshold]
        return {
            "threshold_rule": self.threshold_rule if threshold is not None else "argmax",
            "threshold": threshold,
            "temperature": float(self.temperature),
        }

    def evaluate_outputs(
        self, out_dir: Path, settings, test_split, rows=None, refit=True, info=None
    ):
        """Metrics with intervals, calibration, operating point, predictions, report figures and
        explanations of the kept outputs (medpipe.evaluation.classifying)."""
        from medpipe.evaluation.classifying import evaluate_classification

        if refit and "val" in self.collected:
            self.threshold_rule = settings.threshold
        return evaluate_classification(self, out_dir, settings, test_split, rows, refit, info)

    def inference_model(self) -> nn.Module:
        return InferenceModel(self)


class InferenceModel(nn.Module):
    """What is exported to MLflow: raw intensities (stored scale, float32) in, probabilities out."""

    def __init__(self, task: ClassificationTask):
        super().__init__()
        self.preprocess, self.net, self.kind = task.preprocess, task.net, task.task
        self.one_logit = task.num_outputs(task.meta, task.options) == 1 and task.task == "binary"
        self.windows, self.window_link = task.windows, task.window_link
        # calibrated probabilities; `threshold` is the decision the run chose (argmax: empty)
        self.register_buffer("temperature", task.temperature.detach().clone().cpu())
        self.register_buffer("threshold", task.threshold.detach().clone().cpu())

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.preprocess(x)
        logits = read_net(self.net, x, lengths, self.windows, self.window_link)
        logits = logits / self.temperature
        if self.kind == "multiclass" or (self.kind == "binary" and not self.one_logit):
            return logits.softmax(1)
        return torch.sigmoid(logits)


KIND = register_task_kind(
    TaskKind(
        name="classification",
        module=ClassificationTask,
        data_tasks=("binary", "multiclass", "multilabel"),
        metrics=CLASSIFICATION_METRICS,
        metric_prefixes=("f1_",),  # f1_<class>: per-class F1
        main_metrics=("auroc", "acc", "f1", "f1_score"),  # f1_score: a challenge's score
        monitor="val/auroc",
    )
)
