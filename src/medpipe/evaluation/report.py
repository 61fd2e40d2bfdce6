"""Test-set figures and the per-class report, from predicted probabilities and targets.

Predicted labels come from a decision threshold (positive when probability >= threshold): a float
for binary tasks, a float or a (K,) array (one per label) for multilabel tasks; multiclass tasks
use the argmax and ignore it. The threshold is the operating point chosen on the validation split
(`medpipe.evaluation.operating_point`); 0.5 by default. ROC and PR figures mark it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

Threshold = float | Sequence[float] | np.ndarray | None


def _threshold(threshold: Threshold, task: str, n: int) -> np.ndarray | float | None:
    """The threshold as used: None (multiclass), a float (binary) or (n,) floats (multilabel)."""
    if task == "multiclass":
        return None
    if threshold is None:  # choose_thresholds gives None for multiclass; 0.5 elsewhere
        threshold = 0.5
    t = np.asarray(threshold, np.float64)
    if task == "binary":
        if t.size != 1:
            raise ValueError(f"a binary task takes one threshold, got {t.size}")
        return float(t.reshape(()))
    if t.ndim == 0:
        return np.full(n, float(t))
    if t.shape != (n,):
        raise ValueError(f"multilabel thresholds must be one float or ({n},), got {t.shape}")
    return t


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def predicted_labels(probs: np.ndarray, task: str, threshold: Threshold = 0.5) -> np.ndarray:
    """Binary: (N,) 0/1, probs >= threshold; multilabel: (N, K) 0/1 per label's threshold;
    multiclass: the argmax (threshold ignored)."""
    if task == "multiclass":
        return probs.argmax(1)
    n = probs.shape[1] if task == "multilabel" else 1
    return (probs >= _threshold(threshold, task, n)).astype(np.int64)


def _threshold_json(threshold: Threshold, task: str, n: int) -> float | list[float] | None:
    t = _threshold(threshold, task, n)
    return t.tolist() if isinstance(t, np.ndarray) else t


def _fmt_threshold(t: float) -> str:
    # two decimals as a rule, but a tiny threshold (e.g. 0.004) must not read as 0.00
    return f"{t:.2f}" if t >= 0.01 or t == 0 else f"{t:.2g}"


def operating_point_marker(
    y: np.ndarray, score: np.ndarray, threshold: float
) -> tuple[float, float]:
    """(fpr, tpr) of `score >= threshold` against the binary target y: the ROC operating point."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(score) >= threshold
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    tpr = (pred & y).sum() / n_pos if n_pos else float("nan")
    fpr = (pred & ~y).sum() / n_neg if n_neg else float("nan")
    return float(fpr), float(tpr)


