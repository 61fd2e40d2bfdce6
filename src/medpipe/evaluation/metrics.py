"""Task metrics with torchmetrics, `average` always explicit.

Classification keys (prefixed `{split}/`): acc (micro accuracy), balanced_acc (mean per-class
recall), precision, recall (sensitivity), specificity, f1, f1_macro, f1_<class> (per class) and
auroc; f1_score when the dataset names the classes its challenge score averages (PhysioNet 2017:
the mean F1 of N, A and O). For binary tasks precision, recall, specificity and f1 are those of the
positive class (the clinical convention); for multiclass and multilabel tasks they are macro
averages over classes.

Regression keys: mae, rmse, r2 (coefficient of determination), in the target's own units.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection, R2Score
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    BinarySpecificity,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassSpecificity,
    MultilabelAccuracy,
    MultilabelAUROC,
    MultilabelF1Score,
    MultilabelPrecision,
    MultilabelRecall,
    MultilabelSpecificity,
)

# The names each metric collection below logs (per split, `{split}/{name}`), and the loss.
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


def class_key(name: str) -> str:
    """A class name as a metric-key fragment: lower case, [a-z0-9_] only."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "class"


class ClassificationMetrics(nn.Module):
    """All metrics of one split. update() takes probabilities: (N,) positive-class probability for
    binary tasks, (N, C) class probabilities for multiclass, (N, K) label probabilities for multilabel."""

    def __init__(self, task: str, classes: list[str], score_classes: list[str] | None = None):
        super().__init__()
        self.task, self.classes = task, list(classes)
        self.score_index = [self.classes.index(c) for c in score_classes or []]
        k = len(classes)
        if task == "binary":
            self.main = MetricCollection(
                {
                    "acc": BinaryAccuracy(),
                    "precision": BinaryPrecision(),
                    "recall": BinaryRecall(),
                    "specificity": BinarySpecificity(),
                    "f1": BinaryF1Score(),
                    "auroc": BinaryAUROC(),
                }
            )
            self.per_class = MetricCollection(
                {
                    "balanced_acc": MulticlassAccuracy(2, average="macro"),
                    "f1_macro": MulticlassF1Score(2, average="macro"),
                    "f1_class": MulticlassF1Score(2, average=None),
                }
            )
        elif task == "multiclass":
            self.main = MetricCollection(
                {
                    "acc": MulticlassAccuracy(k, average="micro"),
                    "balanced_acc": MulticlassAccuracy(k, average="macro"),
                    "precision": MulticlassPrecision(k, average="macro"),
                    "recall": MulticlassRecall(k, average="macro"),
                    "specificity": MulticlassSpecificity(k, average="macro"),
                    "f1": MulticlassF1Score(k, average="macro"),
                    "f1_macro": MulticlassF1Score(k, average="macro"),
                    "f1_class": MulticlassF1Score(k, average=None),
                    "auroc": MulticlassAUROC(k, average="macro"),
                }
            )
            self.per_class = None
        elif task == "multilabel":
            self.main = MetricCollection(
                {
                    "acc": MultilabelAccuracy(k, average="micro"),
                    "precision": MultilabelPrecision(k, average="macro"),
                    "recall": MultilabelRecall(k, average="macro"),
                    "specificity": MultilabelSpecificity(k, average="macro"),
                    "f1": MultilabelF1Score(k, average="macro"),
                    "f1_macro": MultilabelF1Score(k, average="macro"),
                    "f1_class": MultilabelF1Score(k, average=None),
                    "auroc": MultilabelAUROC(k, average="macro"),
                }
            )
            self.per_class = None
        else:
            raise ValueError(f"unknown classification task '{task}'")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.main.update(probs, target)
        if self.per_class is not None:
            self.per_class.update(torch.stack([1 - probs, probs], dim=1), target)

    def compute(self) -> dict[str, torch.Tensor]:
        values = dict(self.main.compute())
        if self.per_class is not None:
            values.update(self.per_class.compute())
        if self.task == "multilabel":
            values["balanced_acc"] = (values["recall"] + values["specificity"]) / 2
        per_class = values.pop("f1_class")
        if self.score_index:
            values["f1_score"] = per_class[self.score_index].mean()
        for name, v in zip(self.classes, per_class, strict=True):
            values[f"f1_{class_key(name)}"] = v
        return values

    def reset(self) -> None:
        self.main.reset()
        if self.per_class is not None:
            self.per_class.reset()


def train_accuracy(task: str, n_classes: int) -> Metric:
    """The running training accuracy, without per-step argument checks (they sync the device)."""
    if task == "binary":
        return BinaryAccuracy(validate_args=False)
    if task == "multiclass":
        return MulticlassAccuracy(n_classes, average="micro", validate_args=False)
    return MultilabelAccuracy(n_classes, average="micro", validate_args=False)


class RegressionMetrics(nn.Module):
    """mae, rmse and r2 of predicted values (N,) against targets (N,)."""

    def __init__(self):
        super().__init__()
        self.main = MetricCollection(
            {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False), "r2": R2Score()}
        )

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.main.update(pred.float(), target.float())

    def compute(self) -> dict[str, torch.Tensor]:
        return dict(self.main.compute())

    def reset(self) -> None:
        self.main.reset()
