"""Paired comparison of two runs on the same test set: `python -m medpipe.compare runs=<a>,<b>`.

Both runs' kept test predictions (`predictions/test.csv` artifacts) are read back and must belong
to the same test rows: the same processed data (content hash), the same row numbers and the same
targets; anything else is refused with the reason. Then, on those rows:

- AUROC (binary): DeLong's test for two correlated ROC curves: the difference with its interval
  and two-sided p-value;
- accuracy: McNemar's exact test on the discordant pairs (each run at its own operating point);
- every metric of the task (including macro AUROC of multiclass and multilabel runs, and the
  regression metrics): the paired bootstrap of the difference, the same resampled rows for both.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medpipe.errors import ConfigError
from medpipe.evaluation.bootstrap import BootstrapSettings, strata_of
from medpipe.evaluation.predictions import Predictions


@dataclass
class PairedResult:
    run_a: str
    run_b: str
    names: tuple[str, str]
    task: str
    n: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # metric, a, b, diff, ci, p, test
    notes: list[str] = field(default_factory=list)


def _resolve(client, run_ref: str, experiment_ids: list[str]):
    """A run by full id, or by a unique id prefix among the runs of the experiments."""
    try:
        return client.get_run(run_ref)
    except Exception:  # noqa: BLE001 - not a full id: try it as a prefix
        pass
    matches = []
    for exp_id in experiment_ids:
        token = None
        while True:
            page = client.search_runs([exp_id], max_results=1000, page_token=token)
            matches += [r for r in page if r.info.run_id.startswith(run_ref)]
            token = page.token
            if not token:
                break
    if len(matches) != 1:
        what = "no run" if not matches else f"{len(matches)} runs"
        raise ConfigError(
            f"runs: {what} with id '{run_ref}'; give a full run id or a unique prefix"
        )
    return matches[0]


def load_test_predictions(client, run, folder: Path) -> Predictions:
    """The run's kept test predictions, downloaded into `folder`."""
    run_id = run.info.run_id
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # the table is the output
    try:
        local = client.download_artifacts(run_id, "predictions", str(folder))
    except Exception as err:  # noqa: BLE001 - missing artifact folders: one line
        raise ConfigError(
            f"runs: run {run_id[:8]} ({run.info.run_name}) has no kept test predictions "
            f"(artifact predictions/test.csv): trained before medpipe kept them, or with "
            f"test_after_fit=false ({type(err).__name__})"
        ) from None
    path = Path(local) / "test.csv"
    if not path.is_file():
        raise ConfigError(
            f"runs: run {run_id[:8]} ({run.info.run_name}) has no predictions/test.csv artifact"
        )
    return Predictions.load(path)


def same_test_set(a: Predictions, b: Predictions, names: tuple[str, str]) -> list[str]:
    """Why two runs' predictions are not of the same test rows (empty: they are)."""
    problems = []
    if a.task != b.task or list(a.classes) != list(b.classes):
        problems.append(
            f"tasks differ ({names[0]}: {a.task} {a.classes}; {names[1]}: {b.task} {b.classes})"
        )
    ha, hb = a.info.get("data_sha256"), b.info.get("data_sha256")
    if ha != hb:
        problems.append(
            f"processed data differs ({names[0]}: {a.info.get('data_name')} {str(ha)[:12]}; "
            f"{names[1]}: {b.info.get('data_name')} {str(hb)[:12]})"
        )
    if len(a) != len(b):
        problems.append(f"test sets have {len(a)} and {len(b)} rows")
    elif not np.array_equal(a.rows, b.rows):
        problems.append(
            "test rows differ (e.g. different cross-validation folds): "
            f"{int((a.rows != b.rows).sum())} of {len(a)} row numbers"
        )
    elif not np.array_equal(a.target, b.target):
        problems.append("targets differ on the same rows")
    ids = a.ids is not None and b.ids is not None and len(a) == len(b)
    if ids and not np.array_equal(a.ids, b.ids):
        problems.append("record ids differ")
    return problems


def _metric_fn(p: Predictions):
    from medpipe.evaluation.stats import classification_metrics, regression_metrics

    if p.task == "regression":
        return lambda w: regression_metrics(p.scores, p.target, weights=w)
    threshold = 0.5 if p.threshold is None else np.asarray(p.threshold, dtype=np.float64)
    if p.task == "binary":
        threshold = float(threshold)
    return lambda w: classification_metrics(
        p.scores, p.target, p.task, p.classes, threshold, weights=w
    )


