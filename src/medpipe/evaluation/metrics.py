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

import math
import warnings

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection, R2Score
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryStatScores,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassStatScores,
    MultilabelAccuracy,
    MultilabelAUROC,
    MultilabelStatScores,
)

from medpipe.evaluation.stats import class_key

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


class ClassificationMetrics(nn.Module):
    """All metrics of one split, from per-class confusion counts and per-class AUROC, so that a
    class absent from the split (no sample of it) is left out of every macro average instead of
    counting as 0; its per-class F1 is nan. A ratio with a zero denominator for a present class
    (precision when nothing is predicted positive) is 0.

    update() takes probabilities: (N,) positive-class probability for binary tasks, (N, C) class
    probabilities for multiclass, (N, K) label probabilities for multilabel; labels are predicted
    at 0.5 (binary, multilabel) or by argmax. The test split's metrics are computed from the kept
    predictions instead (medpipe.evaluation.stats), at the run's chosen threshold."""

    def __init__(self, task: str, classes: list[str], score_classes: list[str] | None = None):
        super().__init__()
        if task not in ("binary", "multiclass", "multilabel"):
            raise ValueError(f"unknown classification task '{task}'")
        self.task, self.classes = task, list(classes)
        self.score_index = [self.classes.index(c) for c in score_classes or []]
        k = len(classes)
        if task == "binary":
            self.stats = BinaryStatScores()
            self.auroc = BinaryAUROC()
        elif task == "multiclass":
            self.stats = MulticlassStatScores(k, average=None)
            self.auroc = MulticlassAUROC(k, average=None)
        else:
            self.stats = MultilabelStatScores(k, average=None)
            self.auroc = MultilabelAUROC(k, average=None)

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.stats.update(probs, target)
        self.auroc.update(probs, target)

    def per_class(self) -> tuple[torch.Tensor, ...]:
        """(tp, fp, tn, fn, auroc) per class, float64; binary: class 0 then class 1."""
        tp, fp, tn, fn, _ = self.stats.compute().double().reshape(-1, 5).unbind(1)
        if self.task == "binary":  # class 0's counts are class 1's with the roles swapped
            tp, fp, tn, fn = (
                torch.cat([tn, tp]),
                torch.cat([fn, fp]),
                torch.cat([tp, tn]),
                torch.cat([fp, fn]),
            )
            present = (tp + fn > 0).all()
            auroc = self.auroc.compute().double() if present else torch.tensor(math.nan)
            return tp, fp, tn, fn, auroc.reshape(1)
        with warnings.catch_warnings():  # absent classes: masked out below
            warnings.simplefilter("ignore")
            auroc = self.auroc.compute().double()
        return tp, fp, tn, fn, auroc

    def compute(self) -> dict[str, torch.Tensor]:
        tp, fp, tn, fn, auroc = self.per_class()
        present = (tp + fn) > 0
        nan = torch.tensor(math.nan, dtype=torch.float64, device=tp.device)

        def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.where(b > 0, a / b.clamp(min=1e-300), torch.zeros_like(a))

        def macro(v: torch.Tensor) -> torch.Tensor:
            return v[present].mean() if bool(present.any()) else nan

        precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
        specificity, f1 = ratio(tn, tn + fp), ratio(2 * tp, 2 * tp + fp + fn)
        f1_class = torch.where(present, f1, nan)
        values: dict[str, torch.Tensor] = {}
        if self.task == "binary":
            values["acc"] = ratio(tp.sum(), (tp + fn).sum())
            values.update(
                precision=precision[1], recall=recall[1], specificity=specificity[1], f1=f1[1]
            )
            values["auroc"] = auroc[0]
        else:
            if self.task == "multiclass":
                values["acc"] = ratio(tp.sum(), (tp + fn).sum())
            else:  # every label decision
                values["acc"] = ratio((tp + tn).sum(), (tp + fp + tn + fn).sum())
            values.update(
                precision=macro(precision),
                recall=macro(recall),
                specificity=macro(specificity),
                f1=macro(f1),
            )
            defined = present & (tn + fp > 0)  # one-vs-rest AUROC needs both sides
            values["auroc"] = auroc[defined].mean() if bool(defined.any()) else nan
        values["f1_macro"] = macro(f1)
        if self.task == "multilabel":
            values["balanced_acc"] = (macro(recall) + macro(specificity)) / 2
        else:
            values["balanced_acc"] = macro(recall)
        if self.score_index:
            values["f1_score"] = f1_class[self.score_index].nanmean()
        for name, v in zip(self.classes, f1_class, strict=True):
            values[f"f1_{class_key(name)}"] = v
        return {k: v.float() for k, v in values.items()}

    def reset(self) -> None:
        self.stats.reset()
        self.auroc.reset()


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
