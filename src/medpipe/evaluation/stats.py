"""Test-set metrics from predictions, in numpy, for point estimates and bootstrap replicates alike.

The metric names are those of `medpipe.evaluation.metrics` (acc, balanced_acc, precision, recall,
specificity, f1, f1_macro, auroc, f1_<class>, f1_score; mae, rmse, r2), and with every class
present the values are torchmetrics'. Two things differ on purpose:

- Every metric is a function of weighted counts and weighted sums. `weights` is None (each sample
  once; the values are python floats) or an (R, N) matrix of sample multiplicities, one row per
  bootstrap replicate; then each value is an (R,) array and all R replicates are computed at once.
- A class with zero (weighted) support is absent: its per-class values are nan and it is left out
  of every macro average (the mean over the classes present). torchmetrics counts such a class as
  0 in some of its averages (AUROC), which drags a macro figure down whenever a rare class is
  missing from a split or from a bootstrap replicate. A ratio whose denominator is zero for a
  class that IS present (precision when nothing is predicted as that class) is 0, as torchmetrics'
  zero_division=0. Specificity needs negatives: with none (every sample of that class) it is nan.

No torch here: these run on the arrays a prediction step wrote, in evaluation and bootstrap loops,
and in `compare`, which never imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

TASKS = ("binary", "multiclass", "multilabel")


def class_key(name: str) -> str:
    """A class name as a metric-key fragment: lower case, [a-z0-9_] only."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "class"


# -- helpers ---------------------------------------------------------------------------------------
def _weight_matrix(weights: np.ndarray | None, n: int) -> np.ndarray:
    """The (R, N) float weights; a single row of ones for None."""
    if weights is None:
        return np.ones((1, n))
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"weights must be an (R, {n}) array, got shape {w.shape}")
    if (w < 0).any():
        raise ValueError("weights must be non-negative")
    return w


def _out(values: dict[str, np.ndarray], single: bool) -> dict[str, float | np.ndarray]:
    """(1,) arrays as python floats when no weight matrix was given."""
    return {k: float(v[0]) for k, v in values.items()} if single else values


def _ratio(num: np.ndarray, den: np.ndarray, zero: float = 0.0) -> np.ndarray:
    """num / den elementwise, `zero` where den is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), zero)


def nanmean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over the finite entries along `axis`; nan (no warning) where there are none."""
    finite = np.isfinite(x)
    count = finite.sum(axis=axis)
    total = np.where(finite, x, 0.0).sum(axis=axis)
    return _ratio(total, count, zero=np.nan)