def pr_marker(y: np.ndarray, score: np.ndarray, threshold: float) -> tuple[float, float]:
    """(recall, precision) of `score >= threshold`; precision is NaN when nothing is positive."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(score) >= threshold
    tp, n_pred, n_pos = int((pred & y).sum()), int(pred.sum()), int(y.sum())
    recall = tp / n_pos if n_pos else float("nan")
    precision = tp / n_pred if n_pred else float("nan")
    return float(recall), float(precision)


def _curve_thresholds(task: str, threshold: Threshold, n: int) -> list[float | None]:
    """The threshold of each one-vs-rest curve: None where none applies (multiclass)."""
    t = _threshold(threshold, task, n)
    if task == "binary":
        return [t]
    if task == "multilabel":
        return list(t)
    return [None] * n


def _one_vs_rest(probs: np.ndarray, target: np.ndarray, task: str, n: int):
    """(label index, binary target, score) per class curve."""
    if task == "binary":
        return [(1, target, probs)]
    if task == "multiclass":
        return [(k, (target == k).astype(int), probs[:, k]) for k in range(n)]
    return [(k, target[:, k].astype(int), probs[:, k]) for k in range(n)]


def plot_confusion_matrix(
    probs: np.ndarray,
    target: np.ndarray,
    task: str,
    classes: list[str],
    path: Path,
    threshold: Threshold = 0.5,
) -> None:
    pred = predicted_labels(probs, task, threshold)
    if task == "multilabel":
        n = len(classes)
        fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.6), squeeze=False)
        per_label = _threshold(threshold, task, n)
        for k, ax in enumerate(axes[0]):
            cm = confusion_matrix(target[:, k], pred[:, k], labels=[0, 1])
            title = f"{classes[k]} (>= {_fmt_threshold(per_label[k])})"
            _draw_matrix(ax, cm, ["neg", "pos"], title)
    else:
        cm = confusion_matrix(target, pred, labels=list(range(len(classes))))
        size = max(4.0, 0.6 * len(classes) + 2)
        fig, ax = plt.subplots(figsize=(size, size))
        title = "Confusion matrix (test)"
        if task == "binary":
            title += f"\nthreshold {_fmt_threshold(_threshold(threshold, task, 1))}"
        _draw_matrix(ax, cm, classes, title)
    _save(fig, path)


def _draw_matrix(ax, cm: np.ndarray, labels: list[str], title: str) -> None:
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    low, peak = (cm.min(), cm.max()) if cm.size else (0, 0)
    # white text on the dark half of the colour scale only (imshow spans min..max; a uniform
    # matrix is drawn in its palest colour)
    for (i, j), v in np.ndenumerate(cm):
        dark = v - low > (peak - low) / 2
        ax.text(j, i, str(v), ha="center", va="center", color="white" if dark else "black")


def plot_roc(
    probs: np.ndarray,
    target: np.ndarray,
    task: str,
    classes: list[str],
    path: Path,
    threshold: Threshold = 0.5,
) -> None:
    """ROC per class (one-vs-rest), the operating point marked on each binary/multilabel curve."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for k, y, score, t in _curves(probs, target, task, classes, threshold):
        fpr, tpr, _ = roc_curve(y, score)
        (line,) = ax.plot(fpr, tpr, label=f"{classes[k]} (AUC {roc_auc_score(y, score):.3f})")
        if t is not None:
            x, yy = operating_point_marker(y, score, t)
            _mark(ax, x, yy, line, "" if task == "binary" else classes[k], t)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title("ROC (test)")
    ax.legend(loc="lower right", fontsize="small")
    _save(fig, path)


def _curves(probs, target, task: str, classes: list[str], threshold):
    """(class index, binary target, score, its threshold or None) of every one-vs-rest curve
    whose split holds both sides."""
    curves = _one_vs_rest(probs, target, task, len(classes))
    for (k, y, score), t in zip(
        curves, _curve_thresholds(task, threshold, len(classes)), strict=True
    ):
        if len(np.unique(y)) == 2:
            yield k, y, score, t


def _mark(ax, x: float, y: float, line, name: str, t: float) -> None:
    """The operating point on a curve, in the curve's colour, named in the legend."""
    label = f"{name + ': ' if name else ''}threshold {_fmt_threshold(t)}"
    ax.plot([x], [y], "o", color=line.get_color(), mec="black", ms=7, label=label)


