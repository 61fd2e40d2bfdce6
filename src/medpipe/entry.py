"""Shared wrapper for the Hydra entry points: validate first, report user errors in one line each."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from medpipe.errors import ConfigError, MedpipeError
from medpipe.paths import conf_dir, export_root


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - outside a Hydra app
        return False


def report_and_exit(err: MedpipeError, code: int = 2) -> None:
    for line in err.lines():
        print(f"medpipe: error: {line}", file=sys.stderr)
    sys.exit(code)


def check_group_choices(folder: Path, argv: list[str]) -> list[str]:
    """One line per `group=option` override naming a config file that does not exist.

    Hydra reports these itself, but over several lines with its search path; this says it in one.
    """
    problems = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.lstrip("+~").split("=", 1)
        group = folder / key.replace(".", "/")
        if key.startswith("hydra") or not group.is_dir() or "(" in value or not value:
            continue
        options = sorted(p.stem for p in group.glob("*.yaml"))
        for choice in value.split(","):
            if choice and choice != "null" and choice not in options:
                problems.append(
                    f"{key}={choice}: no such option in {group}; choose one of {', '.join(options)}"
                )
    return problems


def hydra_entry(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Turn `fn(cfg)` into a Hydra app reading conf/<config_name>.yaml.

    The config is validated (without importing torch) before `fn` runs; any MedpipeError raised
    by validation or by `fn` is printed as one line per problem and exits with status 2.
    """

    def decorate(fn: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        def task(cfg: DictConfig) -> Any:
            from medpipe.config import validate
            from medpipe.tracking import store

            store.CURRENT["run_id"] = None
            sweeping = _in_multirun()
            try:
                validate(cfg, config_name)
                return fn(cfg)
            except Exception as err:
                if not sweeping:
                    if isinstance(err, MedpipeError):
                        report_and_exit(err)
                    raise
                # In a sweep a failed job is recorded (FAILED in MLflow) and the sweep goes on.
                if isinstance(err, MedpipeError):
                    for line in err.lines():
                        print(f"medpipe: error: {line}", file=sys.stderr)
                else:
                    traceback.print_exc()
                if config_name == "train" and store.CURRENT["run_id"] is None:
                    store.record_failed_job(cfg, err)
                return float("nan")

        def main() -> Any:
            export_root()
            folder = conf_dir()
            if not (folder / f"{config_name}.yaml").is_file():
                print(
                    f"medpipe: error: config folder {folder} has no {config_name}.yaml; "
                    "install medpipe editable from its checkout (make install) or set MEDPIPE_CONF",
                    file=sys.stderr,
                )
                sys.exit(2)
            if problems := check_group_choices(folder, sys.argv[1:]):
                report_and_exit(ConfigError(problems))
            app = hydra.main(config_path=str(folder), config_name=config_name, version_base="1.3")
            return app(task)()

        main.__doc__ = fn.__doc__
        return main

    return decorate