def compare_pair(
    uri: str,
    run_refs: list[str],
    experiment: str | None = None,
    settings: BootstrapSettings | None = None,
) -> PairedResult:
    """Read both runs' test predictions, check they are of the same rows, and test the
    differences (DeLong, McNemar, paired bootstrap); ConfigError with the reason otherwise."""
    from medpipe.evaluation.compare_runs import _client
    from medpipe.evaluation.paired import delong_test, mcnemar_exact, paired_bootstrap

    settings = settings or BootstrapSettings()
    if len(run_refs) != 2:
        raise ConfigError(f"runs: name exactly two runs, runs=<id1>,<id2> (got {len(run_refs)})")
    client = _client(uri)
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    if experiment:
        found = client.get_experiment_by_name(experiment)
        exp_ids = [found.experiment_id] if found else exp_ids
    runs = [_resolve(client, ref, exp_ids) for ref in run_refs]
    if runs[0].info.run_id == runs[1].info.run_id:
        raise ConfigError("runs: the same run twice; name two different runs")
    names = tuple(f"{r.info.run_id[:8]} ({r.info.run_name})" for r in runs)
    with tempfile.TemporaryDirectory(prefix="medpipe-compare-") as tmp:
        a, b = (load_test_predictions(client, r, Path(tmp) / str(i)) for i, r in enumerate(runs))
    problems = same_test_set(a, b, names)  # type: ignore[arg-type]
    if problems:
        raise ConfigError(
            f"runs: {names[0]} and {names[1]} were not tested on the same test set, so a paired "
            f"comparison does not apply: {'; '.join(problems)}"
        )
    result = PairedResult(
        runs[0].info.run_id,
        runs[1].info.run_id,
        names,
        a.task,
        len(a),  # type: ignore[arg-type]
    )
    fa, fb = _metric_fn(a), _metric_fn(b)
    point_a, point_b = fa(None), fb(None)
    if a.task == "binary":
        d = delong_test(a.scores, b.scores, a.target, level=settings.level)
        result.rows.append(
            {
                "metric": "auroc",
                "a": d["auroc_a"],
                "b": d["auroc_b"],
                "diff": d["diff"],
                "ci_low": d["ci_low"],
                "ci_high": d["ci_high"],
                "p_value": d["p_value"],
                "test": "DeLong",
            }
        )
    if a.task in ("binary", "multiclass"):
        correct_a = a.predicted() == a.target
        correct_b = b.predicted() == b.target
        m = mcnemar_exact(correct_a, correct_b)
        result.rows.append(
            {
                "metric": "acc",
                "a": m["acc_a"],
                "b": m["acc_b"],
                "diff": m["diff"],
                "ci_low": math.nan,
                "ci_high": math.nan,
                "p_value": m["p_value"],
                "test": f"McNemar exact ({m['b']} vs {m['c']} discordant)",
            }
        )
        if a.task == "binary" and a.threshold != b.threshold:
            result.notes.append(
                f"each run decides at its own threshold ({names[0]}: {a.threshold:.3g}; "
                f"{names[1]}: {b.threshold:.3g})"
            )
    strata = strata_of(a.target, a.task) if a.task != "regression" else None
    boot = paired_bootstrap(fa, fb, len(a), strata, settings)
    for metric, d in boot.items():
        result.rows.append(
            {
                "metric": metric,
                "a": float(point_a[metric]),
                "b": float(point_b[metric]),
                "diff": d["diff"],
                "ci_low": d["ci_low"],
                "ci_high": d["ci_high"],
                # every replicate on one side: p is below what n replicates can resolve
                "p_value": d["p_value"] if d["p_value"] > 0 else 1.0 / settings.n,
                "p_below": d["p_value"] <= 0,
                "test": f"paired bootstrap ({settings.n})",
            }
        )
    return result


def render_paired(result: PairedResult, fmt: str = "table") -> str:
    """The comparison as an aligned table, GitHub markdown or CSV."""
    head = ["metric", "A", "B", "A - B", "interval", "p-value", "test"]
    body = []
    for r in result.rows:
        interval = (
            f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
            if math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"])
            else "-"
        )
        body.append(
            [
                r["metric"],
                f"{r['a']:.4f}",
                f"{r['b']:.4f}",
                f"{r['diff']:+.4f}",
                interval,
                (f"<{r['p_value']:.2g}" if r.get("p_below") else f"{r['p_value']:.4g}")
                if math.isfinite(r["p_value"])
                else "-",
                r["test"],
            ]
        )
    caption = (
        f"paired comparison on the same {result.n} test rows ({result.task}): "
        f"A = {result.names[0]}, B = {result.names[1]}"
    )
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["metric", "a", "b", "diff", "ci_low", "ci_high", "p_value", "test"])
        for r in result.rows:
            w.writerow(
                [r[k] for k in ("metric", "a", "b", "diff", "ci_low", "ci_high")]
                + [r["p_value"], r["test"]]
            )
        return buf.getvalue()
    if fmt == "md":
        lines = [caption, "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines + [""] + result.notes) + "\n"
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
    lines = [caption, "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in body
    ]
    return "\n".join(lines + result.notes) + "\n"
