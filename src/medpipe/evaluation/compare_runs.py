"""Compare the MLflow runs of an experiment (or of one sweep): the parameters that differ between
them and their main metrics, sorted by one key, as an aligned table, GitHub markdown or CSV.

The defaults follow the runs: their main metrics are the keys of their `medpipe.main_metrics` tag
(set by training for its task kind), and they are sorted by their `monitor` param in the direction
of their `monitor_mode` param. No metric name is written here.

Validation columns (`val/<metric>`) show each run's **best epoch** (the epoch whose checkpoint gave
its `test/` metrics): training logs those values as `best/val/<metric>` with the epoch as
`best_epoch`, while its plain `val/<metric>` history ends at the last epoch. Runs trained before
medpipe logged them show the last epoch's value, marked. Sorting by a `val/` key sorts by the value
shown. Cross-validation parents log `val/<metric>` as the mean over folds of the folds' best-epoch
values already, and are shown as they are.

Reads MLflow only (no torch). A sweep is a parent run; its jobs are the runs tagged
`mlflow.parentRunId` = the parent's id. Parent runs themselves are summaries, not trainings, and are
left out of the listing.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medpipe.errors import ConfigError
from medpipe.tracking.liveness import killed_note, status_text
from medpipe.tracking.store import MAIN_METRICS_TAG

AUTO = "auto"  # sort: the runs' monitor; order: the runs' monitor_mode
FORMATS = ("table", "md", "csv")
ORDERS = ("auto", "desc", "asc")
PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "medpipe.sweep"  # set on the parent run of a Hydra multirun
CV_TAG = "medpipe.cv"  # set on the parent run of a cross-validation (its metrics: fold means)
DEFAULT_IGNORE = ("paths.*",)  # differ between every pair of runs, say nothing about the experiment
BEST_EPOCH = "best_epoch"  # metric: the 1-based epoch whose checkpoint was kept (and tested)
BEST_PREFIX = "best/"  # best/val/<metric>: the validation metrics of that epoch
LAST_EPOCH_MARK = "*"  # table and md: a val/ value of the last epoch (the run has no best/ value)
LAST_EPOCH_COLUMN = "val_last_epoch"  # csv: the row's val/ columns that hold last-epoch values


def shown_metric(run, key: str, cv: bool = False) -> tuple[float | None, bool]:
    """The value shown for metric `key` of `run` and whether it is the last epoch's.

    `val/<m>`: the best epoch's value (`best/val/<m>`) when the run logged it, else the run's
    latest `val/<m>` (its last epoch; True). Other keys, and every key of a cross-validation
    parent (`cv`: its val/ are fold means of best-epoch values already), as logged."""
    metrics = run.data.metrics
    if cv or not key.startswith("val/"):
        return metrics.get(key), False
    best = metrics.get(BEST_PREFIX + key)
    if best is not None:
        return best, False
    value = metrics.get(key)
    return value, value is not None


@dataclass
class Comparison:
    """The selected runs, sorted and cut to `top`, with the columns to show."""

    experiment: str
    uri: str
    sweep: str | None  # the parent run id, or None for the whole experiment
    sort: str
    order: str  # desc | asc
    total: int  # runs before the `top` cut
    runs: list[Any]  # mlflow.entities.Run
    params: list[str]
    metrics: list[str]
    cv: bool = False  # the runs are cross-validation parents (val/: fold means)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best_epoch_column(self) -> bool:
        """Show `best_epoch`: some listed run logged it (not for cross-validations)."""
        return not self.cv and any(BEST_EPOCH in r.data.metrics for r in self.runs)

    @property
    def val_columns(self) -> list[str]:
        return [m for m in self.metrics if m.startswith("val/")]

    def last_epoch_cells(self, run) -> list[str]:
        """The val/ columns of `run` that hold the last epoch's value (no best/ value logged)."""
        return [m for m in self.val_columns if shown_metric(run, m, self.cv)[1]]

    def rows(self, short_ids: bool = True) -> list[dict[str, Any]]:
        out = []
        for rank, run in enumerate(self.runs, 1):
            row: dict[str, Any] = {
                "rank": rank,
                "run": run.info.run_name,
                "run_id": run.info.run_id[:8] if short_ids else run.info.run_id,
                "status": status_text(run),  # KILLED (resumable): its last checkpoint is kept
            }
            for p in self.params:
                row[p] = run.data.params.get(p)
            if self.best_epoch_column:
                epoch = _number(run.data.metrics.get(BEST_EPOCH))
                row[BEST_EPOCH] = None if epoch is None else int(epoch)
            for m in self.metrics:
                row[m] = shown_metric(run, m, self.cv)[0]
            out.append(row)
        return out

    def notes(self) -> list[str]:
        """What the val/ columns hold, for the table and markdown (csv: the columns say it), and
        why each KILLED run was stopped, with the command that resumes it."""
        killed = [n for n in map(killed_note, self.runs) if n]
        return self._column_notes() + killed

    def _column_notes(self) -> list[str]:
        if not self.val_columns:
            return []
        if self.cv:
            return [
                "val/*: the mean over the folds of each fold's best-epoch value (_std: their "
                "standard deviation)"
            ]
        out = [
            "val/*: each run's best epoch (column 'best epoch', on its monitor), whose checkpoint "
            "gave test/*"
        ]
        if any(self.last_epoch_cells(r) for r in self.runs):
            out.append(
                f"{LAST_EPOCH_MARK} the last epoch's value: the run logged no best/val/* "
                "(trained before medpipe logged them)"
            )
        return out

    def caption(self) -> str:
        where = f"sweep {self.sweep}" if self.sweep else "all runs"
        shown = (
            f"top {len(self.runs)} of {self.total}"
            if len(self.runs) < self.total
            else (f"{self.total} run{'s' if self.total != 1 else ''}")
        )
        return (
            f"experiment '{self.experiment}' ({where}, {self.uri}): {shown}, "
            f"sorted by {self.sort} {self.order}"
        )


