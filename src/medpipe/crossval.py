"""Stratified k-fold cross-validation: `python -m medpipe.train cv.folds=5 ...`.

Each fold trains and tests as its own MLflow run (`<name>-fold<i>`, tag `cv.fold`) nested under
one parent run (tag `medpipe.cv`), which gets the mean and standard deviation over folds of every
test metric (`test/<metric>` holds the mean, `test/<metric>_std` the sample standard deviation),
`best/<monitor>` (mean of the folds' best validation values) and `cv_summary.{md,csv}` plus
`folds.json` (the rows of every split of every fold) as artifacts; likewise `val/<metric>`, the
folds' validation metrics at their best epochs. Outputs go to
`<output_dir>/fold<i>/` and `<output_dir>/cv_summary.*`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from medpipe.data.folds import make_folds
from medpipe.data.prepare import prepare_dataset
from medpipe.data.processed import pooled_labels, read_meta


def cross_validate(cfg: DictConfig, folder: Path | None = None) -> float:
    from medpipe.pipeline import create_run, print_metrics, train_once, write_json

    c: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    cv = c["cv"]
    k = int(cv["folds"])
    if folder is None:
        folder = prepare_dataset(c["data"], c["paths"]["processed_dir"], c["paths"]["raw_dir"])
    meta = read_meta(folder)
    folds = all_folds(c, folder)
    out_dir = Path(c["paths"]["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    folds_file = out_dir / "folds.json"
    write_json(folds_file, [{s: f[s].tolist() for s in f} for f in folds])

    parent = None
    if "mlflow" in (c.get("logger") or {}):
        parent = create_run(c, meta, {"medpipe.cv": "true", "cv.folds": str(k)}, "-cv")
    rows: list[dict[str, float]] = []
    bests: list[float] = []
    with parent.guard() if parent else contextlib.nullcontext():
        for i, fold in enumerate(folds):
            print(
                f"cross-validation fold {i + 1}/{k}: train {len(fold['train'])}, "
                f"val {len(fold['val'])}, test {len(fold['test'])}"
            )
            fold_cfg = cfg.copy()
            OmegaConf.update(fold_cfg, "paths.output_dir", str(out_dir / f"fold{i}"))
            # the checkpoint records its fold, so `medpipe.evaluate` tests it on the same rows
            OmegaConf.update(fold_cfg, "cv.fold", i, force_add=True)
            tags = {"cv.fold": str(i), "cv.folds": str(k)}
            if parent is not None:
                tags["mlflow.parentRunId"] = parent.run_id
            best, metrics = train_once(fold_cfg, folder, fold, tags, f"-fold{i}")
            bests.append(best)
            metrics.pop("best_epoch", None)
            rows.append({"fold": i, f"best/{c['monitor']}": best, **metrics})
        summary = summarise(rows)
        write_json(out_dir / "metrics.json", summary)
        files = write_tables(rows, summary, out_dir)
        if parent is not None:
            client = parent.client
            from mlflow.entities import Metric

            stamp = int(time.time() * 1000)
            items = [Metric(key, v, stamp, 0) for key, v in summary.items() if math.isfinite(v)]
            for j in range(0, len(items), 100):
                client.log_batch(parent.run_id, metrics=items[j : j + 100])
            for f in [*files, folds_file, out_dir / "metrics.json"]:
                parent.log_artifact(f)
    print_metrics(f"cross-validation over {k} folds (mean; _std: standard deviation):", summary)
    print(f"outputs: {out_dir}")
    finite = [b for b in bests if math.isfinite(b)]
    return float(np.mean(finite)) if finite else math.nan


def all_folds(c: dict[str, Any], folder: Path) -> list[dict[str, np.ndarray]]:
    """The folds of a run config over a processed folder: the same rows every time."""
    cv = c["cv"]
    seed = int(cv.get("seed") if cv.get("seed") is not None else c["seed"])
    y = pooled_labels(folder)
    return make_folds(y, read_meta(folder).task, int(cv["folds"]), float(cv["val_fraction"]), seed)


def fold_rows(c: dict[str, Any], folder: Path, fold: int) -> dict[str, np.ndarray]:
    return all_folds(c, folder)[fold]


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean and sample standard deviation over folds of every metric the folds share."""
    keys = [key for key in rows[0] if key != "fold" and all(key in r for r in rows)]
    out: dict[str, float] = {}
    for key in keys:
        values = np.array([r[key] for r in rows], dtype=np.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def write_tables(rows: list[dict[str, float]], summary: dict[str, float], out_dir: Path):
    """cv_summary.csv (one row per fold, then mean and std) and cv_summary.md (main metrics)."""
    keys = [key for key in rows[0] if key != "fold"]
    csv_path, md_path = out_dir / "cv_summary.csv", out_dir / "cv_summary.md"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["fold", *keys])
    for r in rows:
        w.writerow([r["fold"], *(f"{r.get(key, math.nan):.6g}" for key in keys)])
    w.writerow(["mean", *(f"{summary.get(key, math.nan):.6g}" for key in keys)])
    w.writerow(["std", *(f"{summary.get(key + '_std', math.nan):.6g}" for key in keys)])
    csv_path.write_text(buf.getvalue())
    shown = [
        key for key in keys if key.startswith(("best/", "test/")) and key.split("/")[-1] in MAIN
    ] or keys[:8]
    lines = ["| fold | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['fold']} | " + " | ".join(f"{r[key]:.4f}" for key in shown) + " |")
    lines.append(
        "| mean ± std | "
        + " | ".join(f"{summary[key]:.4f} ± {summary[key + '_std']:.4f}" for key in shown)
        + " |"
    )
    md_path.write_text("\n".join(lines) + "\n")
    return [csv_path, md_path]


MAIN = ("auroc", "acc", "f1", "f1_score", "balanced_acc", "mae", "rmse", "r2")
