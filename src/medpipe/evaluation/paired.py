"""Paired comparison of two models evaluated on the SAME test rows.

- `delong_test`: the difference of two binary AUROCs with DeLong's variance of correlated AUROCs
  (DeLong, DeLong & Clarke-Pearson 1988), computed with the fast midrank algorithm of Sun & Xu
  (2014, IEEE Signal Processing Letters 21(11)): O(N log N) instead of O(n_pos * n_neg).
- `mcnemar_exact`: the difference of two accuracies, exact binomial test on the discordant rows.
- `paired_bootstrap`: any metric difference (multiclass macro AUROC, F1, regression errors, ...)
  over the same resampled rows for both models. DeLong covers binary AUROC only; for multiclass
  (macro one-vs-rest) AUROC, use the paired bootstrap with `classification_metrics`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.stats import binomtest, norm

from medpipe.evaluation.bootstrap import (
    DEFAULT_SETTINGS,
    MIN_FINITE,
    BootstrapSettings,
    MetricFn,
    interval,
    replicates,
)


def midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks along the last axis, tied values sharing the mean of their ranks."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    out = np.empty_like(x)
    n = x.shape[-1]
    order = np.argsort(x, axis=-1, kind="stable")
    for row in range(x.shape[0]):
        s = x[row, order[row]]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        ends = np.r_[starts[1:], n]  # a tie group holds ranks starts+1 .. ends
        out[row, order[row]] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    return out


def _delong_components(scores: np.ndarray, positive: np.ndarray):
    """AUROCs (k,) and the placement values V10 (k, m) of the positives and V01 (k, n) of the
    negatives of k score rows (Sun & Xu 2014, eqs. for the midrank form)."""
    x, y = scores[:, positive], scores[:, ~positive]
    m, n = x.shape[1], y.shape[1]
    tx, ty, tz = midranks(x), midranks(y), midranks(np.concatenate([x, y], axis=1))
    auc = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n  # share of negatives below each positive (ties 1/2)
    v01 = 1.0 - (tz[:, m:] - ty) / m  # share of positives above each negative
    return auc, v10, v01


def delong_test(
    scores_a: np.ndarray, scores_b: np.ndarray, target: np.ndarray, level: float = 0.95
) -> dict[str, float]:
    """auroc_a, auroc_b, diff (a - b), its standard error se, the normal-approximation interval
    ci_low/ci_high at `level` and the two-sided p_value, for two models' binary scores."""
    target = np.asarray(target).ravel()
    positive = target.astype(np.int64) == 1
    scores = np.stack([np.asarray(s, dtype=np.float64).ravel() for s in (scores_a, scores_b)])
    if scores.shape[1] != target.size:
        raise ValueError(f"{scores.shape[1]} scores for {target.size} targets")
    if not set(np.unique(target)) <= {0, 1}:
        raise ValueError("delong_test needs binary (0/1) targets")
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        raise ValueError(f"delong_test needs two positives and two negatives (got {m} and {n})")
    auc, v10, v01 = _delong_components(scores, positive)
    # var(a - b) = c' S c with c = (1, -1), S = S10 / m + S01 / n: the variance of the
    # difference of placement values, which is exactly 0 for identical models
    var = np.var(v10[0] - v10[1], ddof=1) / m + np.var(v01[0] - v01[1], ddof=1) / n
    se = float(np.sqrt(max(var, 0.0)))
    diff = float(auc[0] - auc[1])
    half = float(norm.ppf(0.5 + level / 2)) * se
    # se = 0: no variation in the paired difference; p = 1 for no difference, else 0
    z = abs(diff) / se if se > 0 else (0.0 if diff == 0 else np.inf)
    p = min(1.0, float(2 * norm.sf(z)))
    return {
        "auroc_a": float(auc[0]),
        "auroc_b": float(auc[1]),
        "diff": diff,
        "se": se,
        "ci_low": diff - half,
        "ci_high": diff + half,
        "p_value": p,
    }


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """b (a right, b wrong), c (a wrong, b right), acc_a, acc_b, diff and the exact two-sided
    p_value of the binomial test of b against b + c (1 when the models never disagree)."""
    a = np.asarray(correct_a, dtype=bool).ravel()
    b_ = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b_.shape:
        raise ValueError(f"{a.size} decisions of model a against {b_.size} of model b")
    b, c = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
    p = float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    acc_a, acc_b = float(a.mean()), float(b_.mean())
    return {"b": b, "c": c, "acc_a": acc_a, "acc_b": acc_b, "diff": acc_a - acc_b, "p_value": p}


def paired_bootstrap(
    metric_a: MetricFn,
    metric_b: MetricFn,
    n_samples: int,
    strata: np.ndarray | None,
    settings: BootstrapSettings = DEFAULT_SETTINGS,
) -> dict[str, dict[str, float]]:
    """For each metric both functions return: the difference a - b (diff), its percentile interval
    (ci_low, ci_high; percentile whatever settings.method says) and two-sided bootstrap p_value
    (2 x the smaller share of replicate differences <= 0 or >= 0, at most 1), all over the SAME
    resampled rows; a, b (point values) and dropped (replicates where either was nan).

    The metric functions take weights as those of `medpipe.evaluation.stats` do (None: the
    point estimate; (R, N): one value per replicate)."""
    point_a, point_b = metric_a(None), metric_b(None)
    reps_a, reps_b = replicates([metric_a, metric_b], n_samples, strata, settings)
    percentile = replace(settings, method="percentile")
    out = {}
    for name in (k for k in reps_a if k in reps_b):
        pa, pb = float(point_a[name]), float(point_b[name])
        d = reps_a[name] - reps_b[name]
        d = d[np.isfinite(d)]
        low, high = interval(d, pa - pb, percentile)
        if d.size >= MIN_FINITE:
            p = min(1.0, 2.0 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
        else:
            p = np.nan
        out[name] = {
            "a": pa,
            "b": pb,
            "diff": pa - pb,
            "ci_low": low,
            "ci_high": high,
            "p_value": p,
            "dropped": settings.n - int(d.size),
        }
    return out
