"""The classification task: wraps any net for binary, multiclass and multilabel data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn

from medpipe.data.processed import DatasetMeta
from medpipe.data.transforms import Normalizer
from medpipe.evaluation.metrics import ClassificationMetrics
from medpipe.models.optim import build_scheduler


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


class ClassificationTask(L.LightningModule):
    """Loss, metrics, logging and optimisation for a classification net.

    Input batches carry samples in their stored dtype; `preprocess` normalises them on the device.
    """

    def __init__(
        self,
        net: nn.Module,
        meta: DatasetMeta,
        normalize: str,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: dict[str, Any],
        max_epochs: int,
        loss: str = "cross_entropy",
        class_weights: Any = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.net = net
        self.meta = meta
        self.task = meta.task
        self.loss_name = loss
        self.label_smoothing = float(label_smoothing)
        self.optimizer_factory = optimizer
        self.scheduler_cfg = dict(scheduler)
        self.max_epochs = max_epochs
        self.preprocess = Normalizer(
            normalize, meta.scale, meta.mean, meta.std, spatial_dims=len(meta.sample_shape) - 1
        )
        weights = class_weights_from(class_weights, meta)
        self.register_buffer("class_weight", weights if weights is not None else torch.empty(0))
        self.val_metrics = ClassificationMetrics(meta.task, meta.classes)
        self.test_metrics = ClassificationMetrics(meta.task, meta.classes)
        self.train_acc = ClassificationMetrics(meta.task, meta.classes).main["acc"]
        self.run_config: dict[str, Any] = {}
        self.test_outputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._test_buffer: list[tuple[torch.Tensor, torch.Tensor]] = []

    # -- model ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(x))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Binary: P(positive) (N,); multiclass: softmax (N, C); multilabel: sigmoid (N, K)."""
        if self.task == "binary":
            return torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else logits.softmax(1)[:, 1]
        if self.task == "multiclass":
            return logits.softmax(1)
        return torch.sigmoid(logits)

    def _metric_target(self, y: torch.Tensor) -> torch.Tensor:
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

    # -- steps ---------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        self.train_acc.update(self.probabilities(logits.detach()), self._metric_target(y))
        # Epoch-level only: accumulated on the device, reduced (and synced across ranks) once per epoch.
        self.log(
            "train/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(x),
            sync_dist=True,
        )
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def _eval_step(self, batch, split: str, metrics: ClassificationMetrics) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        self.log(
            f"{split}/loss",
            self.loss(logits, y),
            on_step=False,
            on_epoch=True,
            prog_bar=split == "val",
            batch_size=len(x),
            sync_dist=True,
        )
        probs = self.probabilities(logits)
        metrics.update(probs, self._metric_target(y))
        return probs

    def _log_metrics(self, split: str, metrics: ClassificationMetrics) -> None:
        for name, value in metrics.compute().items():
            self.log(f"{split}/{name}", value, prog_bar=split == "val" and name == "auroc")
        metrics.reset()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val", self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_start(self) -> None:
        self._test_buffer = []

    def test_step(self, batch, batch_idx):
        probs = self._eval_step(batch, "test", self.test_metrics)
        self._test_buffer.append((probs.detach(), batch[1].detach()))

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)
        probs = torch.cat([p for p, _ in self._test_buffer])
        target = torch.cat([t for _, t in self._test_buffer])
        if self.trainer.world_size > 1:
            probs = self.all_gather(probs).flatten(0, 1)
            target = self.all_gather(target).flatten(0, 1)
        self.test_outputs = (probs.float().cpu(), target.cpu())
        self._test_buffer = []

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        scheduler = build_scheduler(optimizer, self.scheduler_cfg, self.max_epochs)
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }

    # -- checkpoints carry what is needed to rebuild the task ---------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["medpipe"] = {"config": self.run_config, "meta": asdict(self.meta)}


class InferenceModel(nn.Module):
    """What is exported to MLflow: raw intensities (stored scale, float32) in, probabilities out."""

    def __init__(self, task: ClassificationTask):
        super().__init__()
        self.preprocess, self.net, self.kind = task.preprocess, task.net, task.task
        self.one_logit = num_outputs(task.meta, task.loss_name) == 1 and task.task == "binary"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(self.preprocess(x))
        if self.kind == "multiclass" or (self.kind == "binary" and not self.one_logit):
            return logits.softmax(1)
        return torch.sigmoid(logits)
