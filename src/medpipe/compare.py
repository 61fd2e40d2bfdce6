"""Compare MLflow runs:  python -m medpipe.compare experiment=NAME [sweep=ID|latest] [cv=true]
[sort=auto|KEY] [order=auto|desc|asc] [top=N] [format=table|md|csv] [metrics=[KEY,...]];
or two runs on the same test set, paired:  python -m medpipe.compare runs=<id1>,<id2>
(medpipe.evaluation.paired_runs: DeLong, McNemar, paired bootstrap).

Prints the runs of an experiment, the child runs of one sweep, or the cross-validations (cv=true:
their parent runs, fold means with their standard deviations), with the parameters that differ
between them and their main metrics, sorted by `sort`.

The defaults follow what the runs record: the metric columns (metrics=null) are the union of the
runs' `medpipe.main_metrics` tags, which training sets for its task kind (classification: AUROC,
accuracy, F1; regression: MAE, RMSE, R2), or, for older runs without the tag, the val/ and test/
metrics they logged. sort=auto sorts by the runs' `monitor` param when they share one (else by
their first main metric), and order=auto then follows their `monitor_mode` (min: ascending). An
explicit sort=KEY sorts descending unless KEY ends in /loss.

val/ columns hold each run's best epoch (its `best/val/<metric>`, the epoch in column `best epoch`,
whose checkpoint gave the test/ metrics), and sorting by them sorts by those values; runs trained
before medpipe logged them show their last epoch's value, marked `*` (csv: listed in the column
`val_last_epoch`).

register=<name> [alias=champion|null] registers the model of the run listed first (runs without a
logged model, and runs that did not finish, are passed over with a note) in the MLflow Model
Registry, points the alias at that version and prints one line ending in the address to load or
serve it by: models:/<name>@<alias> (medpipe.tracking.registry).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from medpipe.entry import hydra_entry
from medpipe.errors import ConfigError


def _alias(arg: str) -> str:
    """`experiment=NAME` names the MLflow experiment here (conf/experiment/ is train's group);
    `runs=a,b` is a list of run ids (quoted: an id prefix like 0123 or 12e4 is not a number)."""
    for prefix in ("experiment=", "+experiment="):
        if arg.startswith(prefix):
            return "experiment_name=" + arg.removeprefix(prefix)
    if arg.startswith("runs=") and not arg.startswith("runs=["):
        ids = [i.strip().strip("'\"") for i in arg.removeprefix("runs=").split(",")]
        return "runs=[" + ",".join(f"'{i}'" for i in ids if i) + "]"
    return arg


def _raw_override(key: str, value: object) -> str | None:
    """The value as typed: a run id prefix like 0123 or 12e4 must not become a number."""
    from hydra.core.hydra_config import HydraConfig

    if value is None:
        return None
    for override in HydraConfig.get().overrides.task:
        if override.startswith(f"{key}="):
            return override.split("=", 1)[1].strip("'\"")
    return str(value)


def _metrics(value: object) -> list[str] | None:
    """metrics: null (the runs' own main metrics), one key, or a list of keys."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return [str(m) for m in value]  # type: ignore[attr-defined]


@hydra_entry("compare")
def _compare(cfg: Mapping[str, Any]) -> str:
    # item access only: works on the composed DictConfig and on the plain dict of its values
    from medpipe.evaluation.compare_runs import FORMATS, compare_runs, render

    fmt = str(cfg["format"])
    if fmt not in FORMATS:
        raise ConfigError(f"format: '{fmt}' is not one of {', '.join(FORMATS)}")
    from medpipe.tracking.store import tracking_uri  # as training decides (no torch import)

    uri = tracking_uri(cfg.get("tracking_uri"), str(cfg["paths"]["mlflow_dir"]))
    register = cfg.get("register")
    if register is not None:  # before MLflow is read
        _check_register(cfg, uri)
    if cfg.get("runs"):  # a paired comparison of two runs on the same test set
        from medpipe.evaluation.bootstrap import BootstrapSettings
        from medpipe.evaluation.paired_runs import compare_pair, render_paired

        refs = cfg["runs"]
        refs = [str(r) for r in ([refs] if isinstance(refs, str) else refs)]
        boot = cfg.get("bootstrap") or {}
        settings = BootstrapSettings(n=int(boot.get("n", 2000)), seed=int(boot.get("seed", 0)))
        text = render_paired(compare_pair(uri, refs, None, settings), fmt)
        sys.stdout.write(text)
        sys.stdout.flush()
        return text
    params = cfg.get("params")
    if isinstance(params, str):
        params = [params]
    sort = cfg.get("sort")
    comparison = compare_runs(
        uri,
        str(cfg["experiment_name"]),
        sweep=_raw_override("sweep", cfg.get("sweep")),
        sort=None if sort is None else str(sort),
        order=str(cfg.get("order") or "auto"),
        top=None if register is not None else cfg.get("top"),  # register: every candidate
        params=None if params is None else [str(p) for p in params],
        ignore_params=[str(p) for p in cfg.get("ignore_params") or []],
        metrics=_metrics(cfg.get("metrics")),
        cv=bool(cfg.get("cv", False)),
    )
    if register is not None:
        from medpipe.tracking.registry import register_best

        def note(text: str) -> None:
            print(f"medpipe: note: {text}", file=sys.stderr)

        text = register_best(comparison, str(register), cfg.get("alias"), note).line() + "\n"
    else:
        text = render(comparison, fmt)
    sys.stdout.write(text)
    sys.stdout.flush()
    return text


def _check_register(cfg: Mapping[str, Any], uri: str) -> None:
    """register=: the name and alias, what it combines with and the store, before MLflow is read."""
    from medpipe.tracking.registry import name_problems, store_problem

    problems = name_problems(cfg.get("register"), cfg.get("alias"))
    if cfg.get("runs"):
        problems.append("register: registers the best run of a listing; not with runs= (a pair)")
    if cfg.get("cv"):
        problems.append(
            "register: cv=true lists cross-validation parents, which log no model; without it "
            "their folds are the candidates"
        )
    if not problems and (problem := store_problem(uri)):
        problems.append(problem)
    if problems:
        raise ConfigError(problems)


def main() -> str | None:
    sys.argv[1:] = [_alias(a) for a in sys.argv[1:]]
    return _compare()


if __name__ == "__main__":
    main()
