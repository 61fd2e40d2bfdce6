"""Shared wrapper for the Hydra entry points: validate first, report user errors in one line each."""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from medpipe.errors import ConfigError, MedpipeError
from medpipe.paths import conf_dir, export_root
from medpipe.registry import did_you_mean


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


def search_folders(folder: Path, argv: list[str]) -> list[Path]:
    """conf/ and the folders a `hydra.searchpath=[file://DIR,...]` override adds (your own
    configs, e.g. conf/model/my_net.yaml kept outside the checkout)."""
    folders = [folder]
    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        if key == "hydra.searchpath":
            for entry in value.strip("[]").split(","):
                if entry.strip().startswith("file://"):
                    folders.append(Path(entry.strip().removeprefix("file://")).expanduser())
    return folders


def check_group_choices(folder: Path, argv: list[str]) -> list[str]:
    """One line per `group=option` override naming a config file that does not exist.

    Hydra reports these itself, but over several lines with its search path; this says it in one.
    """
    problems = []
    folders = search_folders(folder, argv)
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.lstrip("+~").split("=", 1)
        group = folder / key.replace(".", "/")
        if key.startswith("hydra") or not group.is_dir() or "(" in value or not value:
            continue
        options = sorted(
            {p.stem for f in folders for p in (f / key.replace(".", "/")).glob("*.yaml")}
        )
        for choice in value.split(","):
            if choice and choice != "null" and choice not in options:
                problems.append(
                    f"{key}={choice}: no such option in {group}; choose one of {', '.join(options)}"
                )
    return problems


def _plain_overrides(argv: list[str], folder: Path) -> list[str]:
    """The overrides that choose config groups (first choice of a sweep list): enough to compose
    the config whose keys an unknown key is compared with."""
    out = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        if key.lstrip("+") == "hydra.searchpath":
            out.append(arg)
        elif (folder / key.lstrip("+~").replace(".", "/")).is_dir() and "(" not in value:
            out.append(f"{key}={value.split(',')[0]}")
    return out


def composition_problem(err: Exception, folder: Path, config_name: str) -> str:
    """One line for Hydra's composition error; an unknown key gets "did you mean"."""
    text = str(err)
    m = re.search(r"Could not override '([^']+)'", text)
    if not m:
        cause = err.__cause__ or err
        return " ".join(str(cause).split("\n")[0].split()) or type(err).__name__
    key = m.group(1)
    parent, _, name = key.rpartition(".")
    known: list[str] = []
    try:
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf

        with initialize_config_dir(str(folder), version_base="1.3"):
            cfg = compose(config_name, _plain_overrides(sys.argv[1:], folder))
        node = OmegaConf.select(cfg, parent) if parent else cfg
        known = [str(k) for k in node] if hasattr(node, "keys") else []
    except Exception:  # noqa: BLE001 - the hint is optional
        pass
    hint = f"; known: {', '.join(known)}" if known else ""
    return f"{key}: unknown key{did_you_mean(name, known)}{hint}"


def hydra_entry(config_name: str) -> Callable[[Callable[[dict], Any]], Callable[[], Any]]:
    """Turn `fn(c)` into a Hydra app reading conf/<config_name>.yaml; `c` is the composed config,
    resolved once and validated (without importing torch) before `fn` runs. Any MedpipeError raised
    by validation or by `fn` is printed as one line per problem and exits with status 2.
    """

    def decorate(fn: Callable[[dict], Any]) -> Callable[[], Any]:
        def task(cfg: DictConfig) -> Any:
            from medpipe.config import validate
            from medpipe.tracking import store

            store.CURRENT["run_id"] = None
            sweeping = _in_multirun()
            try:
                return fn(validate(cfg, config_name))  # resolved once, passed down as a dict
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
            # Hydra raises its composition errors (instead of printing them over several lines)
            # so that they become one line here; errors inside `task` are handled there.
            os.environ.setdefault("HYDRA_FULL_ERROR", "1")
            try:
                return app(task)()
            except (ConfigCompositionException, OmegaConfBaseException) as err:
                report_and_exit(ConfigError(composition_problem(err, folder, config_name)))
            except MedpipeError as err:  # e.g. a sweep callback's: an MLflow server away
                report_and_exit(err)
            except HydraException as err:  # e.g. a sweeper or launcher that cannot be set up
                cause = err
                while cause.__cause__ is not None:
                    cause = cause.__cause__
                report_and_exit(ConfigError(str(cause).strip().splitlines()[0]))

        main.__doc__ = fn.__doc__
        return main

    return decorate
