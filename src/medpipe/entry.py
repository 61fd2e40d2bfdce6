"""Shared wrapper for the Hydra entry points: validate first, report user errors in one line each."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from medpipe.errors import MedpipeError
from medpipe.paths import conf_dir, export_root


def report_and_exit(err: MedpipeError, code: int = 2) -> None:
    for line in err.lines():
        print(f"medpipe: error: {line}", file=sys.stderr)
    sys.exit(code)


def hydra_entry(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Turn `fn(cfg)` into a Hydra app reading conf/<config_name>.yaml.

    The config is validated (without importing torch) before `fn` runs; any MedpipeError raised
    by validation or by `fn` is printed as one line per problem and exits with status 2.
    """

    def decorate(fn: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        def task(cfg: DictConfig) -> Any:
            from medpipe.config import validate

            try:
                validate(cfg, config_name)
                return fn(cfg)
            except MedpipeError as err:
                report_and_exit(err)

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
            app = hydra.main(config_path=str(folder), config_name=config_name, version_base="1.3")
            return app(task)()

        main.__doc__ = fn.__doc__
        return main

    return decorate
