"""Test-set figures and the per-class report, from predicted probabilities and targets."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)


def predicted_labels(probs: np.ndarray, task: str) -> np.ndarray:
    if task == "binary":
        return (probs >= 0.5).astype(np.int64)
    if task == "multiclass":
        return probs.argmax(1)
    return (probs >= 0.5).astype(np.int64)


def _one_vs_rest(probs: np.ndarray, target: np.ndarray, task: str, n: int):
    """(label index, binary target, score) per class curve."""
    if task == "binary":
        return [(1, target, probs)]
    if task == "multiclass":
        return [(k, (target == k).astype(int), probs[:, k]) for k in range(n)]
    return [(k, target[:, k].astype(int), probs[:, k]) for k in range(n)]


def plot_confusion_matrix(
    probs: np.ndarray, target: np.ndarray, task: str, classes: list[str], path: Path
) -> None:
    pred = predicted_labels(probs, task)
    if task == "multilabel":
        n = len(classes)
        fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.6), squeeze=False)
        for k, ax in enumerate(axes[0]):
            cm = confusion_matrix(target[:, k], pred[:, k], labels=[0, 1])
            _draw_matrix(ax, cm, ["neg", "pos"], classes[k])
    else:
        cm = confusion_matrix(target, pred, labels=list(range(len(classes))))
        size = max(4.0, 0.6 * len(classes) + 2)
        fig, ax = plt.subplots(figsize=(size, size))
        _draw_matrix(ax, cm, classes, "Confusion matrix (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _draw_matrix(ax, cm: np.ndarray, labels: list[str], title: str) -> None:
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = cm.max() if cm.size else 0
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > peak / 2 else "black")


def plot_roc(
    probs: np.ndarray, target: np.ndarray, task: str, classes: list[str], path: Path
) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    for k, y, score in _one_vs_rest(probs, target, task, len(classes)):
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, score)
        ax.plot(fpr, tpr, label=f"{classes[k]} (AUC {roc_auc_score(y, score):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title("ROC (test)")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def per_class_report(
    probs: np.ndarray, target: np.ndarray, task: str, classes: list[str]
) -> dict[str, Any]:
    """Per class: support, precision, recall (sensitivity), specificity, F1 and one-vs-rest AUROC."""
    pred = predicted_labels(probs, task)
    rows = {}
    for k, name in enumerate(classes):
        if task == "multilabel":
            t, p, s = target[:, k].astype(int), pred[:, k], probs[:, k]
        else:
            t, p = (target == k).astype(int), (pred == k).astype(int)
            s = (probs if k == 1 else 1 - probs) if task == "binary" else probs[:, k]
        tp, fp = int(((p == 1) & (t == 1)).sum()), int(((p == 1) & (t == 0)).sum())
        fn, tn = int(((p == 0) & (t == 1)).sum()), int(((p == 0) & (t == 0)).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        rows[name] = {
            "support": int(t.sum()),
            "precision": precision,
            "recall": recall,
            "specificity": tn / (tn + fp) if tn + fp else 0.0,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "auroc": float(roc_auc_score(t, s)) if len(np.unique(t)) == 2 else None,
        }
    return {"task": task, "n": int(len(target)), "classes": rows}


def report_text(report: dict[str, Any]) -> str:
    head = f"{'class':<28}{'support':>9}{'precision':>11}{'recall':>9}{'specif.':>9}{'f1':>8}{'auroc':>8}"
    lines = [head, "-" * len(head)]
    for name, r in report["classes"].items():
        auroc = f"{r['auroc']:.4f}" if r["auroc"] is not None else "   n/a"
        lines.append(
            f"{name[:27]:<28}{r['support']:>9}{r['precision']:>11.4f}{r['recall']:>9.4f}"
            f"{r['specificity']:>9.4f}{r['f1']:>8.4f}{auroc:>8}"
        )
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
    probs: np.ndarray, target: np.ndarray, task: str, classes: list[str], plots: Path
) -> dict[str, Path]:
    """Write the tables DVC plots read: plots/roc.csv (fpr, tpr), plots/pr.csv (recall, precision)
    and plots/confusion.csv (actual, predicted: one row per test sample, for the `confusion` template).

    ROC and PR are those of the positive class (binary) or micro-averaged over the classes
    (multiclass, multilabel); a multilabel sample gives one confusion row per label.
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
    pred = predicted_labels(probs, task)
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
    probs: np.ndarray, target: np.ndarray, task: str, classes: list[str], out_dir: Path
) -> dict[str, Path]:
    """Write plots/confusion_matrix.png, plots/roc.png, per_class_report.{json,txt}, and the DVC
    plot tables plots/{roc,pr,confusion}.csv. Returns the figures and the report (not the tables).
    """
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    files = {
        "confusion_matrix": plots / "confusion_matrix.png",
        "roc": plots / "roc.png",
        "report_json": out_dir / "per_class_report.json",
        "report_txt": out_dir / "per_class_report.txt",
    }
    plot_confusion_matrix(probs, target, task, classes, files["confusion_matrix"])
    plot_roc(probs, target, task, classes, files["roc"])
    report = per_class_report(probs, target, task, classes)
    files["report_json"].write_text(json.dumps(report, indent=2))
    files["report_txt"].write_text(report_text(report))
    write_plot_data(probs, target, task, classes, plots)
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
    fig.tight_layout()
    fig.savefig(files["pred_vs_true"], dpi=120)
    plt.close(fig)
    _write_csv(
        plots / "pred_vs_true.csv",
        ["true", "predicted"],
        zip(target.tolist(), pred.tolist(), strict=True),
    )
    return files
