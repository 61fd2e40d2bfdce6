"""Probability calibration: ECE, Brier score, reliability diagrams and temperature scaling.

Conventions (shared with `report.py` and `operating_point.py`):

- probabilities: binary (N,) P(positive, class index 1); multiclass (N, C); multilabel (N, K);
- logits: binary (N,) or (N, 1) one logit (sigmoid) or (N, 2) two logits (softmax); multiclass
  (N, C); multilabel (N, K);
- targets: binary and multiclass int (N,); multilabel 0/1 (N, K).

ECE choice. Binary and multiclass use the *top-label* ECE of Guo et al. 2017 ("On calibration of
modern neural networks"): the confidence is the probability of the predicted label (for binary
max(p, 1 - p)) and the accuracy whether that label is right, so both tasks are scored the same way
and a binary model is not rewarded for being calibrated only on the positive class. Multilabel is
K independent binary problems, so its ECE is the mean over labels of each label's binary
(top-label) ECE; the reliability diagram of a multilabel task pools all (sample, label) entries.
Bins are equal-width over [0, 1]: bin i holds confidences in (i/B, (i+1)/B] (0 goes to bin 0).

Temperature scaling fits one T > 0 on the validation logits by minimising the NLL of
softmax(logits / T) (sigmoid for one-logit binary and multilabel); it changes confidence, never
the argmax, so accuracy and AUROC are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, logsumexp, softmax

TASKS = ("binary", "multiclass", "multilabel")
T_BOUNDS = (0.05, 20.0)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _binary_probs(probs: np.ndarray) -> np.ndarray:
    """P(positive) as (N,): accepts (N,), (N, 1) or the two-column (N, 2) form."""
    p = np.asarray(probs, np.float64)
    if p.ndim == 2 and p.shape[1] == 2:
        return p[:, 1]
    if p.ndim == 2 and p.shape[1] == 1:
        return p[:, 0]
    if p.ndim != 1:
        raise ValueError(f"binary probabilities must be (N,), got shape {p.shape}")
    return p


def _top_label(probs: np.ndarray, target: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of the predicted label, one entry per sample (per label entry for
    multilabel, flattened)."""
    _check_task(task)
    target = np.asarray(target)
    if task == "binary":
        p = _binary_probs(probs)
        pred = (p >= 0.5).astype(np.int64)
        return np.maximum(p, 1.0 - p), (pred == target.astype(np.int64)).astype(np.float64)
    p = np.asarray(probs, np.float64)
    if task == "multiclass":
        return p.max(1), (p.argmax(1) == target.astype(np.int64)).astype(np.float64)
    pred = (p >= 0.5).astype(np.int64)
    correct = (pred == target.astype(np.int64)).astype(np.float64)
    return np.maximum(p, 1.0 - p).ravel(), correct.ravel()


@dataclass(frozen=True)
class ReliabilityBins:
    """Per equal-width bin: mean confidence, accuracy (NaN where the bin is empty) and count."""

    edges: np.ndarray  # (B + 1,)
    confidence: np.ndarray  # (B,)
    accuracy: np.ndarray  # (B,)
    count: np.ndarray  # (B,) int

    @property
    def ece(self) -> float:
        """Count-weighted mean |accuracy - confidence| over the non-empty bins."""
        n = self.count.sum()
        if n == 0:
            return float("nan")
        full = self.count > 0
        gap = np.abs(self.accuracy[full] - self.confidence[full])
        return float((self.count[full] * gap).sum() / n)


def _bin(confidence: np.ndarray, correct: np.ndarray, bins: int) -> ReliabilityBins:
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    # Right-closed bins (i/B, (i+1)/B], so a confidence of exactly 1 lands in the last bin.
    idx = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=confidence, minlength=bins) / count
        acc = np.bincount(idx, weights=correct, minlength=bins) / count
    return ReliabilityBins(np.linspace(0.0, 1.0, bins + 1), conf, acc, count)


def reliability_bins(
    probs: np.ndarray, target: np.ndarray, task: str, bins: int = 15
) -> ReliabilityBins:
    """Top-label reliability bins (multilabel: all label entries pooled)."""
    confidence, correct = _top_label(probs, target, task)
    return _bin(confidence, correct, bins)


def ece(probs: np.ndarray, target: np.ndarray, task: str, bins: int = 15) -> float:
    """Expected calibration error (top-label; multilabel: mean of the per-label binary ECEs)."""
    _check_task(task)
    if task == "multilabel":
        p, t = np.asarray(probs, np.float64), np.asarray(target)
        return float(np.mean([ece(p[:, k], t[:, k], "binary", bins) for k in range(p.shape[1])]))
    return reliability_bins(probs, target, task, bins).ece


