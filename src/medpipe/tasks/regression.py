"""The regression task: one continuous target (heart rate in bpm, ...) from any net.

The net learns the z-score of the target (train mean and std from the processed data's metadata),
so the scale of the target does not matter to the optimiser; outputs, metrics and exported models
are in the target's own units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torchmetrics import MeanAbsoluteError

from medpipe.data.processed import DatasetMeta
from medpipe.evaluation.metrics import REGRESSION_METRICS, RegressionMetrics
from medpipe.models.windows import read_net
from medpipe.tasks.base import MedTask
from medpipe.tasks.kinds import TaskKind, register_task_kind


class RegressionOptions(BaseModel):
    """Read from the `model` config section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    loss: Literal["mse", "mae", "huber"] = "mse"  # on the z-scored target
    huber_delta: Annotated[float, Field(gt=0)] = 1.0  # in standard units of the target


class RegressionTask(MedTask):
    Options = RegressionOptions
    train_metric_name = "mae"

    @staticmethod
    def num_outputs(meta: DatasetMeta, options: RegressionOptions) -> int:
        return 1

    @staticmethod
    def option_problems(meta: DatasetMeta, options: RegressionOptions) -> list[str]:
        return []

    def __init__(self, net: nn.Module, meta: DatasetMeta, options: Any = None, **common: Any):
        """`options`: RegressionOptions (or its dict); `common`: MedTask's settings."""
        super().__init__(net, meta, **common)
        o = self.Options.model_validate(options or {})
        self.options = o
        self.loss_name = o.loss
        self.huber_delta = float(o.huber_delta)
        self.register_buffer("target_mean", torch.tensor(float(meta.target_mean)))
        self.register_buffer("target_std", torch.tensor(float(meta.target_std)))
        self.val_metrics = RegressionMetrics()
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

    def operating_point(self) -> dict[str, Any]:
        return {}

    def evaluate_outputs(
        self, out_dir: Path, settings, test_split, rows=None, refit=True, info=None
    ):
        """Metrics with bootstrap intervals, the kept predictions and the error report."""
        from medpipe.evaluation.bootstrap import regression_cis
        from medpipe.evaluation.predictions import Predictions
        from medpipe.evaluation.report import write_regression_report
        from medpipe.evaluation.settings import Evaluation
        from medpipe.evaluation.stats import regression_metrics

        raw, y = self.collected["test"]
        with torch.no_grad():
            pred = self.outputs(raw).double().numpy()
        target = y.double().numpy()
        ev = Evaluation()
        ev.metrics = {f"test/{k}": float(v) for k, v in regression_metrics(pred, target).items()}
        if settings.bootstrap is not None:
            for k, (low, high) in regression_cis(pred, target, settings.bootstrap).items():
                ev.metrics[f"test/{k}_ci_low"], ev.metrics[f"test/{k}_ci_high"] = low, high
        rows = np.asarray((rows or {}).get("test", np.arange(len(target))))
        ids = getattr(test_split, "ids", None)
        ev.predictions = Predictions(
            "test",
            "regression",
            list(self.meta.classes),
            target,
            pred,
            rows,
            raw.numpy(),
            ids,
            info=dict(info or {}),
        ).save(out_dir / "predictions")
        ev.files.update(write_regression_report(pred, target, self.meta.classes[0], out_dir))
        return ev

    def inference_model(self) -> nn.Module:
        return RegressionInferenceModel(self)


class RegressionInferenceModel(nn.Module):
    """What is exported to MLflow: raw samples (stored scale, float32) in, values (N,) out."""

    def __init__(self, task: RegressionTask):
        super().__init__()
        self.preprocess, self.net = task.preprocess, task.net
        self.windows = task.windows
        self.register_buffer("target_mean", task.target_mean.clone())
        self.register_buffer("target_std", task.target_std.clone())

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.preprocess(x)
        raw = read_net(self.net, x, lengths, self.windows, "identity")
        return raw[:, 0] * self.target_std + self.target_mean


KIND = register_task_kind(
    TaskKind(
        name="regression",
        module=RegressionTask,
        data_tasks=("regression",),
        metrics=REGRESSION_METRICS,
        main_metrics=("mae", "rmse", "r2"),
        monitor="val/mae",
        minimised=("loss", "mae", "rmse"),
    )
)
