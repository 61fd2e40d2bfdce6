"""Build the pieces a resolved config describes: the DataModule, the task (its net inside), the
callbacks and the Trainer. Nothing here trains or tracks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
from hydra.utils import instantiate

from medpipe.callbacks import CtrlC, HistoryWriter, progress_callbacks
from medpipe.checks import check_run, task_options
from medpipe.data.augment_ops import on_device
from medpipe.data.batch_augment import BatchAugment
from medpipe.data.datamodule import MedDataModule
from medpipe.data.prepare import prepare_dataset
from medpipe.data.processed import DatasetMeta, read_meta
from medpipe.data.transforms import build_transforms
from medpipe.models.nets.registry import net_class
from medpipe.tasks.base import MedTask
from medpipe.tasks.kinds import TaskKind


def resolve_loader(loader: str, augmentation_ops: list) -> str:
    """auto: the in-memory path unless a transform has no batched on-device version."""
    if loader == "auto":
        return "memory" if on_device(augmentation_ops) else "workers"
    return loader


def build_datamodule(
    c: dict[str, Any],
    seed: int,
    folder: Path | None = None,
    folds: dict[str, np.ndarray] | None = None,
) -> MedDataModule:
    """`folder`: the processed data when the caller has prepared it already (else prepared here);
    `folds`: row indices of each split into the pooled data (cross-validation)."""
    data = c["data"]
    if folder is None:
        folder = prepare_dataset(data, c["paths"]["processed_dir"], c["paths"]["raw_dir"])
    ops = list((c.get("augmentation") or {}).get("train") or [])
    loader = resolve_loader(data.get("loader", "auto"), ops)
    transform = None
    if loader == "workers":  # MONAI lists are tried once on the data's sample shape here
        transform = build_transforms(ops, seed, data["kind"], read_meta(folder).sample_shape)
    batch_augment = BatchAugment(ops, seed) if loader == "memory" and ops else None
    return MedDataModule(
        folder,
        batch_size=int(data["batch_size"]),
        loader=loader,
        num_workers=int(data.get("num_workers", 0)),
        pin_memory=bool(data.get("pin_memory", False)),
        seed=seed,
        train_transform=transform,
        batch_augment=batch_augment,
        folds=folds,
    )


def build_task(c: dict[str, Any], meta: DatasetMeta, kind: TaskKind | None = None) -> MedTask:
    """The task kind's LightningModule around the configured net. `kind`: from check_run (which
    is run here when the caller has not)."""
    if kind is None:
        c, kind = check_run(c, meta)
    model = c["model"]
    options = kind.options.model_validate(task_options(model, kind))
    cls, _ = net_class(model["net"]["_target_"])
    net_options = {k: v for k, v in model["net"].items() if k != "_target_"}
    net = cls(  # type: ignore[misc]
        in_channels=meta.channels,
        num_outputs=kind.module.num_outputs(meta, options),
        spatial_shape=meta.sample_shape[1:],
        **net_options,
    )
    task = kind.module(
        net,
        meta,
        options=options,
        normalize=c["data"].get("normalize", "zscore"),
        optimizer=instantiate(c["optimizer"], _convert_="all"),
        scheduler=c["scheduler"],
        max_epochs=int(c["trainer"]["max_epochs"]),
        channels_last=bool(c.get("channels_last", False)),
        compile=c.get("compile", False),
    )
    task.run_config = c
    task.kind = kind
    return task


def build_callbacks(
    c: dict[str, Any], out_dir: Path
) -> tuple[list[L.Callback], bool, HistoryWriter]:
    callbacks = [
        instantiate(cb)
        for cb in (c.get("callbacks") or {}).values()
        if isinstance(cb, dict) and "_target_" in cb
    ]
    progress, bar = progress_callbacks((c.get("callbacks") or {}).get("progress_bar", "auto"))
    history = HistoryWriter(out_dir)
    return [CtrlC(), *callbacks, *progress, history], bar, history
