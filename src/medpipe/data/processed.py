"""medpipe's one processed format, which every source writes and training reads.

A processed dataset is a folder holding, per split (train, val, test), `<split>_x.npy` (samples,
channels first: image (N,C,H,W), volume (N,C,D,H,W), signal (N,C,T), frames (N,C,T,H,W): a frame
sequence is stored like a volume whose depth axis is time),
`<split>_y.npy` (int64 class indices (N,), float32 multi-hot (N,K) or float32 targets) and, for
padded sequences, `<split>_lengths.npy`; plus `meta.json` with the task, class names, sample kind,
per-channel intensity statistics of the training split and the hashes that tie it to its source.

Two optional per-split arrays, for the sources that have them: `<split>_mask.npy`, uint8 of one
sample's spatial shape per sample ((N, H, W) for images, (N, D, H, W) for volumes): 1 inside the
region that makes the sample positive (a known lesion), all 0 for negatives; explanations are
checked against it (medpipe.evaluation.explain). `<split>_ids.npy`, the record ids (a numpy unicode
array (N,)). Both enter the content hash like the other arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medpipe.errors import DataError

SPLITS = ("train", "val", "test")
TASKS = ("binary", "multiclass", "multilabel", "regression")
KINDS = ("image", "volume", "signal", "frames")
FORMAT_VERSION = 1
OPTIONAL = ("lengths", "mask", "ids")  # per-split arrays only some sources have


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray | None = None
    mask: np.ndarray | None = None  # uint8 (N, *spatial): 1 on the region that makes it positive
    ids: np.ndarray | None = None  # record ids, unicode (N,)

    def __len__(self) -> int:
        return len(self.x)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays present, by file key (x, y, and lengths, mask, ids where present)."""
        out = {"x": self.x, "y": self.y}
        out.update({k: v for k in OPTIONAL for v in [getattr(self, k)] if v is not None})
        return out

    def take(self, rows: np.ndarray) -> Split:
        """The samples at `rows` (indices or a boolean mask), every array alike."""
        return Split(
            **{k: None if v is None else np.asarray(v)[rows] for k, v in vars(self).items()}
        )


