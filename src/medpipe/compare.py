"""Compare MLflow runs:  python -m medpipe.compare experiment=NAME [sweep=ID|latest] [sort=KEY]
[order=auto|desc|asc] [top=N] [format=table|md|csv].

Prints the runs of an experiment, or the child runs of one sweep, with the parameters that differ
between them and their main metrics, sorted by `sort`.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from medpipe.entry import hydra_entry
from medpipe.errors import ConfigError


def _alias(arg: str) -> str:
    """`experiment=NAME` names the MLflow experiment here (conf/experiment/ is train's group)."""
    for prefix in ("experiment=", "+experiment="):
        if arg.startswith(prefix):
            return "experiment_name=" + arg.removeprefix(prefix)
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


@hydra_entry("compare")
def _compare(cfg: DictConfig) -> str:
    from medpipe.evaluation.compare_runs import FORMATS, compare_runs, render

    if cfg.format not in FORMATS:
        raise ConfigError(f"format: '{cfg.format}' is not one of {', '.join(FORMATS)}")
    from medpipe.tracking.store import tracking_uri  # as training decides (no torch import)

    uri = tracking_uri(cfg.get("tracking_uri"), str(cfg.paths.mlflow_dir))
    params = cfg.get("params")
    if isinstance(params, str):
        params = [params]
    comparison = compare_runs(
        uri,
        str(cfg.experiment_name),
        sweep=_raw_override("sweep", cfg.sweep),
        sort=str(cfg.sort),
        order=str(cfg.order),
        top=cfg.top,
        params=None if params is None else [str(p) for p in params],
        ignore_params=[str(p) for p in cfg.get("ignore_params") or []],
        metrics=[str(m) for m in cfg.metrics],
        cv=bool(cfg.get("cv", False)),
    )
    text = render(comparison, str(cfg.format))
    sys.stdout.write(text)
    sys.stdout.flush()
    return text


def main() -> str | None:
    sys.argv[1:] = [_alias(a) for a in sys.argv[1:]]
    return _compare()


if __name__ == "__main__":
    main()
