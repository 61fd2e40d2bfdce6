"""A run's report.html: what was trained on what, how training went, the test metrics with their
intervals at the stated operating point, and every figure of the evaluation, in one file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medpipe.data.processed import SPLITS, DatasetMeta
from medpipe.evaluation.html_report import (
    Section,
    format_ci,
    plot_training_curves,
    write_html_report,
)
from medpipe.evaluation.settings import Evaluation, threshold_text

# The figures, in reading order, with their captions (keys of Evaluation.files).
FIGURES = (
    ("confusion_matrix", "Confusion matrix at the operating point"),
    ("roc", "ROC curve, operating point marked"),
    ("pr", "Precision-recall curve, operating point marked"),
    ("reliability", "Reliability diagram (before and after temperature scaling)"),
    ("pred_vs_true", "Predicted against true values"),
    ("explanations", "What the model looked at: most confident right, then wrong, per class"),
    ("pointing_game", "Pointing game: trained model against randomised weights"),
    ("samples", "Generated samples, one row per class"),
)
REPORTED = ("test/", "gan/")  # the prefixes of the metrics the report lists


def _metric_rows(metrics: dict[str, float]) -> list[list[Any]]:
    rows: list[list[Any]] = [["metric", "value [95 % interval]", "at threshold 0.5"]]
    for key in sorted(k for k in metrics if k.startswith(REPORTED) and "_ci_" not in k):
        name = key.split("/", 1)[1]
        shown = format_ci(metrics[key], metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high"))
        half = metrics.get(f"test_at_0.5/{name}")
        rows.append([key, shown, "" if half is None else f"{half:.3f}"])
    return rows


def _privacy_text(summary: dict[str, float], privacy: dict[str, Any]) -> str:
    target = privacy.get("target_epsilon")
    return (
        f"Trained with DP-SGD (Opacus): (epsilon = {summary['privacy/epsilon']:.3g}, "
        f"delta = {summary.get('privacy/delta', float('nan')):g})-differential privacy for the "
        f"training samples{f' (target epsilon {target:g})' if target is not None else ''}, "
        f"{int(summary.get('privacy/steps', 0))} steps with "
        f"{'Poisson' if privacy.get('poisson_sampling', True) else 'shuffled (epsilon approximate)'}"
        f" sampling at rate {summary.get('privacy/sample_rate', float('nan')):.4g}, per-sample "
        f"gradients clipped to {summary.get('privacy/max_grad_norm', float('nan')):g}, noise "
        f"multiplier {summary.get('privacy/noise_multiplier', float('nan')):.4g}, "
        f"{privacy.get('accountant', 'prv')} accountant. The guarantee covers the weights; not the "
        "normalisation statistics and class counts computed from the training split."
    )


def write_run_report(
    out_dir: Path,
    c: dict[str, Any],
    meta: DatasetMeta,
    summary: dict[str, float],
    evaluation: Evaluation,
    history_csv: Path,
) -> Path:
    """Write `<out_dir>/report.html` and return its path."""
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    sections = [
        Section(
            "Run",
            table=[
                ["model", str(c["model"].get("name"))],
                ["data", f"{meta.name} ({meta.task}, {meta.kind} {tuple(meta.sample_shape)})"],
                ["experiment", str(c.get("experiment_name"))],
                ["seed", str(c.get("seed"))],
                ["monitor", f"{c.get('monitor')} ({c.get('monitor_mode')})"],
                ["best epoch", str(summary.get("best_epoch", "-"))],
            ],
        )
    ]
    if meta.task != "regression":
        counts = [["split", *meta.classes, "total"]]
        for split in SPLITS:
            row = list(meta.class_counts.get(split, []))
            counts.append([split, *row, meta.sizes.get(split, "")])
        sections.append(Section("Data: samples per class", table=counts))
    else:
        sizes = [["split", "samples"]] + [[s, meta.sizes.get(s, "")] for s in SPLITS]
        sections.append(Section("Data", table=sizes))
    curves = plot_training_curves(history_csv, plots / "training_curves.png")
    if curves is not None:
        sections.append(Section("Training", images=[("Loss and validation metrics", curves)]))
    op = evaluation.operating_point
    text = "Test metrics of the best checkpoint, with bootstrap intervals."
    if op:
        t = op.get("threshold")
        decision = (
            "argmax over the classes"
            if t is None
            else f"threshold {threshold_text(t)} ({op.get('threshold_rule')}, chosen on the "
            "validation split)"
        )
        text += f" Decision: {decision}; temperature {op.get('temperature', 1.0):.4g}."
    sections.append(Section("Test metrics", text=text, table=_metric_rows(summary)))
    if "privacy/epsilon" in summary:  # privacy=dp (medpipe.privacy.dp)
        sections.append(Section("Privacy", text=_privacy_text(summary, c.get("privacy") or {})))
    if evaluation.warnings:
        sections.append(Section("Warnings", text="\n\n".join(evaluation.warnings)))
    figures = [(cap, evaluation.files[k]) for k, cap in FIGURES if k in evaluation.files]
    if figures:
        sections.append(Section("Figures", images=figures))
    title = f"medpipe: {c['model'].get('name')} on {meta.name}"
    return write_html_report(out_dir / "report.html", title=title, sections=sections)