def plot_pr(
    probs: np.ndarray,
    target: np.ndarray,
    task: str,
    classes: list[str],
    path: Path,
    threshold: Threshold = 0.5,
) -> None:
    """Precision-recall per class (one-vs-rest), AP in the legend, the operating point marked on
    each binary/multilabel curve."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for k, y, score, t in _curves(probs, target, task, classes, threshold):
        precision, recall, _ = precision_recall_curve(y, score)
        ap = average_precision_score(y, score)
        (line,) = ax.plot(recall, precision, label=f"{classes[k]} (AP {ap:.3f})")
        if t is not None:
            r, p = pr_marker(y, score, t)
            if np.isfinite(p):  # nothing predicted positive: no precision to mark
                _mark(ax, r, p, line, "" if task == "binary" else classes[k], t)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (positive predictive value)")
    ax.set_title("Precision-recall (test)")
    ax.legend(loc="lower left", fontsize="small")
    _save(fig, path)


ABSENT_NOTE = "absent from this split: left out of the macro averages"
RATES = ("precision", "recall", "specificity", "f1", "auroc")


def per_class_report(
    probs: np.ndarray,
    target: np.ndarray,
    task: str,
    classes: list[str],
    threshold: Threshold = 0.5,
) -> dict[str, Any]:
    """Per class: support, precision, recall (sensitivity), specificity, F1 and one-vs-rest AUROC,
    at `threshold`; plus their macro averages over the classes present in the split.

    A class with no sample in the split gets None for these (not 0: nothing was measured) and a
    note, and is left out of the macro averages.
    """
    pred = predicted_labels(probs, task, threshold)
    rows = {}
    for k, name in enumerate(classes):
        if task == "multilabel":
            t, p, s = target[:, k].astype(int), pred[:, k], probs[:, k]
        else:
            t, p = (target == k).astype(int), (pred == k).astype(int)
            s = (probs if k == 1 else 1 - probs) if task == "binary" else probs[:, k]
        tp, fp = int(((p == 1) & (t == 1)).sum()), int(((p == 1) & (t == 0)).sum())
        fn, tn = int(((p == 0) & (t == 1)).sum()), int(((p == 0) & (t == 0)).sum())
        if tp + fn == 0:
            rows[name] = {"support": 0, **dict.fromkeys(RATES), "note": ABSENT_NOTE}
            continue
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn)
        rows[name] = {
            "support": int(t.sum()),
            "precision": precision,
            "recall": recall,
            "specificity": tn / (tn + fp) if tn + fp else 0.0,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "auroc": float(roc_auc_score(t, s)) if len(np.unique(t)) == 2 else None,
        }
    present = [r for r in rows.values() if r["support"] > 0]
    macro = {}
    for key in RATES:
        values = [r[key] for r in present if r[key] is not None]
        macro[key] = float(np.mean(values)) if values else None
    return {
        "task": task,
        "n": int(len(target)),
        "threshold": _threshold_json(threshold, task, len(classes)),
        "classes": rows,
        "macro": macro,
    }


def _cell(value: float | None, width: int) -> str:
    return f"{value:>{width}.4f}" if value is not None else f"{'n/a':>{width}}"


def report_text(report: dict[str, Any]) -> str:
    """The per-class report as a fixed-width table (n/a where a value is undefined)."""
    head = f"{'class':<28}{'support':>9}{'precision':>11}{'recall':>9}{'specif.':>9}{'f1':>8}{'auroc':>8}"
    lines = []
    threshold = report.get("threshold")
    if threshold is not None:
        shown = (
            ", ".join(f"{t:.4g}" for t in threshold)
            if isinstance(threshold, list)
            else f"{threshold:.4g}"
        )
        lines.append(f"threshold: {shown} (positive when probability >= threshold)")
    elif report.get("task") == "multiclass":
        lines.append("prediction: argmax over classes")
    lines += [head, "-" * len(head)]

    def row(name: str, support: str, r: dict[str, Any]) -> str:
        return (
            f"{name[:27]:<28}{support:>9}{_cell(r['precision'], 11)}{_cell(r['recall'], 9)}"
            f"{_cell(r['specificity'], 9)}{_cell(r['f1'], 8)}{_cell(r['auroc'], 8)}"
        )

    for name, r in report["classes"].items():
        line = row(name, str(r["support"]), r)
        lines.append(f"{line}  ({r['note']})" if r.get("note") else line)
    if "macro" in report:
        lines += ["-" * len(head), row("macro average", "", report["macro"])]
    return "\n".join(lines) + "\n"


def _curve_inputs(
    probs: np.ndarray, target: np.ndarray, task: str
) -> tuple[np.ndarray, np.ndarray]:
    """One binary target and score per curve: the positive class, else the micro-average."""
    if task == "binary":
        return target.astype(int), probs
    n = probs.shape[1]
    onehot = np.eye(n, dtype=int)[target] if task == "multiclass" else target.astype(int)
    return onehot.ravel(), probs.ravel()


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def write_plot_data(
    probs: np.ndarray,
    target: np.ndarray,
    task: str,
    classes: list[str],
    plots: Path,
    threshold: Threshold = 0.5,
) -> dict[str, Path]:
    """Write the tables DVC plots read: plots/roc.csv (fpr, tpr), plots/pr.csv (recall, precision)
    and plots/confusion.csv (actual, predicted: one row per test sample, for the `confusion` template).

    ROC and PR are those of the positive class (binary) or micro-averaged over the classes
    (multiclass, multilabel); a multilabel sample gives one confusion row per label. Predicted
    labels are taken at `threshold`.
    """
    files = {
        "roc_data": plots / "roc.csv",
        "pr_data": plots / "pr.csv",
        "confusion_data": plots / "confusion.csv",
    }
    y, score = _curve_inputs(probs, target, task)
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, score)
        precision, recall, _ = precision_recall_curve(y, score)
    else:  # a single class in the test split: no curve, only the header
        fpr = tpr = precision = recall = np.array([])
    _write_csv(files["roc_data"], ["fpr", "tpr"], zip(fpr.tolist(), tpr.tolist(), strict=True))
    _write_csv(
        files["pr_data"],
        ["recall", "precision"],
        zip(recall.tolist(), precision.tolist(), strict=True),
    )
    pred = predicted_labels(probs, task, threshold)
    if task == "multilabel":
        pairs = [
            (f"{name}: {'yes' if t else 'no'}", f"{name}: {'yes' if p else 'no'}")
            for t_row, p_row in zip(target.astype(int), pred, strict=True)
            for name, t, p in zip(classes, t_row, p_row, strict=True)
        ]
    else:
        pairs = [(classes[t], classes[p]) for t, p in zip(target.astype(int), pred, strict=True)]
    _write_csv(files["confusion_data"], ["actual", "predicted"], pairs)
    return files


def write_test_report(
    probs: np.ndarray,
    target: np.ndarray,
    task: str,
    classes: list[str],
    out_dir: Path,
    threshold: Threshold = 0.5,
) -> dict[str, Path]:
    """Write plots/confusion_matrix.png, plots/roc.png, plots/pr.png, per_class_report.{json,txt},
    and the DVC plot tables plots/{roc,pr,confusion}.csv, with predicted labels at `threshold`.
    Returns the figures and the report (not the tables).
    """
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    files = {
        "confusion_matrix": plots / "confusion_matrix.png",
        "roc": plots / "roc.png",
        "pr": plots / "pr.png",
        "report_json": out_dir / "per_class_report.json",
        "report_txt": out_dir / "per_class_report.txt",
    }
    plot_confusion_matrix(probs, target, task, classes, files["confusion_matrix"], threshold)
    plot_roc(probs, target, task, classes, files["roc"], threshold)
    plot_pr(probs, target, task, classes, files["pr"], threshold)
    report = per_class_report(probs, target, task, classes, threshold)
    files["report_json"].write_text(json.dumps(report, indent=2))
    files["report_txt"].write_text(report_text(report))
    write_plot_data(probs, target, task, classes, plots, threshold)
    return files


def write_regression_report(
    pred: np.ndarray, target: np.ndarray, name: str, out_dir: Path
) -> dict[str, Path]:
    """Write plots/pred_vs_true.png (scatter with the identity line), plots/pred_vs_true.csv and
    regression_report.json (n, mae, rmse, r2, bias, the largest errors' indices)."""
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    files = {
        "pred_vs_true": plots / "pred_vs_true.png",
        "report_json": out_dir / "regression_report.json",
    }
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    err = pred - target
    ss_tot = float(((target - target.mean()) ** 2).sum())
    report = {
        "target": name,
        "n": int(len(target)),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else None,
        "bias": float(err.mean()),
        "largest_errors": [
            {"index": int(i), "true": float(target[i]), "predicted": float(pred[i])}
            for i in np.argsort(-np.abs(err))[:10]
        ],
    }
    files["report_json"].write_text(json.dumps(report, indent=2))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(target, pred, s=8, alpha=0.6)
    lo, hi = float(min(target.min(), pred.min())), float(max(target.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel(f"true {name}")
    ax.set_ylabel(f"predicted {name}")
    ax.set_title(f"Test: MAE {report['mae']:.3g}, RMSE {report['rmse']:.3g}")
    _save(fig, files["pred_vs_true"])
    _write_csv(
        plots / "pred_vs_true.csv",
        ["true", "predicted"],
        zip(target.tolist(), pred.tolist(), strict=True),
    )
    return files
