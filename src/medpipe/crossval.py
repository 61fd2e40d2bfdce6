"""Stratified k-fold cross-validation: `python -m medpipe.train cv.folds=5 ...`.

Each fold trains and tests as its own MLflow run (`<name>-fold<i>`, tag `cv.fold`, its splits'
rows as dataset inputs) nested under one parent run (tag `medpipe.cv`, the pooled data as its
dataset input), which gets the mean and standard deviation over folds of every
test metric (`test/<metric>` holds the mean, `test/<metric>_std` the sample standard deviation,
`test/<metric>_ci_low|_ci_high` a 95 % t-interval of the mean over folds),
`best/<monitor>` (mean of the folds' best validation values) and `cv_summary.{md,csv}` plus
`folds.json` (the rows of every split of every fold) as artifacts; likewise `val/<metric>`, the
folds' validation metrics at their best epochs. Outputs go to
`<output_dir>/fold<i>/` and `<output_dir>/cv_summary.*`.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medpipe.building import choose_data_loader
from medpipe.data.folds import all_folds
from medpipe.data.processed import read_meta
from medpipe.outputs import CI_SUFFIXES, print_metrics, write_json
from medpipe.resuming import LAST, OUTPUT_DIR_TAG, Resume, reattach
from medpipe.tasks.kinds import TaskKind
from medpipe.training import create_run, train_once


def relocate(value: Any, old: str, new: str) -> Any:
    """`value` with every string path at or under folder `old` moved under `new` (a fold's
    checkpoints, logs and outputs go to its own folder)."""
    if isinstance(value, dict):
        return {k: relocate(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [relocate(v, old, new) for v in value]
    if isinstance(value, str) and (value == old or value.startswith(old.rstrip("/") + "/")):
        return new + value[len(old) :]
    return value


def fold_config(c: dict[str, Any], fold: int) -> dict[str, Any]:
    """The resolved config of one fold: outputs under <output_dir>/fold<i>, and `cv.fold` recorded
    (the checkpoint carries it, so `medpipe.evaluate` tests it on the same rows)."""
    out_dir = str(c["paths"]["output_dir"])
    fold_c = relocate(copy.deepcopy(c), out_dir, str(Path(out_dir) / f"fold{fold}"))
    fold_c["cv"]["fold"] = fold
    return fold_c


def cross_validate(
    c: dict[str, Any], kind: TaskKind, folder: Path, resume: Resume | None = None
) -> float:
    cv = c["cv"]
    k = int(cv["folds"])
    meta = read_meta(folder)
    folds = all_folds(c, folder)
    choose_data_loader(c, folder, cv=True)  # the pool must fit in host RAM: fail before any run
    out_dir = Path(c["paths"]["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(c, sort_keys=False))  # for resume=
    folds_file = out_dir / "folds.json"
    write_json(folds_file, [{s: f[s].tolist() for s in f} for f in folds])

    parent = None
    if "mlflow" in (c.get("logger") or {}):
        from medpipe.tracking.mlflow_run import pooled_input

        if resume is not None and resume.run_id:
            parent = reattach(resume, bool((c["logger"]["mlflow"] or {}).get("synchronous")))
        else:
            pooled = [pooled_input(meta, folder, c["data"].get("path"))]  # what the folds split
            cv_tags = {
                "medpipe.cv": "true",
                "cv.folds": str(k),
                OUTPUT_DIR_TAG: str(out_dir.resolve()),
            }
            parent = create_run(c, meta, kind, cv_tags, "-cv", pooled)
        write_json(out_dir / "run.json", {"run_id": parent.run_id, "tracking_uri": parent.uri})
    rows: list[dict[str, float]] = []
    bests: list[float] = []
    with parent.guard() if parent else contextlib.nullcontext():
        for i, fold in enumerate(folds):
            fold_c = fold_config(c, i)
            fold_resume = None
            if resume is not None:  # finished folds are kept, the one it died in continues
                done, fold_resume = fold_state(Path(fold_c["paths"]["output_dir"]))
                if done is not None:
                    print(f"cross-validation fold {i + 1}/{k}: finished before, kept")
                    best = float(done.get(c["monitor"], math.nan))
                    bests.append(best)
                    done.pop("best_epoch", None)
                    rows.append({"fold": i, f"best/{c['monitor']}": best, **done})
                    continue
            print(
                f"cross-validation fold {i + 1}/{k}: train {len(fold['train'])}, "
                f"val {len(fold['val'])}, test {len(fold['test'])}"
                + (" (resumed)" if fold_resume is not None else "")
            )
            tags = {"cv.fold": str(i), "cv.folds": str(k)}
            if parent is not None:
                tags["mlflow.parentRunId"] = parent.run_id
            best, metrics = train_once(
                fold_c, kind, folder, fold, tags, f"-fold{i}", resume=fold_resume
            )
            bests.append(best)
            metrics.pop("best_epoch", None)
            rows.append({"fold": i, f"best/{c['monitor']}": best, **metrics})
        summary = summarise(rows)
        write_json(out_dir / "metrics.json", summary)
        files = write_tables(rows, summary, out_dir, kind.main_metrics)
        if parent is not None:
            parent.log_metrics({key: v for key, v in summary.items() if math.isfinite(v)})
            for f in [*files, folds_file, out_dir / "metrics.json"]:
                parent.log_artifact(f)
    print_metrics(
        f"cross-validation over {k} folds (mean [95 % interval of the mean over folds]; _std: "
        "standard deviation):",
        summary,
    )
    print(f"outputs: {out_dir}")
    finite = [b for b in bests if math.isfinite(b)]
    return float(np.mean(finite)) if finite else math.nan


def fold_state(fold_dir: Path) -> tuple[dict[str, float] | None, Resume | None]:
    """For a resumed cross-validation, one fold's folder: (its metrics.json, None) when the fold
    finished (its run FINISHED, or untracked with its metrics written); (None, how to resume it)
    when it has a last checkpoint; (None, None) when it never started."""
    import json

    info = fold_dir / "run.json"
    run_id = uri = None
    if info.is_file():
        saved = json.loads(info.read_text())
        run_id, uri = saved.get("run_id"), saved.get("tracking_uri")
    metrics = fold_dir / "metrics.json"
    if metrics.is_file():
        finished = run_id is None
        if run_id and uri:
            from mlflow import MlflowClient

            finished = MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
        if finished:
            return json.loads(metrics.read_text()), None
    if (fold_dir / LAST).is_file():
        return None, Resume(fold_dir, run_id, uri)
    return None, None


def summarise(rows: list[dict[str, float]], level: float = 0.95) -> dict[str, float]:
    """Mean and sample standard deviation over folds of every metric the folds share, and for
    the test metrics a `level` interval of the mean over folds (Student's t with k - 1 degrees of
    freedom: mean +- t * std / sqrt(k)) as `_ci_low`/`_ci_high`. The folds' own bootstrap
    intervals stay with the fold runs. Folds where a metric is nan (a class absent from a fold's
    test rows) are left out of its mean."""
    from scipy.stats import t as student_t

    keys = [
        key
        for key in rows[0]
        if key != "fold" and not key.endswith(CI_SUFFIXES) and all(key in r for r in rows)
    ]
    out: dict[str, float] = {}
    for key in keys:
        values = np.array([r[key] for r in rows], dtype=np.float64)
        values = values[np.isfinite(values)]
        if not len(values):
            out[key], out[f"{key}_std"] = math.nan, math.nan
            continue
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        if key.startswith("test/") and len(values) > 1:
            half = student_t.ppf((1 + level) / 2, len(values) - 1) * out[f"{key}_std"]
            half /= math.sqrt(len(values))
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = out[key] - half, out[key] + half
    return out


def write_tables(
    rows: list[dict[str, float]], summary: dict[str, float], out_dir: Path, main: tuple[str, ...]
):
    """cv_summary.csv (one row per fold, then mean and std) and cv_summary.md (the best monitored
    value and the task kind's `main` metrics)."""
    keys = [key for key in rows[0] if key != "fold" and not key.endswith(CI_SUFFIXES)]
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
        key for key in keys if key.startswith(("best/", "test/")) and key.split("/")[-1] in main
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