@dataclass
class DatasetMeta:
    name: str
    task: str
    kind: str
    classes: list[str]
    channels: int
    sample_shape: list[int]  # one sample, channels first
    sizes: dict[str, int]
    class_counts: dict[str, list[int]]
    mean: list[float]  # per channel, of train x scaled by `scale`
    std: list[float]
    scale: float  # x / scale maps the stored dtype to [0, 1] (255 for uint8)
    fingerprint: str  # hash of the source and the options that made this folder
    content_sha256: str = ""  # hash of the array files
    source: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    score_classes: list[str] = field(default_factory=list)  # classes a challenge F1 averages
    target_mean: float = 0.0  # regression: train target mean and std (the net learns z-scores)
    target_std: float = 1.0

    @property
    def num_outputs(self) -> int:
        """Size of a network's output for this task (2 logits for binary cross-entropy)."""
        return 1 if self.task == "regression" else len(self.classes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetMeta:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def fingerprint(obj: Any) -> str:
    """A stable hash of a JSON-serialisable description (source options, file hashes)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def channel_stats(
    x: np.ndarray, scale: float, lengths: np.ndarray | None = None
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of x / scale, over every axis except the channel axis (1); for
    padded sequences (N, C, T) with `lengths`, over the valid samples only."""
    xs = x.astype(np.float64) / scale
    if lengths is not None and xs.ndim == 3:
        valid = np.arange(xs.shape[2])[None, :] < np.asarray(lengths)[:, None]  # (N, T)
        xs = xs.transpose(1, 0, 2)[:, valid]  # (C, n_valid)
        axes: tuple[int, ...] = (1,)
        mean, std = xs.mean(axis=axes), xs.std(axis=axes)
    else:
        axes = tuple(i for i in range(x.ndim) if i != 1)
        mean, std = xs.mean(axis=axes), xs.std(axis=axes)
    std = np.where(std > 0, std, 1.0)
    return [float(v) for v in mean], [float(v) for v in std]


def class_counts(y: np.ndarray, task: str, n_classes: int) -> list[int]:
    if task in ("binary", "multiclass"):
        return [int(c) for c in np.bincount(y.astype(np.int64), minlength=n_classes)]
    if task == "multilabel":
        return [int(c) for c in y.sum(axis=0)]
    return []


class ChannelSums:
    """Per-channel mean and std of samples added one at a time (channel_stats without holding
    the split): exact integer sums for integer samples, float64 otherwise."""

    def __init__(self, channels: int):
        self.n = 0
        self.sums = [0] * channels
        self.squares = [0] * channels

    def add(self, sample: np.ndarray) -> None:
        flat = sample.reshape(sample.shape[0], -1)
        wide = flat.astype(np.int64 if np.issubdtype(flat.dtype, np.integer) else np.float64)
        for c in range(len(self.sums)):
            self.sums[c] += wide[c].sum().item()
            self.squares[c] += np.square(wide[c]).sum().item()
        self.n += flat.shape[1]

    def stats(self, scale: float) -> tuple[list[float], list[float]]:
        n = max(self.n, 1)
        mean = [s / n / scale for s in self.sums]
        var = [max(q / n / scale**2 - m * m, 0.0) for q, m in zip(self.squares, mean, strict=True)]
        return mean, [float(np.sqrt(v)) if v > 0 else 1.0 for v in var]


class NpyWriter:
    """A `.npy` file of known shape written one sample at a time (a folder of files streams into
    it: memory holds one sample, whatever the dataset's size). `close()` checks the count."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        self.count = 0
        self._f = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        np.lib.format.write_array_header_2_0(self._f, {**header, "shape": self.shape})

    def write(self, sample: np.ndarray) -> None:
        if sample.shape != self.shape[1:]:
            raise ValueError(f"sample of shape {sample.shape}, expected {self.shape[1:]}")
        self._f.write(np.ascontiguousarray(sample, dtype=self.dtype).tobytes())
        self.count += 1

    def discard(self) -> None:
        """Close and delete the file (its source failed part-way)."""
        self._f.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        self._f.close()
        if self.count != self.shape[0]:
            raise ValueError(f"{self.path}: {self.count} samples written, {self.shape[0]} declared")


def write_processed(
    out_dir: str | os.PathLike,
    splits: dict[str, Split],
    meta: DatasetMeta,
    move_from: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Write a processed dataset atomically: a temporary folder renamed into place.

    `move_from`: a staging folder whose `<split>_<key>.npy` files (written there by a streaming
    source) are moved instead of saved again. A concurrent writer that finishes first wins; the
    loser's copy is discarded (same content), and a complete folder of the same fingerprint is
    never replaced (parallel jobs may be reading it already) unless `force` (prepare force=true).
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        h = hashlib.sha256()
        for split in SPLITS:
            for key, arr in splits[split].arrays().items():
                path = tmp / f"{split}_{key}.npy"
                staged = Path(move_from) / path.name if move_from else None
                if staged is not None and staged.is_file():
                    shutil.move(staged, path)
                else:
                    np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
                h.update(path.name.encode())
                h.update(sha256_file(path).encode())
        meta.content_sha256 = h.hexdigest()
        (tmp / "meta.json").write_text(meta.to_json())
        if not force and _complete(out, meta.fingerprint):
            return out
        if out.exists():  # an older or unfinished folder of that name
            shutil.rmtree(out, ignore_errors=True)
        try:
            os.replace(tmp, out)
        except OSError:  # another writer put its (identical) folder there first
            if not _complete(out, meta.fingerprint):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _complete(folder: Path, fingerprint: str) -> bool:
    """Whether `folder` holds a finished processed dataset of that fingerprint."""
    try:
        return read_meta(folder).fingerprint == fingerprint
    except DataError:
        return False


def read_meta(folder: str | os.PathLike) -> DatasetMeta:
    path = Path(folder) / "meta.json"
    try:
        return DatasetMeta.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise DataError(
            f"{path}: no processed dataset here (run python -m medpipe.prepare)"
        ) from None
    except (json.JSONDecodeError, TypeError) as err:
        raise DataError(f"{path}: unreadable dataset metadata ({err})") from None


def read_split(folder: str | os.PathLike, split: str, mmap: bool = True) -> Split:
    folder = Path(folder)
    mode = "r" if mmap else None
    try:
        x = np.load(folder / f"{split}_x.npy", mmap_mode=mode, allow_pickle=False)
        y = np.load(folder / f"{split}_y.npy", allow_pickle=False)
    except (FileNotFoundError, ValueError) as err:
        raise DataError(
            f"{folder}: processed split '{split}' is missing or corrupt ({err})"
        ) from None
    optional = {}
    for key in OPTIONAL:  # lengths, mask, ids: where the source wrote them
        path = folder / f"{split}_{key}.npy"
        if path.exists():
            optional[key] = np.load(path, allow_pickle=False)
    return Split(x, y, **optional)


def pooled_split(folder: str | os.PathLike) -> Split:
    """Every sample of a processed dataset, train then val then test (cross-validation pools).
    An optional array (lengths, mask, ids) is kept when every split has it."""
    parts = [read_split(folder, s, mmap=False) for s in SPLITS]
    optional = {
        key: np.concatenate([getattr(p, key) for p in parts])
        for key in OPTIONAL
        if all(getattr(p, key) is not None for p in parts)
    }
    return Split(
        np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]), **optional
    )


def pooled_labels(folder: str | os.PathLike) -> np.ndarray:
    """The labels of pooled_split, without reading the samples."""
    return np.concatenate([read_split(folder, s, mmap=True).y for s in SPLITS])


def pooled_ids(folder: str | os.PathLike) -> np.ndarray | None:
    """The record ids of pooled_split (None unless every split has them)."""
    ids = [read_split(folder, s, mmap=True).ids for s in SPLITS]
    return None if any(i is None for i in ids) else np.concatenate(ids)
