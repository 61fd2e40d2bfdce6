"""The run a training config describes, from Python or from `medpipe.train`: prepare the data,
check the config against it and the registries, then one training or a cross-validation.

The pieces live by concern: medpipe.building (DataModule, task, callbacks), medpipe.training
(one run), medpipe.crossval (k folds), medpipe.evaluating (a checkpoint), medpipe.outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medpipe.building import build_datamodule, build_task, resolve_loader
from medpipe.checks import check_run
from medpipe.config import validate
from medpipe.crossval import cross_validate
from medpipe.data.prepare import prepare_from_config
from medpipe.data.processed import read_meta
from medpipe.evaluating import evaluate, load_checkpoint
from medpipe.resuming import Resume
from medpipe.tasks.kinds import TaskKind
from medpipe.training import train_once

__all__ = [
    "build_datamodule",
    "build_task",
    "evaluate",
    "load_checkpoint",
    "resolve_loader",
    "train",
]


def train(
    cfg: DictConfig | dict[str, Any],
    folder: Path | None = None,
    kind: TaskKind | None = None,
    resume: Resume | None = None,
) -> float:
    """Fit, test the best checkpoint, write outputs and track the run. Returns the best monitor
    value (for sweepers); with cv.folds >= 2, every fold in turn, and the mean over folds.

    `medpipe.train` passes the resolved, checked config with its prepared `folder` and `kind`;
    from Python a composed DictConfig is enough (validated, prepared and checked here).
    `resume`: continue that run (medpipe.resuming.resume_config made `cfg` from its folder)."""
    if kind is None or folder is None or isinstance(cfg, DictConfig):
        c = validate(cfg)
        folder = folder or prepare_from_config(c)
        c, kind = check_run(c, read_meta(folder))
    else:
        c = cfg
    if int((c.get("cv") or {}).get("folds") or 0) >= 2:
        return cross_validate(c, kind, folder, resume)
    return train_once(c, kind, folder, resume=resume)[0]
