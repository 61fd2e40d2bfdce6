"""Prepare a configured dataset into the processed format, once per distinct source and options."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from medpipe.data.processed import (
    FORMAT_VERSION,
    SPLITS,
    DatasetMeta,
    channel_stats,
    class_counts,
    fingerprint,
    read_meta,
    write_processed,
)
from medpipe.data.sources import make_source
from medpipe.errors import DataError

log = logging.getLogger(__name__)


def prepare_dataset(
    data_cfg: dict[str, Any],
    processed_dir: str,
    raw_dir: str,
    out: str | None = None,
    force: bool = False,
) -> Path:
    """Return the processed folder for `data_cfg`, building it if missing or out of date.

    The folder is named <data.name>-<fingerprint>: the fingerprint hashes the source options and
    input file contents, so a changed file or option gives a new folder and sweeps never collide.
    """
    source = make_source(data_cfg, raw_dir)
    desc = {"format_version": FORMAT_VERSION, **source.describe()}
    fp = fingerprint(desc)
    folder = Path(out) if out else Path(processed_dir) / f"{data_cfg['name']}-{fp[:12]}"
    if not force and (folder / "meta.json").exists():
        try:
            if read_meta(folder).fingerprint == fp:
                return folder
        except DataError:
            pass
    log.info("preparing %s into %s", data_cfg["name"], folder)
    data = source.load()
    x0 = data.splits["train"].x
    n_classes = len(data.classes)
    mean, std = channel_stats(np.asarray(x0), data.scale, data.splits["train"].lengths)
    meta = DatasetMeta(
        name=data_cfg["name"],
        task=data.task,
        kind=data.kind,
        classes=list(data.classes),
        channels=int(x0.shape[1]),
        sample_shape=[int(v) for v in x0.shape[1:]],
        sizes={s: len(data.splits[s]) for s in SPLITS},
        class_counts={s: class_counts(data.splits[s].y, data.task, n_classes) for s in SPLITS},
        mean=mean,
        std=std,
        scale=data.scale,
        fingerprint=fp,
        source={**desc, **data.info},
        score_classes=list(data.score_classes),
    )
    if data.task == "regression":
        y = np.asarray(data.splits["train"].y, dtype=np.float64)
        meta.target_mean = float(y.mean())
        meta.target_std = float(y.std()) or 1.0
    for s in SPLITS:
        if data.splits[s].x.shape[1:] != x0.shape[1:]:
            raise DataError(
                f"{data_cfg['name']}: split '{s}' has samples of shape {data.splits[s].x.shape[1:]}, "
                f"train has {x0.shape[1:]}"
            )
    return write_processed(folder, data.splits, meta)


def prepare_from_config(c: dict[str, Any]) -> Path:
    """prepare_dataset for a resolved train/prepare config; numpy only."""
    return prepare_dataset(
        c["data"],
        c["paths"]["processed_dir"],
        c["paths"]["raw_dir"],
        out=c.get("out"),
        force=bool(c.get("force")),
    )
