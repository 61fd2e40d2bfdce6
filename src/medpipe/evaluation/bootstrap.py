"""Bootstrap confidence intervals for test-set metrics.

The test set is resampled with replacement as a whole, stratified by class where there are classes
(each class resampled to its own size, so every replicate has the test set's class counts and a
rare class never drops out). A replicate is a row of sample multiplicities; the metric functions
of `medpipe.evaluation.stats` take an (R, N) matrix of them and compute R replicates in one pass,
so the replicates are drawn and evaluated in chunks that bound the memory.

Intervals: percentile, or BCa (bias-corrected and accelerated; Efron 1987): the bias correction
from the share of replicates below the point estimate (replicates equal to it count one half, as
discrete metrics such as accuracy often tie), the acceleration from a jackknife with the same
metric function (leave-one-out up to 1000 samples, delete-a-group with 1000 random groups above).
A replicate where a metric is undefined (nan: AUROC of a replicate without negatives, ...) is
dropped for that metric; `Intervals.dropped` counts them, and a metric with fewer than
`MIN_FINITE` finite replicates gets (nan, nan).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import norm

from medpipe.evaluation.stats import classification_metrics, regression_metrics

MIN_FINITE = 10  # finite replicates below which an interval is not given
MAX_JACKKNIFE = 1000  # leave-one-out rows up to this many samples, groups of samples above
CHUNK_ELEMENTS = 1 << 22  # replicates per chunk x samples: ~32 MiB per float matrix

MetricFn = Callable[[np.ndarray | None], dict[str, float | np.ndarray]]


@dataclass(frozen=True)
class BootstrapSettings:
    """How many replicates, which interval, its level and the seed of the resampling."""

    n: int = 2000
    method: Literal["percentile", "bca"] = "percentile"
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"bootstrap n must be >= 1, got {self.n}")
        if self.method not in ("percentile", "bca"):
            raise ValueError(f"bootstrap method must be percentile or bca, got '{self.method}'")
        if not 0 < self.level < 1:
            raise ValueError(f"bootstrap level must be in (0, 1), got {self.level}")


DEFAULT_SETTINGS = BootstrapSettings()


class Intervals(dict):
    """{metric: (low, high)}, with what went into them: the point estimates, the replicates
    dropped per metric because the metric was undefined there, the method, level and replicates."""

    def __init__(
        self,
        intervals: dict[str, tuple[float, float]],
        point: dict[str, float],
        dropped: dict[str, int],
        settings: BootstrapSettings,
    ):
        super().__init__(intervals)
        self.point, self.dropped, self.settings = point, dropped, settings


def strata_of(target: np.ndarray, task: str) -> np.ndarray | None:
    """The resampling strata of a test set: the class index for binary and multiclass targets;
    None (unstratified) for multilabel targets and regression."""
    if task in ("binary", "multiclass"):
        return np.asarray(target).astype(np.int64).ravel()
    if task in ("multilabel", "regression"):
        return None
    raise ValueError(f"unknown task '{task}'")


def resample_weights(
    strata: np.ndarray | None, n_samples: int, n_replicates: int, rng: np.random.Generator
) -> np.ndarray:
    """(R, N) multiplicities of R bootstrap replicates: each stratum (all N samples when strata is
    None) resampled with replacement to its own size, so per-stratum totals are fixed."""
    if strata is None:
        groups = [np.arange(n_samples)]
    else:
        strata = np.asarray(strata).ravel()
        if strata.size != n_samples:
            raise ValueError(f"{strata.size} strata for {n_samples} samples")
        _, inverse = np.unique(strata, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)
    # draw indices within each stratum (a uniform multinomial per stratum), then count them
    picks = np.empty((n_replicates, n_samples), dtype=np.int64)
    col = 0
    for members in groups:
        m = members.size
        picks[:, col : col + m] = members[rng.integers(0, m, size=(n_replicates, m))]
        col += m
    picks += (np.arange(n_replicates) * n_samples)[:, None]
    counts = np.bincount(picks.ravel(), minlength=n_replicates * n_samples)
    return counts.reshape(n_replicates, n_samples).astype(np.float64)


def default_chunk(n_samples: int) -> int:
    """Replicates per chunk: 250, fewer for large test sets."""
    return int(min(250, max(1, CHUNK_ELEMENTS // max(n_samples, 1))))


def _as_rows(values: dict[str, float | np.ndarray], rows: int) -> dict[str, np.ndarray]:
    return {k: np.broadcast_to(np.asarray(v, dtype=np.float64), (rows,)) for k, v in values.items()}


def replicates(
    metric_fns: Sequence[MetricFn],
    n_samples: int,
    strata: np.ndarray | None,
    settings: BootstrapSettings,
    chunk: int | None = None,
) -> list[dict[str, np.ndarray]]:
    """Each function's metrics over the same `settings.n` replicates: {name: (R,) array} per
    function. The weights depend on the seed, the strata and the chunk size."""
    rng = np.random.default_rng(settings.seed)
    chunk = chunk or default_chunk(n_samples)
    parts: list[dict[str, list[np.ndarray]]] = [{} for _ in metric_fns]
    done = 0
    while done < settings.n:
        r = min(chunk, settings.n - done)
        w = resample_weights(strata, n_samples, r, rng)
        for fn, acc in zip(metric_fns, parts, strict=True):
            for k, v in _as_rows(fn(w), r).items():
                acc.setdefault(k, []).append(v)
        done += r
    return [{k: np.concatenate(v) for k, v in acc.items()} for acc in parts]


def jackknife(
    metric_fn: MetricFn, n_samples: int, chunk: int | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Leave-one-out values of each metric ({name: (G,) array}); above MAX_JACKKNIFE samples,
    delete-a-group values over MAX_JACKKNIFE random groups of (nearly) equal size."""
    if n_samples <= MAX_JACKKNIFE:
        group = np.arange(n_samples)
    else:
        # random groups: the test set may be sorted by class or by source
        perm = np.random.default_rng(seed).permutation(n_samples)
        group = np.empty(n_samples, dtype=np.int64)
        group[perm] = np.arange(n_samples) % MAX_JACKKNIFE
    n_groups = int(group.max()) + 1 if n_samples else 0
    chunk = chunk or default_chunk(n_samples)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_groups, chunk):
        ids = np.arange(start, min(start + chunk, n_groups))
        w = (group[None, :] != ids[:, None]).astype(np.float64)
        for k, v in _as_rows(metric_fn(w), ids.size).items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _acceleration(jack: np.ndarray) -> float:
    """BCa acceleration from jackknife values: skewness of the influence values / 6."""
    jack = jack[np.isfinite(jack)]
    if jack.size < 3:
        return 0.0
    d = jack.mean() - jack
    den = 6.0 * np.sum(d**2) ** 1.5
    return float(np.sum(d**3) / den) if den > 0 else 0.0


