"""The regression task: one continuous target (heart rate in bpm, ...) from any net.

The net learns the z-score of the target (train mean and std from the processed data's metadata),
so the scale of the target does not matter to the optimiser; outputs, metrics and exported models
are in the target's own units.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanAbsoluteError

from medpipe.data.processed import DatasetMeta
from medpipe.evaluation.metrics import RegressionMetrics
from medpipe.models.task import MedTask

LOSSES = ("mse", "mae", "huber")


class RegressionTask(MedTask):
    train_metric_name = "mae"

    def __init__(
        self,
        net: nn.Module,
        meta: DatasetMeta,
        loss: str = "mse",
        huber_delta: float = 1.0,
        **common: Any,
    ):
        """`common`: MedTask's options (normalize, optimizer, scheduler, max_epochs, ...)."""
        super().__init__(net, meta, **common)
        if loss not in LOSSES:
            raise ValueError(f"unknown regression loss '{loss}'; use one of {', '.join(LOSSES)}")
        self.loss_name = loss
        self.huber_delta = float(huber_delta)
        self.register_buffer("target_mean", torch.tensor(float(meta.target_mean)))
        self.register_buffer("target_std", torch.tensor(float(meta.target_std)))
        self.val_metrics = RegressionMetrics()
        self.test_metrics = RegressionMetrics()
        self.train_metric = MeanAbsoluteError()

    def outputs(self, raw: torch.Tensor) -> torch.Tensor:
        """Predicted values (N,) in the target's units."""
        return raw[:, 0].float() * self.target_std + self.target_mean

    def metric_target(self, y: torch.Tensor) -> torch.Tensor:
        return y.float()

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = (y.float() - self.target_mean) / self.target_std  # learnt in standard units
        pred = raw[:, 0].float()
        if self.loss_name == "mse":
            return F.mse_loss(pred, z)
        if self.loss_name == "mae":
            return F.l1_loss(pred, z)
        return F.huber_loss(pred, z, delta=self.huber_delta)


class RegressionInferenceModel(nn.Module):
    """What is exported to MLflow: raw samples (stored scale, float32) in, values (N,) out."""

    def __init__(self, task: RegressionTask):
        super().__init__()
        self.preprocess, self.net = task.preprocess, task.net
        self.register_buffer("target_mean", task.target_mean.clone())
        self.register_buffer("target_std", task.target_std.clone())

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.preprocess(x)
        raw = self.net(x) if lengths is None else self.net(x, lengths=lengths)
        return raw[:, 0] * self.target_std + self.target_mean
