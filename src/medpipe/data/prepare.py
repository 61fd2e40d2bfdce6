"""Prepare a configured dataset into the processed format, once per distinct source and options."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medpipe.data.processed import (
    FORMAT_VERSION,
    SPLITS,
    DatasetMeta,
    Split,
    channel_stats,
    class_counts,
    fingerprint,
    read_meta,
    write_processed,
)
from medpipe.data.sources import SourceData, make_source
from medpipe.errors import DataError

if TYPE_CHECKING:
    from medpipe.privacy.hashing import IdHasher

log = logging.getLogger(__name__)


def prepare_dataset(
    data_cfg: dict[str, Any],
    processed_dir: str,
    raw_dir: str,
    out: str | None = None,
    force: bool = False,
    tracking_uri: str | None = None,
    privacy: Mapping[str, Any] | None = None,
) -> Path:
    """Return the processed folder for `data_cfg`, building it if missing or out of date.

    The folder is named <data.name>-<fingerprint>: the fingerprint hashes the source options and
    input file contents, so a changed file or option gives a new folder and sweeps never collide.
    `data.train_fraction` and `data.synthetic` reshape the training split only (TrainingMix) and
    enter the fingerprint when set; `tracking_uri`: the store `runs:/` generators are read from.
    `privacy`: a config's privacy section; with `hash_ids: true` the record ids are stored as
    salted hashes (medpipe.privacy.hashing) and the salt's id enters the fingerprint.
    """
    from medpipe.privacy.hashing import hasher_of

    hasher = hasher_of(privacy)  # a salt problem is one line, before any file is read
    source = make_source(data_cfg, raw_dir)
    source.processed_dir, source.tracking_uri = processed_dir, tracking_uri
    source.hasher, source.privacy = hasher, dict(privacy or {})
    mix = TrainingMix(data_cfg, tracking_uri)
    desc = {"format_version": FORMAT_VERSION, **source.describe(), **mix.describe()}
    if hasher is not None:  # absent when off: folders prepared before keep their fingerprint
        desc.update(hasher.describe())
    fp = fingerprint(desc)
    folder = Path(out) if out else Path(processed_dir) / f"{data_cfg['name']}-{fp[:12]}"
    if not force and (folder / "meta.json").exists():
        try:
            if read_meta(folder).fingerprint == fp:
                return folder
        except DataError:
            pass
    log.info("preparing %s into %s", data_cfg["name"], folder)
    Path(processed_dir).mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{data_cfg['name']}-staging-", dir=processed_dir)
    try:
        source.staging_dir = staging
        data = source.load()
        if hasher is not None:
            hash_ids(data, hasher, staging)
        return _write(data, data_cfg, mix, folder, fp, desc, staging, force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def hash_ids(data: SourceData, hasher: IdHasher, staging: str | None = None) -> None:
    """Replace every split's record ids by their salted hashes, before anything is written (a
    staged `<split>_ids.npy` is dropped: the hashed array is saved instead). One id gets one hash
    in every split, so windows of one record still group together. Generated samples that a
    training mix appends afterwards keep their `synthetic-<i>` ids: they identify no one."""
    for split, part in data.splits.items():
        if part.ids is None:
            continue
        part.ids = hasher.array(np.asarray(part.ids))
        if staging is not None:
            (Path(staging) / f"{split}_ids.npy").unlink(missing_ok=True)


def _write(
    data: SourceData,
    data_cfg: dict[str, Any],
    mix: TrainingMix,
    folder: Path,
    fp: str,
    desc: dict[str, Any],
    staging: str,
    force: bool = False,
) -> Path:
    mix.apply(data, data_cfg["name"])
    x0 = data.splits["train"].x
    n_classes = len(data.classes)
    if data.stats is not None:
        mean, std = data.stats
    else:
        mean, std = channel_stats(np.asarray(x0), data.scale, data.splits["train"].lengths)
    if (data.info.get("missing") or {}).get("mask_channel") == "last":
        # a signal's observation mask (preprocess.missing=zero_and_mask) stays 0/1 when normalised
        mean, std = [*mean[:-1], 0.0], [*std[:-1], 1.0]
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
    return write_processed(folder, data.splits, meta, move_from=staging, force=force)


def prepare_from_config(c: dict[str, Any]) -> Path:
    """prepare_dataset for a resolved train/prepare config; numpy only."""
    return prepare_dataset(
        c["data"],
        c["paths"]["processed_dir"],
        c["paths"]["raw_dir"],
        out=c.get("out"),
        force=bool(c.get("force")),
        tracking_uri=runs_tracking_uri(c),
        privacy=c.get("privacy"),
    )


def runs_tracking_uri(c: dict[str, Any]) -> str | None:
    """The MLflow store that `runs:/` generator references of the data config are read from: the
    one a training logs to (logger.mlflow.tracking_uri, $MLFLOW_TRACKING_URI, else the store under
    paths.mlflow_dir). None when the data names no run (nothing is created then)."""
    data = c["data"]
    refs = [data.get("generator"), (data.get("synthetic") or {}).get("generator")]
    if not any(str(r).startswith("runs:/") for r in refs if r):
        return None
    from medpipe.tracking.store import tracking_uri

    mlflow = (c.get("logger") or {}).get("mlflow") or {}
    return tracking_uri(mlflow.get("tracking_uri"), c["paths"]["mlflow_dir"])


def stratified_rows(y: np.ndarray, task: str, fraction: float, seed: int) -> np.ndarray:
    """Ascending row indices of a seeded `fraction` of a split: of class labels, fraction * n_c
    rows of every class c (rounded half up, at least one); of other targets, of all rows alike."""
    rng = np.random.default_rng(int(seed))
    labels = np.asarray(y).astype(np.int64) if task in ("binary", "multiclass") else None
    groups = (
        [np.flatnonzero(labels == c) for c in np.unique(labels)]
        if labels is not None
        else [np.arange(len(y))]
    )
    keep = [
        rng.choice(rows, max(1, int(np.floor(fraction * len(rows) + 0.5))), replace=False)
        for rows in groups
    ]
    return np.sort(np.concatenate(keep))


class TrainingMix:
    """What `data.train_fraction` and `data.synthetic` make of a source's loaded training split:
    first a seeded, stratified fraction of its real rows (kept in their order), then generated
    samples appended after them. Validation and test splits are never touched."""

    def __init__(self, data_cfg: dict[str, Any], tracking_uri: str | None = None):
        f = data_cfg.get("train_fraction")
        self.fraction = None if f is None or float(f) >= 1 else float(f)  # 1: every row
        self.fraction_seed = int(data_cfg.get("train_fraction_seed") or 0)
        syn = data_cfg.get("synthetic") or {}
        self.synthetic = dict(syn) if syn.get("generator") else None
        self.generator = None
        if self.synthetic:  # read now: its checkpoint's hash is part of the fingerprint
            from medpipe.data.generated import open_generator

            key = "data.synthetic.generator"
            self.generator = open_generator(str(syn["generator"]), key, tracking_uri)

    def describe(self) -> dict[str, Any]:
        """The fingerprint's part: nothing when neither is set (the folder stays the source's)."""
        out: dict[str, Any] = {}
        if self.fraction is not None:
            out["train_fraction"], out["train_fraction_seed"] = self.fraction, self.fraction_seed
        if self.synthetic and self.generator is not None:
            s = self.synthetic
            out["synthetic"] = {
                "generator_sha256": self.generator.sha256,
                "per_class": s.get("per_class"),
                "balance": bool(s.get("balance")),
                "seed": int(s.get("seed") or 0),
            }
        return out

    def apply(self, data: SourceData, name: str) -> None:
        """Reshape data.splits["train"] and record in data.info what it holds."""
        if self.fraction is None and self.generator is None:
            return
        from medpipe.data.generated import MIX_STREAM

        train, info = data.splits["train"], {}
        if self.fraction is not None:
            info["real_train_available"] = len(train)
            rows = stratified_rows(train.y, data.task, self.fraction, self.fraction_seed)
            train = train.take(rows)
        info["real_train_samples"] = len(train)
        gen, s = self.generator, self.synthetic or {}
        if gen is not None:
            if problem := gen.misfit(name, data.task, data.classes, np.asarray(train.x[:1])):
                raise DataError(problem)
            real = class_counts(train.y, data.task, len(data.classes))
            per_class = s.get("per_class")
            counts = [int(per_class)] * len(real) if per_class else [max(real) - c for c in real]
            x, y = gen.sample(counts, int(s.get("seed") or 0), MIX_STREAM)
            if self.fraction is not None and gen.bundle.meta.sizes.get("train", 0) > len(train):
                log.warning(
                    "%s learnt from %d real training samples, this training split keeps %d: its "
                    "samples carry information from the rows left out",
                    gen.ref,
                    gen.bundle.meta.sizes["train"],
                    len(train),
                )
            # a generated image's lesion extent is unknown: the mixed training split has no masks
            ids = None
            if train.ids is not None:
                ids = np.concatenate([train.ids, [f"synthetic-{i}" for i in range(len(y))]])
            train = Split(np.concatenate([train.x, x]), np.concatenate([train.y, y]), ids=ids)
            info.update(
                synthetic_generator_sha256=gen.sha256,
                synthetic_generator_real_train=int(gen.bundle.meta.sizes.get("train", 0)),
                synthetic_counts={"train": counts},
                synthetic_samples=int(sum(counts)),
            )
        data.splits["train"] = train
        data.stats = None  # the training split changed: its statistics are computed again
        data.info.update(info)


MIX_TAGS = (
    "train_fraction",
    "real_train_samples",
    "synthetic_samples",
    "synthetic_generator_sha256",
)


def mix_tags(meta: DatasetMeta) -> dict[str, str]:
    """MLflow tags `data.<key>` saying how a training split was made, where it is a fraction of
    the real one or holds generated samples (gan_samples data, data.synthetic)."""
    return {f"data.{k}": str(meta.source[k]) for k in MIX_TAGS if meta.source.get(k) is not None}