# -- selecting -------------------------------------------------------------------------------------
def _client(uri: str):
    from medpipe.tracking.store import open_client

    # An unreachable server should fail in seconds, not after MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise ConfigError(
                f"tracking: no MLflow store at {db}; train first (python -m medpipe.train) or set "
                "MLFLOW_TRACKING_URI to the server or store that holds the runs"
            )
    return open_client(uri)  # a server that answers; runs of dead processes marked KILLED


def _all_runs(client, experiment_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _find_experiment(client, name: str, uri: str):
    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None and exp.lifecycle_stage == "active":
            return exp
        names = sorted(e.name for e in client.search_experiments())
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - connection and store errors: one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"tracking: cannot read MLflow at {uri}: {first[:300]}") from None
    raise ConfigError(
        f"experiment_name: no MLflow experiment '{name}' at {uri}; "
        f"experiments there: {', '.join(names) or '(none)'}"
    )


def parent_ids(runs: Iterable[Any]) -> set[str]:
    """Ids of the sweep parent runs among `runs`: tagged as a sweep, or named by a child."""
    runs = list(runs)
    ids = {r.info.run_id for r in runs}
    parents = {r.data.tags[PARENT_TAG] for r in runs if PARENT_TAG in r.data.tags}
    parents |= {r.info.run_id for r in runs if r.data.tags.get(SWEEP_TAG) == "true"}
    return parents & ids


def _describe_parents(runs: list[Any], parents: set[str]) -> str:
    found = sorted((r for r in runs if r.info.run_id in parents), key=lambda r: -_start(r))
    if not found:
        return "(none)"
    names = [f"{r.info.run_id[:8]} ({r.info.run_name})" for r in found[:5]]
    return ", ".join(names) + (", ..." if len(found) > 5 else "")