def weighted_auroc(score: np.ndarray, positive: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUROC of `score` for the boolean `positive` under each weight row of w (R, N): the weighted
    Mann-Whitney statistic, tied scores counted 1/2; nan where a row has no positive or no negative
    weight. One sort of the larger class, cumulative weights along it for all rows at once, looked
    up at the other class's scores (the lookup positions do not depend on the weights)."""
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    # cumulate the larger class: the cumsum is cheaper per element than the lookups
    flip = pos.size > neg.size
    big, small = (pos, neg) if flip else (neg, pos)
    order = big[np.argsort(score[big], kind="stable")]
    sorted_big, s_small = score[order], score[small]
    lo = np.searchsorted(sorted_big, s_small, side="left")  # big-class samples strictly below
    hi = np.searchsorted(sorted_big, s_small, side="right")  # ... below or tied
    cum = np.zeros((w.shape[0], order.size + 1))
    np.cumsum(w[:, order], axis=1, out=cum[:, 1:])
    below = cum[:, lo] if np.array_equal(lo, hi) else 0.5 * (cum[:, lo] + cum[:, hi])
    w_small = w[:, small]
    wins = np.einsum("rn,rn->r", w_small, below)  # small-class weight above big-class weight
    pairs = cum[:, -1] * w_small.sum(axis=1)
    if flip:  # the wins were the negatives'; the positives' are the rest of the pairs
        wins = pairs - wins
    return _ratio(wins, pairs, zero=np.nan)


def _per_class(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-class precision, recall, specificity and F1 from (R, C) counts; nan for absent classes."""
    support = tp + fn
    absent = support <= 0
    values = {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, support),
        "specificity": _ratio(tn, tn + fp, zero=np.nan),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }
    for v in values.values():
        v[absent] = np.nan
    return values


def _check_classes(task: str, classes: Sequence[str], k: int) -> list[str]:
    classes = list(classes)
    if len(classes) != k:
        raise ValueError(f"{task}: {len(classes)} class names for {k} classes")
    return classes


# -- classification --------------------------------------------------------------------------------
def classification_metrics(
    scores: np.ndarray,
    target: np.ndarray,
    task: str,
    classes: Sequence[str],
    threshold: float | np.ndarray = 0.5,
    score_classes: Sequence[str] = (),
    weights: np.ndarray | None = None,
) -> dict[str, float | np.ndarray]:
    """acc, balanced_acc, precision, recall, specificity, f1, f1_macro, auroc, f1_<class> (and
    f1_score, the mean F1 of `score_classes`, when given) of one sample or of R weighted replicates.

    scores: binary (N,) probability of class 1; multiclass (N, C) probabilities (argmax decides);
    multilabel (N, K) label probabilities. target: binary/multiclass int (N,), multilabel 0/1
    (N, K). threshold: a positive decision is score >= threshold (multilabel: a float or (K,)).
    weights: None, or (R, N) non-negative multiplicities (then every value is an (R,) array).
    Binary precision/recall/f1/auroc are the positive class's and specificity is the negative
    class's recall (nan only without negatives); otherwise they are macro averages over the
    classes present (one-vs-rest AUROC for multiclass).
    """
    if task not in TASKS:
        raise ValueError(f"unknown classification task '{task}' (one of {', '.join(TASKS)})")
    scores = np.asarray(scores, dtype=np.float64)
    target = np.asarray(target)
    n = len(target)
    if len(scores) != n:
        raise ValueError(f"{len(scores)} scores for {n} targets")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite (no nan or inf)")
    w = _weight_matrix(weights, n)
    total = w.sum(axis=1)

    if task == "binary":
        classes = _check_classes(task, classes, 2)
        if scores.ndim != 1:
            raise ValueError(f"binary scores must be (N,), got shape {scores.shape}")
        pos = target.astype(np.int64) == 1
        pred = scores >= float(threshold)
        tp = w @ (pred & pos).astype(np.float64)
        fp = w @ (pred & ~pos).astype(np.float64)
        fn = w @ (~pred & pos).astype(np.float64)
        tn = total - tp - fp - fn
        # class 0's counts are class 1's seen from the other side (its tp is class 1's tn, ...)
        counts = [np.stack(pair, axis=1) for pair in ((tn, tp), (fn, fp), (fp, fn), (tp, tn))]
        per = _per_class(*counts)
        out = {
            "acc": _ratio(tp + tn, total, zero=np.nan),
            "balanced_acc": nanmean(per["recall"]),
            "precision": per["precision"][:, 1],
            "recall": per["recall"][:, 1],
            # the negative class's recall: defined whenever negatives are, positives or not
            "specificity": per["recall"][:, 0],
            "f1": per["f1"][:, 1],
            "f1_macro": nanmean(per["f1"]),
            "auroc": weighted_auroc(scores, pos, w),
        }
    else:
        if scores.ndim != 2:
            raise ValueError(f"{task} scores must be (N, C), got shape {scores.shape}")
        k = scores.shape[1]
        classes = _check_classes(task, classes, k)
        if task == "multiclass":
            t = target.astype(np.int64)
            if t.ndim != 1 or (t.size and (t.min() < 0 or t.max() >= k)):
                raise ValueError(f"multiclass targets must be (N,) class indices in [0, {k})")
            truth = t[:, None] == np.arange(k)
            pred = scores.argmax(axis=1)[:, None] == np.arange(k)
        else:
            truth = target.astype(bool)
            if truth.shape != scores.shape:
                raise ValueError(f"multilabel targets must be {scores.shape}, got {truth.shape}")
            thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (k,))
            pred = scores >= thr
        tp = w @ (pred & truth).astype(np.float64)  # (R, C)
        support = w @ truth.astype(np.float64)
        fp = w @ pred.astype(np.float64) - tp
        fn = support - tp
        tn = total[:, None] - tp - fp - fn
        per = _per_class(tp, fp, fn, tn)
        auroc = np.stack([weighted_auroc(scores[:, c], truth[:, c], w) for c in range(k)], axis=1)
        macro = {name: nanmean(v) for name, v in per.items()}
        if task == "multiclass":
            acc = _ratio(tp.sum(axis=1), total, zero=np.nan)
            balanced = macro["recall"]
        else:
            acc = _ratio((tp + tn).sum(axis=1), k * total, zero=np.nan)
            balanced = (macro["recall"] + macro["specificity"]) / 2
        out = {
            "acc": acc,
            "balanced_acc": balanced,
            **{name: macro[name] for name in ("precision", "recall", "specificity", "f1")},
            "f1_macro": macro["f1"],
            "auroc": nanmean(auroc),
        }
    f1 = per["f1"]
    if score_classes:
        index = [classes.index(c) for c in score_classes]
        out["f1_score"] = nanmean(f1[:, index])
    for c, name in enumerate(classes):
        out[f"f1_{class_key(name)}"] = f1[:, c]
    return _out(out, weights is None)


def absent_classes(target: np.ndarray, task: str, classes: Sequence[str]) -> list[str]:
    """The classes (multilabel: labels) without a single sample (positive) in `target`."""
    target = np.asarray(target)
    if task == "multilabel":
        counts = target.astype(bool).sum(axis=0)
    elif task in ("binary", "multiclass"):
        counts = np.bincount(target.astype(np.int64).ravel(), minlength=len(classes))
    else:
        raise ValueError(f"unknown classification task '{task}' (one of {', '.join(TASKS)})")
    return [name for name, c in zip(classes, counts, strict=False) if c == 0]


# -- regression ------------------------------------------------------------------------------------
def regression_metrics(
    pred: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, float | np.ndarray]:
    """mae, rmse and r2 (1 - SS_res / SS_tot, nan when the targets do not vary) of (N,) values,
    for one sample or for each row of an (R, N) weight matrix."""
    pred = np.asarray(pred, dtype=np.float64).ravel()
    target = np.asarray(target, dtype=np.float64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"{pred.size} predictions for {target.size} targets")
    w = _weight_matrix(weights, target.size)
    sw = w.sum(axis=1)
    err = pred - target
    ss_res = w @ err**2
    mse = _ratio(ss_res, sw, zero=np.nan)
    # SS_tot from centred targets: sum w t^2 - (sum w t)^2 / sum w loses little precision then
    tc = target - target.mean() if target.size else target
    sum_t, sum_t2 = w @ tc, w @ tc**2
    ss_tot = sum_t2 - _ratio(sum_t**2, sw)
    # a replicate of identical targets leaves rounding residue, not variance
    constant = ss_tot <= 1e-12 * np.maximum(sum_t2, np.finfo(float).tiny)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(constant | (sw <= 0), np.nan, 1 - ss_res / np.where(constant, 1.0, ss_tot))
    out = {"mae": _ratio(w @ np.abs(err), sw, zero=np.nan), "rmse": np.sqrt(mse), "r2": r2}
    return _out(out, weights is None)
