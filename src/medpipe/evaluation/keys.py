"""Metric names per task (no torch import: the config validator reads these)."""

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
)
REGRESSION_METRICS = ("loss", "mae", "rmse", "r2")
SPLITS = ("train", "val", "test")