def brier(probs: np.ndarray, target: np.ndarray, task: str) -> float:
    """Brier score: binary mean (p - y)^2; multiclass mean over samples of the summed squared
    error against the one-hot target (range [0, 2]); multilabel mean over all label entries."""
    _check_task(task)
    target = np.asarray(target)
    if task == "binary":
        return float(np.mean((_binary_probs(probs) - target.astype(np.float64)) ** 2))
    p = np.asarray(probs, np.float64)
    if task == "multiclass":
        onehot = np.eye(p.shape[1])[target.astype(np.int64)]
        return float(np.mean(((p - onehot) ** 2).sum(1)))
    return float(np.mean((p - target.astype(np.float64)) ** 2))


def _is_sigmoid(logits: np.ndarray, task: str) -> bool:
    """Whether the logits are read through a sigmoid (one-logit binary, multilabel)."""
    return task == "multilabel" or (task == "binary" and (logits.ndim == 1 or logits.shape[1] == 1))


def _nll(logits: np.ndarray, target: np.ndarray, task: str, t: float) -> float:
    """Mean negative log-likelihood of the targets under logits / t, computed stably."""
    z = logits / t
    if _is_sigmoid(logits, task):
        z = z.reshape(len(z), -1) if task == "multilabel" else z.reshape(-1)
        y = target.astype(np.float64).reshape(z.shape)
        # -log sigmoid(z) for y = 1 and -log(1 - sigmoid(z)) for y = 0, as log(1 + e^z) - y z
        return float(np.mean(np.logaddexp(0.0, z) - y * z))
    y = target.astype(np.int64)
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(z)), y]))


def fit_temperature(logits: np.ndarray, target: np.ndarray, task: str) -> float:
    """The temperature T in [0.05, 20] minimising the validation NLL of the scaled logits."""
    _check_task(task)
    logits = np.asarray(logits, np.float64)
    target = np.asarray(target)
    if len(logits) == 0:
        raise ValueError("fit_temperature needs at least one sample")
    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    # Optimising log T keeps T positive and makes the search scale-free (T = 0.5 and T = 2 are
    # equally far from 1).
    res = minimize_scalar(
        lambda log_t: _nll(logits, target, task, float(np.exp(log_t))),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(res.x))


def apply_temperature(logits: np.ndarray, temperature: float, task: str) -> np.ndarray:
    """Probabilities of logits / T in this module's convention (two-logit binary: P(class 1))."""
    _check_task(task)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, np.float64) / temperature
    if _is_sigmoid(z, task):
        return expit(z.reshape(-1) if task == "binary" else z)
    if task == "binary":  # two logits: softmax, P(class 1)
        return np.exp(log_softmax(z, axis=1)[:, 1])
    return softmax(z, axis=1)


def plot_reliability(
    probs_before: np.ndarray,
    target: np.ndarray,
    task: str,
    path: str | Path,
    probs_after: np.ndarray | None = None,
    bins: int = 15,
) -> Path:
    """Reliability diagram PNG: accuracy per confidence bin against the diagonal, bin counts below;
    with `probs_after`, the curve after temperature scaling too. ECEs are in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    curves = [("before", probs_before)]
    if probs_after is not None:
        curves = [("before scaling", probs_before), ("after temperature scaling", probs_after)]
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    width = 1.0 / bins
    for i, (name, probs) in enumerate(curves):
        rb = reliability_bins(probs, target, task, bins)
        value = ece(probs, target, task, bins)
        label = f"{name} (ECE {value:.3f})" if probs_after is not None else f"ECE {value:.3f}"
        full = rb.count > 0
        ax.plot(rb.confidence[full], rb.accuracy[full], "o-", color=f"C{i}", label=label)
        # Counts side by side per bin, so two curves' histograms do not hide each other.
        offset = (i - (len(curves) - 1) / 2) * width / len(curves)
        centres = rb.edges[:-1] + width / 2 + offset
        hist.bar(centres, rb.count, width=width / len(curves), color=f"C{i}", alpha=0.7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    what = "label entries" if task == "multilabel" else "samples"
    ax.set_title(f"Reliability ({task}, top-label)")
    ax.legend(loc="upper left", fontsize="small")
    hist.set_xlabel("confidence")
    hist.set_ylabel(f"{what} per bin")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
