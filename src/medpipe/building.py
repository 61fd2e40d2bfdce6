"""Build the pieces a resolved config describes: the DataModule, the task (its net inside), the
callbacks and the Trainer. Nothing here trains or tracks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only

from medpipe.callbacks import CtrlC, FitOnTrainingSplit, HistoryWriter, progress_callbacks
from medpipe.checks import check_run, task_options
from medpipe.data.augment_ops import device_misfit, on_device
from medpipe.data.batch_augment import BatchAugment
from medpipe.data.datamodule import MedDataModule
from medpipe.data.loader_choice import (
    POOL_KEYS,
    DeviceMemory,
    LoaderChoice,
    array_bytes,
    choose_loader,
    host_memory,
    pool_problem,
    training_memory,
)
from medpipe.data.prepare import prepare_dataset
from medpipe.data.processed import SPLITS, DatasetMeta, read_meta
from medpipe.data.transforms import SignalChannelsOnly, build_transforms, has_mask_channel
from medpipe.errors import ConfigError
from medpipe.models.nets.registry import net_class
from medpipe.resuming import last_checkpoint_callback
from medpipe.tasks.base import MedTask
from medpipe.tasks.kinds import TaskKind


def resolve_loader(loader: str, augmentation_ops: list) -> str:
    """auto: the in-memory path unless a transform has no batched on-device version (the
    augmentation's rule only; build_datamodule also weighs the free memory: choose_data_loader)."""
    if loader == "auto":
        return "memory" if on_device(augmentation_ops) else "workers"
    return loader


def choose_data_loader(
    c: dict[str, Any], folder: Path, cv: bool = False, splits: tuple[str, ...] = SPLITS
) -> LoaderChoice:
    """`data.loader` for the processed data in `folder`, from the augmentation and the free memory
    of the device `c["trainer"]` trains on (medpipe.data.loader_choice); reads only .npy headers.
    `splits`: those the run holds; `cv`: the DataModule pools every split in host RAM, which must
    fit too. Raises ConfigError (one line) when data.loader=memory, or the pool, cannot fit."""
    data = c["data"]
    share = float(data.get("memory_share", 0.5))
    if cv:
        pooled = array_bytes(folder, SPLITS, POOL_KEYS)
        if problem := pool_problem(pooled, host_memory(), share):
            raise ConfigError(problem)
    requested = data.get("loader", "auto")
    ops = list((c.get("augmentation") or {}).get("train") or [])
    misfits = [m for m in map(device_misfit, ops) if m is not None]
    measured = requested == "memory" or (requested == "auto" and not misfits)
    memory = training_memory(c.get("trainer") or {}) if measured else DeviceMemory(None)
    return choose_loader(requested, array_bytes(folder, splits), memory, share, misfits)


def build_datamodule(
    c: dict[str, Any],
    seed: int,
    folder: Path | None = None,
    folds: dict[str, np.ndarray] | None = None,
    splits: tuple[str, ...] = SPLITS,
) -> MedDataModule:
    """`folder`: the processed data when the caller has prepared it already (else prepared here);
    `folds`: row indices of each split into the pooled data (cross-validation); `splits`: those
    the caller will read (what must fit in memory for the in-memory path). Prints which loading
    path it takes and why, before anything is read."""
    data = c["data"]
    if folder is None:
        folder = prepare_dataset(data, c["paths"]["processed_dir"], c["paths"]["raw_dir"])
    ops = list((c.get("augmentation") or {}).get("train") or [])
    choice = choose_data_loader(c, folder, cv=folds is not None, splits=splits)
    if rank_zero_only.rank == 0:
        print(choice.line())
    loader = choice.loader
    transform = None
    if loader == "workers":  # MONAI lists are tried once on the data's sample shape here
        meta = read_meta(folder)
        shape = list(meta.sample_shape)
        masked = has_mask_channel(meta.source)
        if masked:  # the observation mask is not augmented
            shape[0] -= 1
        transform = build_transforms(ops, seed, data["kind"], shape)
        if masked and transform is not None:
            transform = SignalChannelsOnly(transform)
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


def build_task(
    c: dict[str, Any], meta: DatasetMeta, kind: TaskKind | None = None, training: bool = False
) -> MedTask:
    """The task kind's LightningModule around the configured net. `kind`: from check_run (which
    is run here when the caller has not). `training`: for this run's training (with privacy.dp
    the net is made trainable by DP-SGD, or refused: medpipe.privacy.dp.private_net); else to
    load a checkpoint of it."""
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
    if (c.get("privacy") or {}).get("dp"):
        from medpipe.privacy.dp import private_net

        net = private_net(net, bool(c["privacy"].get("fix_layers", True)), training)
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
    # last.ckpt every epoch, whatever the monitored checkpoint does (medpipe.resuming)
    last = last_checkpoint_callback(Path(out_dir))
    fit = FitOnTrainingSplit()  # nets fitted in one pass before training (MiniRocket)
    return [CtrlC(), fit, *callbacks, *progress, history, last], bar, history