def _start(run) -> int:
    return run.info.start_time or 0


def select_runs(
    runs: list[Any], sweep: str | None, experiment: str, cv: bool = False
) -> tuple[list[Any], str | None]:
    """The runs to compare: the children of sweep `sweep` (an id, a unique id prefix, or
    'latest'), or every run of the experiment except sweep parents when `sweep` is None; with
    `cv`, the parent runs of cross-validations (of the sweep, if one is given) instead."""
    if cv:
        # a sweep's jobs that cross-validated are its children (and the parents of their folds)
        scope = select_runs(runs, sweep, experiment)[0] if sweep else runs
        chosen = [r for r in scope if r.data.tags.get(CV_TAG) == "true"]
        if not chosen:
            raise ConfigError(
                f"cv=true: experiment '{experiment}' has no cross-validation runs; train one with "
                "python -m medpipe.train cv.folds=5 ..."
            )
        return chosen, None
    parents = parent_ids(runs)
    if sweep is None or str(sweep) == "":
        chosen = [r for r in runs if r.info.run_id not in parents]
        if not chosen:
            raise ConfigError(f"experiment_name: experiment '{experiment}' has no runs")
        return chosen, None
    sweep = str(sweep)
    if sweep == "latest":
        candidates = [r for r in runs if r.info.run_id in parents]
        if not candidates:
            raise ConfigError(
                f"sweep=latest: experiment '{experiment}' has no sweep (no run has child runs); "
                "run one with python -m medpipe.train -m ..., or leave sweep out to list every run"
            )
        parent = max(candidates, key=_start).info.run_id
    else:
        matches = [r.info.run_id for r in runs if r.info.run_id.startswith(sweep)]
        if len(matches) != 1:
            what = "no run" if not matches else f"{len(matches)} runs"
            raise ConfigError(
                f"sweep: {what} with id '{sweep}' in experiment '{experiment}'; sweep parent runs "
                f"there: {_describe_parents(runs, parents)}; or sweep=latest"
            )
        parent = matches[0]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent]
    if not children:
        raise ConfigError(
            f"sweep: run {parent} has no child runs in experiment '{experiment}'; sweep parent "
            f"runs there: {_describe_parents(runs, parents)}"
        )
    return children, parent


def _run_paths(run) -> list[str]:
    """This run's own output folders (from its params): values under them are per-run paths."""
    return [v for k, v in run.data.params.items() if k.startswith("paths.output") and len(v) > 1]


def _override_keys(runs: Sequence[Any]) -> set[str]:
    keys = set()
    for r in runs:
        for item in r.data.tags.get("hydra.overrides", "").split():
            if "=" in item:
                keys.add(item.split("=", 1)[0].lstrip("+~"))
    return keys


