"""Metric names per task (no torch import: the config validator reads these)."""

from __future__ import annotations

from typing import Any

CLASSIFICATION_METRICS = (
    "loss",
    "acc",
    "balanced_acc",
    "precision",
    "recall",
    "specificity",
    "f1",
    "f1_macro",
    "auroc",
    "f1_score",
)
REGRESSION_METRICS = ("loss", "mae", "rmse", "r2")
SPLITS = ("train", "val", "test")


def metric_direction(monitor: Any) -> str | None:
    """'min' for errors and losses, 'max' for scores, None if unknown."""
    if not isinstance(monitor, str):
        return None
    metric = monitor.split("/", 1)[-1]
    if metric in ("loss", "mae", "rmse"):
        return "min"
    return "max"