def interval(
    reps: np.ndarray,
    point: float,
    settings: BootstrapSettings,
    jack: np.ndarray | None = None,
) -> tuple[float, float]:
    """The interval from one metric's replicates (nan ones already removed or not)."""
    reps = reps[np.isfinite(reps)]
    if reps.size < MIN_FINITE or not np.isfinite(point):
        return (np.nan, np.nan)
    alpha = 1.0 - settings.level
    z = norm.ppf([alpha / 2, 1 - alpha / 2])
    if settings.method == "percentile":
        q = norm.cdf(z)
    else:
        # ties with the point estimate count one half: discrete metrics (accuracy) often tie
        below = (np.sum(reps < point) + 0.5 * np.sum(reps == point)) / reps.size
        if not 0 < below < 1:
            return (np.nan, np.nan)  # the point estimate lies outside every replicate
        z0 = norm.ppf(below)
        a = 0.0 if jack is None else _acceleration(jack)
        with np.errstate(invalid="ignore", divide="ignore"):
            q = norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
        if not np.all(np.isfinite(q)):
            return (np.nan, np.nan)
    low, high = np.quantile(reps, np.clip(q, 0.0, 1.0))
    return (float(low), float(high))


def bootstrap_ci(
    metric_fn: MetricFn,
    n_samples: int,
    strata: np.ndarray | None,
    settings: BootstrapSettings = DEFAULT_SETTINGS,
    chunk: int | None = None,
) -> Intervals:
    """{metric: (low, high)} for every metric `metric_fn` returns; metric_fn(None) is the point
    estimate and metric_fn(w) with w (R, N) the replicates'. Same settings, same intervals."""
    point = {k: float(v) for k, v in metric_fn(None).items()}
    (reps,) = replicates([metric_fn], n_samples, strata, settings, chunk)
    jack = jackknife(metric_fn, n_samples, chunk, settings.seed) if settings.method == "bca" else {}
    out, dropped = {}, {}
    for k, v in reps.items():
        dropped[k] = int(np.sum(~np.isfinite(v)))
        out[k] = interval(v, point.get(k, np.nan), settings, jack.get(k))
    return Intervals(out, point, dropped, settings)


def classification_cis(
    scores: np.ndarray,
    target: np.ndarray,
    task: str,
    classes: Sequence[str],
    threshold: float | np.ndarray = 0.5,
    score_classes: Sequence[str] = (),
    settings: BootstrapSettings = DEFAULT_SETTINGS,
) -> Intervals:
    """Intervals of `classification_metrics`, resampling stratified by class (binary and
    multiclass; multilabel unstratified)."""
    scores, target = np.asarray(scores), np.asarray(target)

    def metric_fn(w: np.ndarray | None) -> dict[str, float | np.ndarray]:
        return classification_metrics(
            scores, target, task, classes, threshold, score_classes, weights=w
        )

    return bootstrap_ci(metric_fn, len(target), strata_of(target, task), settings)


def regression_cis(
    pred: np.ndarray, target: np.ndarray, settings: BootstrapSettings = DEFAULT_SETTINGS
) -> Intervals:
    """Intervals of mae, rmse and r2 (unstratified resampling)."""
    pred, target = np.asarray(pred), np.asarray(target)
    return bootstrap_ci(
        lambda w: regression_metrics(pred, target, weights=w), target.size, None, settings
    )