def _follows_group_choice(key: str, differing: list[str], runs: Sequence[Any]) -> bool:
    """True when `key` (model.net.hidden) sits under a config group whose choice (model.name)
    differs too and its value is the same in every run with the same choice: it differs only
    because another network was chosen, which the group's name column already says."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        name_key = ".".join(parts[:i]) + ".name"
        if name_key == key:
            return False
        if name_key in differing:
            seen: dict[str | None, str | None] = {}
            for r in runs:
                choice, value = r.data.params.get(name_key), r.data.params.get(key)
                if seen.setdefault(choice, value) != value:
                    return False
            return True
    return False


def differing_params(runs: Sequence[Any], ignore: Iterable[str] = DEFAULT_IGNORE) -> list[str]:
    """Parameter keys whose value (or presence) is not the same in all `runs`.

    Left out: keys matching an `ignore` pattern, per-run paths (a value inside the run's own
    output folder, such as the checkpoint folder) and keys that only follow a config group's choice
    (the network's settings when `model.name` differs). The keys set on the command line come
    first (`optimizer.lr`, and `model.name` for `model=...`), then the rest alphabetically.
    """
    ignore = list(ignore)
    keys = sorted({k for r in runs for k in r.data.params})
    out = []
    for k in keys:
        if any(fnmatch.fnmatchcase(k, pattern) for pattern in ignore):
            continue
        if len({r.data.params.get(k) for r in runs}) < 2:
            continue
        with_key = [r for r in runs if k in r.data.params]
        if all(any(p in r.data.params[k] for p in _run_paths(r)) for r in with_key):
            continue
        out.append(k)
    out = [k for k in out if not _follows_group_choice(k, out, runs)]
    chosen = _override_keys(runs)

    def priority(key: str) -> int:
        if key in chosen:
            return 0
        group = key.rsplit(".", 1)[0]
        return 1 if key.endswith(".name") and group in chosen else 2

    return sorted(out, key=priority)


def _number(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _sort_runs(
    runs: list[Any], key: str, descending: bool, is_metric: bool, cv: bool = False
) -> list[Any]:
    def value(run):
        v = shown_metric(run, key, cv)[0] if is_metric else run.data.params.get(key)
        return (_number(v), None if v is None else str(v))

    present = [r for r in runs if value(r) != (None, None)]
    missing = [r for r in runs if value(r) == (None, None)]
    numeric = all(value(r)[0] is not None for r in present)

    def sort_key(run):
        num, text = value(run)
        return num if numeric else text

    # Newest first among equal values, then sorted by the key (stable sorts).
    present.sort(key=_start, reverse=True)
    present.sort(key=sort_key, reverse=descending)
    missing.sort(key=_start, reverse=True)
    return present + missing


def main_metrics(runs: Sequence[Any]) -> list[str]:
    """The runs' main metric keys: the union of their `medpipe.main_metrics` tags in order of first
    appearance (newest run first). Older runs, from before training set that tag, add the val/ and
    test/ metrics they actually logged instead (val/ before test/, each alphabetically; no `_std`
    keys, which a cross-validation shows next to their means anyway)."""
    keys: dict[str, None] = {}
    untagged = []
    for run in sorted(runs, key=_start, reverse=True):
        tag = run.data.tags.get(MAIN_METRICS_TAG)
        if tag is None:
            untagged.append(run)
            continue
        for key in tag.split(","):
            if key.strip():
                keys.setdefault(key.strip(), None)
    logged = sorted({k for r in untagged for k in r.data.metrics if not k.endswith("_std")})
    for prefix in ("val/", "test/"):
        for key in logged:
            if key.startswith(prefix):
                keys.setdefault(key, None)
    return list(keys)


def _shared_param(runs: Sequence[Any], key: str) -> str | None:
    """The value of param `key` when every run that has it has the same one, else None."""
    values = {r.data.params[key] for r in runs if key in r.data.params}
    return values.pop() if len(values) == 1 else None


def _auto_sort(runs: Sequence[Any], main: Sequence[str], metric_keys: Sequence[str]) -> str:
    """sort=auto: the runs' shared `monitor` param, else their first main metric that any of them
    logged, else the first val/ or test/ metric they have."""
    monitor = _shared_param(runs, "monitor")
    if monitor and monitor in metric_keys:
        return monitor
    for key in [*main, *(k for k in metric_keys if k.startswith(("val/", "test/")))]:
        if key in metric_keys:
            return key
    raise ConfigError(
        "sort: auto: the listed runs logged no metric to sort by"
        + (f" (monitor {monitor})" if monitor else "")
        + "; name a parameter, e.g. sort=optimizer.lr"
    )


def _auto_descending(runs: Sequence[Any], sort: str) -> bool | None:
    """order=auto for an automatic sort key: the `monitor_mode` of the runs that monitor it (max:
    descending, min: ascending), when they agree; None when it is nobody's monitor."""
    mine = [r for r in runs if r.data.params.get("monitor") == sort]
    mode = _shared_param(mine, "monitor_mode")
    return None if mode not in ("max", "min") else mode == "max"


def compare_runs(
    uri: str,
    experiment: str,
    sweep: str | None = None,
    sort: str | None = AUTO,
    order: str = AUTO,
    top: int | None = 10,
    params: Sequence[str] | None = None,
    ignore_params: Sequence[str] = DEFAULT_IGNORE,
    metrics: Sequence[str] | None = None,
    cv: bool = False,
) -> Comparison:
    """Select, sort and cut the runs; raise ConfigError (one line per problem) on bad input.

    `sort`: a metric or a parameter; auto (or None): the runs' `monitor` param when they share one,
    else their first main metric. `order`: auto follows the runs' `monitor_mode` param for an
    automatic sort key (and for a key nobody monitors: ascending for keys ending in /loss, else
    descending); an explicit `sort` keeps that /loss rule. `metrics`: the metric columns, shown
    when present; None: the runs' main metrics (`main_metrics`). `cv`: compare cross-validations
    (their parent runs: metric means, with a `_std` column after each shown metric)."""
    order = str(order or AUTO).lower()
    if order not in ORDERS:
        raise ConfigError(f"order: '{order}' is not one of {', '.join(ORDERS)}")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ConfigError(f"top: a positive number of rows, or null for all (got {top!r})")
    if sort is None:
        sort = AUTO
    if not sort or not isinstance(sort, str):
        raise ConfigError(f"sort: auto, or name a metric or a parameter (got {sort!r})")

    client = _client(uri)
    exp = _find_experiment(client, experiment, uri)
    runs, parent = select_runs(_all_runs(client, exp.experiment_id), sweep, experiment, cv)

    metric_keys = sorted({k for r in runs for k in r.data.metrics})
    param_keys = {k for r in runs for k in r.data.params}
    main = main_metrics(runs) if metrics is None else list(metrics)
    automatic = sort == AUTO
    if automatic:
        sort = _auto_sort(runs, main, metric_keys)
    if sort in metric_keys:
        is_metric = True
    elif sort in param_keys:
        is_metric = False
    else:
        shown = [m for m in metric_keys if m.startswith("val/")]
        shown += [m for m in metric_keys if m.startswith("test/")]
        raise ConfigError(
            f"sort: unknown key '{sort}' (no listed run has that metric or parameter); metrics of "
            f"these runs: {', '.join(shown or metric_keys) or '(none)'}; or a parameter such as "
            "optimizer.lr"
        )
    descending = order == "desc"
    if order == AUTO:
        by_mode = _auto_descending(runs, sort) if automatic else None
        descending = by_mode if by_mode is not None else not sort.endswith("/loss")
    ordered = _sort_runs(runs, sort, descending, is_metric, cv)
    shown_runs = ordered[:top] if top else ordered

    if params is None:
        param_cols = differing_params(shown_runs, ignore_params)
    else:
        unknown = [p for p in params if p not in param_keys]
        if unknown:
            raise ConfigError(
                f"params: no listed run has parameter(s) {', '.join(unknown)}; "
                f"e.g. {', '.join(sorted(param_keys)[:8])}"
            )
        param_cols = list(params)
    metric_cols = [m for m in main if any(m in r.data.metrics for r in shown_runs)]
    if is_metric and sort not in metric_cols:
        metric_cols.append(sort)
    if cv:  # each mean over folds followed by its standard deviation
        metric_cols = [
            c
            for m in metric_cols
            for c in (m, f"{m}_std")
            if c == m or any(c in r.data.metrics for r in shown_runs)
        ]
    if not is_metric and sort not in param_cols:
        param_cols.insert(0, sort)
    return Comparison(
        experiment=experiment,
        uri=uri,
        sweep=parent,
        sort=sort,
        order="desc" if descending else "asc",
        total=len(ordered),
        runs=shown_runs,
        params=param_cols,
        metrics=metric_cols,
        cv=cv,
    )


# -- rendering -------------------------------------------------------------------------------------
def _cell(value: Any, width: int = 40) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def interval_text(metrics: dict[str, float], key: str) -> str:
    """` [0.941, 0.969]`: the metric's confidence interval when the run logged one."""
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    if low is None or high is None:
        return ""
    return f" [{low:.3f}, {high:.3f}]"


def _is_numeric_column(rows: list[dict[str, Any]], col: str) -> bool:
    if col in ("run", "run_id", "status"):
        return False
    values = [r[col] for r in rows if r[col] is not None]
    return bool(values) and all(_number(v) is not None for v in values)


HEADERS = {"rank": "#", BEST_EPOCH: "best epoch"}  # table and md; csv keeps the keys


def _text_cells(
    comparison: Comparison, width: int
) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header, cells and right-alignment of the table and markdown formats: a val/ value of the
    last epoch is marked; the other cells of its column get a space so that the digits align."""
    rows = comparison.rows()
    cols = list(rows[0])
    marked = [set(comparison.last_epoch_cells(run)) for run in comparison.runs]
    any_marked = {c for m in marked for c in m}
    cells = []
    for row, row_marks, run in zip(rows, marked, comparison.runs, strict=True):
        line = []
        for c in cols:
            text = _cell(row[c], width)
            if c in comparison.metrics:
                text += interval_text(run.data.metrics, c)
            if c in any_marked:
                text += LAST_EPOCH_MARK if c in row_marks else " "
            line.append(text)
        cells.append(line)
    header = [HEADERS.get(c, c) for c in cols]
    return header, cells, [_is_numeric_column(rows, c) for c in cols]


def render_table(comparison: Comparison) -> str:
    header, cells, right = _text_cells(comparison, 40)
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(header)]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [comparison.caption(), line(header), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    out += comparison.notes()
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return text.replace("*", "\\*")  # a literal asterisk, never emphasis


def render_markdown(comparison: Comparison) -> str:
    header, cells, right = _text_cells(comparison, 60)
    align = ["---:" if r else "---" for r in right]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(_md(v.strip()).replace("|", "\\|") for v in values) + " |"

    out = [comparison.caption(), "", line(header), "|" + "|".join(align) + "|"]
    out += [line(row) for row in cells]
    for note in comparison.notes():  # one paragraph each
        out += ["", _md(note)]
    return "\n".join(out) + "\n"


def render_csv(comparison: Comparison) -> str:
    """Full run ids and full-precision values under the metric keys; `best_epoch`, and, with val/
    columns, `val_last_epoch`: the row's val/ columns that hold the last epoch's value."""
    buf = io.StringIO()
    rows = comparison.rows(short_ids=False)
    for row, run in zip(rows, comparison.runs, strict=True):  # each interval after its metric
        ordered: dict[str, Any] = {}
        for k, v in row.items():
            ordered[k] = v
            if k in comparison.metrics and any(
                f"{k}_ci_low" in r.data.metrics for r in comparison.runs
            ):
                ordered[f"{k}_ci_low"] = run.data.metrics.get(f"{k}_ci_low")
                ordered[f"{k}_ci_high"] = run.data.metrics.get(f"{k}_ci_high")
        row.clear()
        row.update(ordered)
    marks = comparison.val_columns and not comparison.cv
    if marks:
        for row, run in zip(rows, comparison.runs, strict=True):
            row[LAST_EPOCH_COLUMN] = " ".join(comparison.last_epoch_cells(run))
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: ("" if v is None else repr(v) if isinstance(v, float) else v)
                for k, v in row.items()
            }
        )
    return buf.getvalue()


def render(comparison: Comparison, fmt: str) -> str:
    if fmt == "table":
        return render_table(comparison)
    if fmt == "md":
        return render_markdown(comparison)
    if fmt == "csv":
        return render_csv(comparison)
    raise ConfigError(f"format: '{fmt}' is not one of {', '.join(FORMATS)}")
