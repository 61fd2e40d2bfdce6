"""Operating points: the decision threshold a binary or multilabel classifier is reported at.

A rule is chosen on the validation split and the threshold it gives is then applied unchanged to
the test split. Rules (`parse_rule`):

- a number in (0, 1), e.g. `0.5`: that fixed threshold;
- `youden`: the threshold maximising sensitivity + specificity - 1 (Youden's J);
- `max_f1`: the threshold maximising the F1 score of the positive class;
- `sensitivity@<x>`: the HIGHEST threshold whose sensitivity is >= x (the most specific point that
  meets the sensitivity target);
- `specificity@<x>`: the LOWEST threshold whose specificity is >= x (the most sensitive point that
  meets the specificity target).

A sample is predicted positive when score >= threshold. Data-driven thresholds are chosen among
the observed scores (as sklearn's `roc_curve` thresholds), so applying the threshold to the data it
was chosen on reproduces the documented point exactly. Ties (youden, max_f1) go to the highest
threshold, the one predicting fewest positives. When no observed score reaches a specificity
target, the threshold is placed just above the highest score (nothing is predicted positive,
specificity 1).

Multiclass tasks have no threshold: the argmax decides. A multilabel task gets one threshold per
label, each chosen on its own column; a label (or a binary task) whose validation split holds only
one class cannot be placed on a curve and falls back to 0.5 (`OperatingPoint.fallback` lists it).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

FIXED, YOUDEN, MAX_F1, SENSITIVITY, SPECIFICITY = (
    "fixed",
    "youden",
    "max_f1",
    "sensitivity",
    "specificity",
)
FALLBACK_THRESHOLD = 0.5
ALLOWED = (
    "a threshold in (0, 1) such as 0.5, 'youden', 'max_f1', 'sensitivity@<x>' or "
    "'specificity@<x>' with x in (0, 1), e.g. 'sensitivity@0.95'"
)
_TARGET_RULE = re.compile(r"^(sensitivity|specificity)@(.+)$")


def _fraction(text: str) -> float | None:
    """The number in (0, 1) that `text` spells, else None."""
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and 0.0 < x < 1.0 else None


def parse_rule(rule: str | float) -> tuple[str, float | None]:
    """(kind, value) of an operating-point rule; ValueError naming the allowed rules otherwise.

    kind is one of fixed, youden, max_f1, sensitivity, specificity; value is the threshold (fixed)
    or the target (sensitivity, specificity), None for youden and max_f1.
    """
    if isinstance(rule, bool):  # bool is an int: True would read as a threshold of 1
        raise ValueError(f"unknown operating-point rule {rule!r}: use {ALLOWED}")
    if isinstance(rule, (int, float, np.floating, np.integer)):
        text = repr(float(rule))
    elif isinstance(rule, str):
        text = rule.strip().lower()
    else:
        raise ValueError(f"unknown operating-point rule {rule!r}: use {ALLOWED}")
    if text in (YOUDEN, MAX_F1):
        return text, None
    if (m := _TARGET_RULE.match(text)) and (x := _fraction(m.group(2))) is not None:
        return m.group(1), x
    if (x := _fraction(text)) is not None:
        return FIXED, x
    raise ValueError(f"unknown operating-point rule {rule!r}: use {ALLOWED}")


def describe_rule(rule: str | float) -> str:
    """One line saying what the rule picks."""
    kind, x = parse_rule(rule)
    if kind == FIXED:
        return f"fixed threshold {x:g}: positive when the score is >= {x:g}"
    if kind == YOUDEN:
        return (
            "youden: the validation threshold maximising sensitivity + specificity - 1 (Youden's J)"
        )
    if kind == MAX_F1:
        return "max_f1: the validation threshold maximising the F1 score of the positive class"
    if kind == SENSITIVITY:
        return (
            f"sensitivity@{x:g}: the highest validation threshold with sensitivity >= {x:g} "
            "(the most specific point meeting the sensitivity target)"
        )
    return (
        f"specificity@{x:g}: the lowest validation threshold with specificity >= {x:g} "
        "(the most sensitive point meeting the specificity target)"
    )


def _counts(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate thresholds (distinct scores, descending) and the integer TP, FP at each
    (positive when score >= t)."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], y[order]
    # The last index of each run of equal scores: all samples with score >= s[i] are positive.
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tp = np.cumsum(t)[last]
    fp = (last + 1) - tp
    return s[last], tp, fp


def choose_threshold(scores: np.ndarray, target_binary: np.ndarray, rule: str | float) -> float:
    """The threshold `rule` picks for one binary problem (positive when score >= threshold).

    Data-driven rules need both classes in `target_binary` (ValueError otherwise).
    """
    kind, x = parse_rule(rule)
    if kind == FIXED:
        return float(x)
    scores = np.asarray(scores, np.float64).ravel()
    y = np.asarray(target_binary).ravel().astype(np.int64)
    if scores.shape != y.shape or len(y) == 0:
        raise ValueError(f"scores {scores.shape} and targets {y.shape} must be the same, non-empty")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"rule {rule!r} needs both classes in the data; got only class {y[0]}")
    thresholds, tp, fp = _counts(scores, y)
    if kind == YOUDEN:
        # J = tp/P - fp/N compared exactly as the integer tp*N - fp*P, so ties are real ties;
        # argmax takes the first maximum and thresholds are descending: ties go to the highest.
        return float(thresholds[np.argmax(tp * n_neg - fp * n_pos)])
    if kind == MAX_F1:
        f1 = 2 * tp / (tp + fp + n_pos)  # 2TP / (2TP + FP + FN)
        return float(thresholds[np.flatnonzero(f1 >= f1.max() - 1e-12)[0]])
    if kind == SENSITIVITY:
        # tp / n_pos is correctly rounded, so a rate that is exactly the target (4/5 against 0.8)
        # compares equal. Sensitivity only grows as the threshold falls and is 1 at the lowest.
        return float(thresholds[np.flatnonzero(tp / n_pos >= x)[0]])
    # tn / n_neg, not 1 - fp / n_neg (which can round below an exact target).
    meets = np.flatnonzero((n_neg - fp) / n_neg >= x)  # falls as the threshold falls
    if len(meets) == 0:
        return float(np.nextafter(thresholds[0], np.inf))
    return float(thresholds[meets[-1]])


@dataclass(frozen=True)
class OperatingPoint:
    """A chosen operating point: the rule, its threshold(s) and the labels that fell back to 0.5.

    threshold: a float (binary), a (K,) array (multilabel) or None (multiclass: argmax).
    fallback: the label columns (multilabel) or (1,) (binary, the positive class) whose
    validation split held a single class and that therefore use 0.5.
    """

    rule: str
    threshold: float | np.ndarray | None
    fallback: tuple[int, ...] = field(default_factory=tuple)

    @property
    def description(self) -> str:
        return describe_rule(self.rule)


def select_operating_point(
    probs: np.ndarray, target: np.ndarray, task: str, rule: str | float
) -> OperatingPoint:
    """Choose the threshold(s) on a (validation) split and say which labels fell back to 0.5."""
    kind, _ = parse_rule(rule)  # reject a bad rule whatever the task
    rule_text = rule if isinstance(rule, str) else repr(float(rule))
    if task == "multiclass":
        return OperatingPoint(rule_text, None)
    probs, target = np.asarray(probs, np.float64), np.asarray(target)
    if task == "binary":
        p = probs[:, 1] if probs.ndim == 2 and probs.shape[1] == 2 else probs.ravel()
        if len(np.unique(target)) < 2 and kind != FIXED:
            warnings.warn(
                f"operating point {rule!r}: the split holds one class; using 0.5", stacklevel=2
            )
            return OperatingPoint(rule_text, FALLBACK_THRESHOLD, (1,))
        return OperatingPoint(rule_text, choose_threshold(p, target, rule))
    if task != "multilabel":
        raise ValueError(f"task must be binary, multiclass or multilabel, got {task!r}")
    thresholds, fallback = np.empty(probs.shape[1]), []
    for k in range(probs.shape[1]):
        column = target[:, k]
        if len(np.unique(column)) < 2 and kind != FIXED:
            thresholds[k] = FALLBACK_THRESHOLD
            fallback.append(k)
        else:
            thresholds[k] = choose_threshold(probs[:, k], column, rule)
    if fallback:
        warnings.warn(
            f"operating point {rule!r}: labels {fallback} have one class in the split; using 0.5",
            stacklevel=2,
        )
    return OperatingPoint(rule_text, thresholds, tuple(fallback))


def choose_thresholds(
    probs: np.ndarray, target: np.ndarray, task: str, rule: str | float
) -> float | np.ndarray | None:
    """Binary: a float; multilabel: a (K,) array, one per label (0.5 where a label has one class,
    see `select_operating_point` for which); multiclass: None (argmax decides)."""
    return select_operating_point(probs, target, task, rule).threshold
