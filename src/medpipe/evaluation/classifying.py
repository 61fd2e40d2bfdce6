"""The classification task kind's evaluation of its kept outputs, after training or of a saved
checkpoint: calibration (one temperature) and the operating point chosen on the validation
split, then on the test split the metrics at that threshold with bootstrap intervals, the same at
0.5 (the MedMNIST protocol), ECE and Brier score, the kept predictions, the report figures and the
explanations."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medpipe.data.processed import Split
from medpipe.evaluation.predictions import Predictions
from medpipe.evaluation.settings import EvalSettings, Evaluation
from medpipe.evaluation.stats import absent_classes, classification_metrics

# Metrics a threshold changes (reported again at 0.5); AUROC does not depend on it.
THRESHOLD_METRICS = ("acc", "balanced_acc", "precision", "recall", "specificity", "f1", "f1_macro")


def _logits_for_calibration(raw: np.ndarray, task: str) -> np.ndarray:
    return raw[:, 0] if task == "binary" and raw.shape[1] == 1 else raw


def fit_operating_point(task, settings: EvalSettings, notes: list[str]) -> None:
    """Fit the temperature and choose the threshold on the kept validation outputs; store both
    in the task's buffers (the checkpoint and the exported model carry them). What the reader
    must know is appended to `notes` (the run's warnings)."""
    from medpipe.evaluation.calibration import fit_temperature
    from medpipe.evaluation.operating_point import select_operating_point

    raw, y = task.collected["val"]
    kind = task.task
    target = y.numpy().astype(np.int64)
    missing = absent_classes(target, kind, task.meta.classes)
    if missing:
        notes.append(
            f"validation split: no sample of {', '.join(missing)}; left out of its macro averages"
        )
    temperature = 1.0
    if settings.calibration == "temperature":
        temperature = float(
            fit_temperature(_logits_for_calibration(raw.numpy(), kind), target, kind)
        )
    task.temperature.fill_(temperature)
    if kind == "multiclass":
        return  # argmax decides
    probs = task.probabilities(raw / temperature).numpy()
    with warnings.catch_warnings():  # said below, in the run's own warnings
        warnings.simplefilter("ignore")
        point = select_operating_point(probs, target, kind, settings.threshold)
    if point.fallback:
        names = [task.meta.classes[i] for i in point.fallback]
        notes.append(
            f"threshold {settings.threshold}: the validation split holds one class only for "
            f"{', '.join(names)}; 0.5 is used there"
        )
    chosen = point.threshold
    task.threshold.copy_(
        torch.as_tensor(chosen, dtype=task.threshold.dtype).reshape(task.threshold.shape)
    )


def evaluate_classification(
    task,
    out_dir: Path,
    settings: EvalSettings,
    test_split: Split,
    rows: dict[str, np.ndarray] | None = None,
    refit: bool = True,
    info: dict[str, Any] | None = None,
) -> Evaluation:
    """Everything the test split's kept outputs give; `refit`: choose the operating point on the
    kept validation outputs first (after training), else use the task's stored one. `rows`: each
    split's row numbers in the data (a cross-validation fold's rows of the pooled data); `info`:
    recorded with the predictions (data hashes)."""
    from medpipe.evaluation.bootstrap import classification_cis
    from medpipe.evaluation.calibration import brier, ece, plot_reliability
    from medpipe.evaluation.report import write_test_report

    ev = Evaluation()
    meta, kind = task.meta, task.task
    if refit and "val" in task.collected:
        fit_operating_point(task, settings, ev.warnings)
    temperature = float(task.temperature)
    threshold: float | np.ndarray = 0.5
    if kind == "binary":
        threshold = float(task.threshold)
    elif kind == "multilabel":
        threshold = task.threshold.numpy().astype(np.float64)

    raw, y = task.collected["test"]
    target = y.numpy().astype(np.int64)
    with torch.no_grad():
        probs = task.probabilities(raw / temperature).double().numpy()
        uncalibrated = task.probabilities(raw).double().numpy()
    classes, score = meta.classes, meta.score_classes
    m = classification_metrics(probs, target, kind, classes, threshold, score)
    ev.metrics.update({f"test/{k}": float(v) for k, v in m.items()})
    if kind != "multiclass":
        at_half = classification_metrics(probs, target, kind, classes, 0.5, score)
        ev.metrics.update({f"test_at_0.5/{k}": float(at_half[k]) for k in THRESHOLD_METRICS})
    if settings.bootstrap is not None:
        cis = classification_cis(probs, target, kind, classes, threshold, score, settings.bootstrap)
        for k, (low, high) in cis.items():
            ev.metrics[f"test/{k}_ci_low"], ev.metrics[f"test/{k}_ci_high"] = low, high
    ev.metrics["test/ece"] = float(ece(probs, target, kind, bins=settings.ece_bins))
    ev.metrics["test/brier"] = float(brier(probs, target, kind))
    if temperature != 1.0:
        ev.metrics["test/ece_uncalibrated"] = float(
            ece(uncalibrated, target, kind, bins=settings.ece_bins)
        )
        ev.metrics["test/brier_uncalibrated"] = float(brier(uncalibrated, target, kind))
    ev.metrics["temperature"] = temperature
    if kind == "binary":
        ev.metrics["threshold"] = float(threshold)
    elif kind == "multilabel":
        from medpipe.evaluation.stats import class_key

        for name, t in zip(classes, np.atleast_1d(threshold), strict=True):
            ev.metrics[f"threshold/{class_key(name)}"] = float(t)

    missing = absent_classes(target, kind, classes)
    if missing:
        ev.warnings.append(
            f"test split: no sample of {', '.join(missing)}; left out of the macro averages "
            "and of the intervals"
        )
    if kind == "binary":
        positives = int((target == 1).sum())
        found_half = int(((probs >= 0.5) & (target == 1)).sum())
        if positives and found_half < 0.1 * positives:
            ev.warnings.append(
                f"at threshold 0.5 the model finds {found_half} of the {positives} test "
                f"positives ({classes[1]}); the reported test metrics use threshold "
                f"{threshold:.3g} ({settings.threshold if refit else 'stored'})"
            )
    ev.operating_point = task.operating_point()

    info = {**(info or {}), **ev.operating_point}
    rows = rows or {}
    preds = Predictions(
        "test",
        kind,
        list(classes),
        target,
        probs,
        np.asarray(rows.get("test", np.arange(len(target)))),
        logits=raw.numpy(),
        ids=test_split.ids if getattr(test_split, "ids", None) is not None else None,
        threshold=None
        if kind == "multiclass"
        else np.atleast_1d(threshold).tolist()
        if kind == "multilabel"
        else float(threshold),
        info=info,
    )
    ev.predictions = preds.save(out_dir / "predictions")
    if refit and "val" in task.collected:
        v_raw, v_y = task.collected["val"]
        with torch.no_grad():
            v_probs = task.probabilities(v_raw / temperature).double().numpy()
        Predictions(
            "val",
            kind,
            list(classes),
            v_y.numpy().astype(np.int64),
            v_probs,
            np.asarray(rows.get("val", np.arange(len(v_y)))),
            logits=v_raw.numpy(),
            threshold=preds.threshold,
            info=info,
        ).save(out_dir / "predictions")
        ev.predictions += [
            out_dir / "predictions" / "val.csv",
            out_dir / "predictions" / "val.json",
        ]

    ev.files.update(write_test_report(probs, target, kind, classes, out_dir, threshold=threshold))
    reliability = out_dir / "plots" / "reliability.png"
    plot_reliability(
        uncalibrated if temperature != 1.0 else probs,
        target,
        kind,
        reliability,
        probs_after=probs if temperature != 1.0 else None,
        bins=settings.ece_bins,
    )
    ev.files["reliability"] = reliability
    if settings.explain.get("enabled"):
        from medpipe.evaluation.explain import explain_run

        metrics, files = explain_run(
            task,
            test_split,
            probs,
            out_dir,
            threshold=threshold,
            n=int(settings.explain.get("n", 16)),
            method=str(settings.explain.get("method", "auto")),
            max_samples=int(settings.explain.get("max_samples", 256)),
            seed=settings.bootstrap.seed if settings.bootstrap else 0,
        )
        ev.metrics.update(metrics)
        ev.files.update(files)
    return ev
