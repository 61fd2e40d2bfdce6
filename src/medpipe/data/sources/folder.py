"""Your own files: a folder of images (PNG, JPEG, TIFF, BMP, DICOM) or volumes (NIfTI, multi-frame
DICOM), labelled by class subfolders or by a labels table.

Layouts:
  class subfolders   <path>/<class>/**/<file>            (every supported file below a class)
  labels table       data.labels=labels.csv with columns file, label and optionally split
                     (train | val | test) and patient_id; files relative to data.path, or to the
                     table's folder when data.path is not set

Splits come from the table's split column, or are drawn (seeded, stratified by label) over
**patients**: every image of one patient goes to the same split, so a model is never tested on a
patient it has seen. The patient is the table's patient_id, else a DICOM file's PatientID (read
to group only; it is not stored anywhere), else the file.

Each file is read (medpipe.data.files), turned into uint8 samples of the configured shape and
written straight into the split's array file, one at a time: preparing a folder holds one sample
in memory, whatever the folder's size. The record ids are the files' paths relative to the root
(`<path>#<frame>` for the frames of a multi-frame image); under privacy.hash_ids=true they are
stored as salted hashes (medpipe.data.prepare, medpipe.privacy.hashing).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from medpipe.data.files import INTENSITY, InputSpec, dicom_frames, file_format, samples_of
from medpipe.data.processed import SPLITS, ChannelSums, NpyWriter, Split, fingerprint, sha256_file
from medpipe.data.sources.base import DataOptions, PosInt, Source, SourceData, register_source
from medpipe.data.sources.ecg import DEFAULT_SPLIT, Fractions, split_indices
from medpipe.errors import DataError

log = logging.getLogger(__name__)
TABLE_COLUMNS = ("file", "label", "split", "patient_id")


class FolderOptions(DataOptions):
    """Keys shared by data=image_folder and data=volume_folder."""

    kind: Literal["image", "volume"]
    path: str | None = None  # the folder (class subfolders, or the root the table's files are in)
    labels: str | None = None  # a CSV: file, label [, split] [, patient_id]
    task: Literal["auto", "binary", "multiclass", "regression"] = "auto"
    classes: list[str] | None = None  # class names in index order; null: sorted labels
    intensity: Literal[INTENSITY] = "auto"  # type: ignore[valid-type]
    window: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    split: Fractions = list(DEFAULT_SPLIT)
    seed: int = 0

    @model_validator(mode="after")
    def _check_folder(self):
        if not self.path and not self.labels:
            raise ValueError(
                "path: required: the folder of class subfolders, or give labels=<table.csv>"
            )
        if self.intensity == "window" and self.window is None:
            raise ValueError("window: required by intensity=window: [center, width]")
        if self.window is not None and self.window[1] <= 0:
            raise ValueError(f"window: width {self.window[1]} must be positive")
        if abs(sum(self.split) - 1) > 1e-6 or min(self.split) <= 0:
            raise ValueError(f"split: fractions {self.split} must be positive and sum to 1")
        return self


@dataclass
class Entry:
    file: Path
    label: str
    split: str | None
    group: str  # the patient (or the file): the unit a split is drawn over
    where: str  # for messages: the table line or the class folder


class FolderSource(Source):
    path_keys = {"path": True, "labels": False}
    Options = FolderOptions
    kind = "image"

    def __init__(self, cfg: dict[str, Any], raw_dir: str):
        super().__init__(cfg, raw_dir)
        self._entries: list[Entry] | None = None

    # -- the file list -------------------------------------------------------------------------
    def root(self) -> Path:
        if self.cfg.get("path"):
            return Path(str(self.cfg["path"])).expanduser().resolve()
        return Path(str(self.cfg["labels"])).expanduser().resolve().parent

    def spec(self) -> InputSpec:
        return input_spec(self.cfg)

    def entries(self) -> list[Entry]:
        if self._entries is None:
            rows = self._table() if self.cfg.get("labels") else self._subfolders()
            if not rows:
                raise DataError(f"data.path: no supported files under {self.root()}")
            self._entries = rows
        return self._entries

    def _subfolders(self) -> list[Entry]:
        root = self.root()
        classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise DataError(
                f"data.path: {root} has no class subfolders (<path>/<class>/<files>); or give a "
                "labels table, data.labels=labels.csv"
            )
        rows, skipped = [], []
        for folder in classes:
            files = sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p, root))
            found = [f for f in files if file_format(f) is not None]
            skipped += [f for f in files if file_format(f) is None]
            if not found:
                raise DataError(
                    f"data.path: class folder {folder} holds no supported files (images, "
                    "DICOM, NIfTI); remove it or add its files"
                )
            rows += [Entry(f, folder.name, None, "", f"class folder {folder.name}") for f in found]
        if skipped:
            log.warning(
                "%d files skipped (not images, DICOM or NIfTI), e.g. %s",
                len(skipped),
                self.shown(skipped[0].relative_to(root)),
            )
        return self._grouped(rows)

    def _table(self) -> list[Entry]:
        table = Path(str(self.cfg["labels"])).expanduser().resolve()
        root = self.root()
        try:
            with open(table, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                columns = [c.strip() for c in reader.fieldnames or []]
                missing = [c for c in ("file", "label") if c not in columns]
                if missing:
                    raise DataError(
                        f"{table}: no column {' or '.join(missing)} (has {', '.join(columns) or 'none'}); "
                        f"a labels table has columns {', '.join(TABLE_COLUMNS[:2])} and optionally "
                        f"{', '.join(TABLE_COLUMNS[2:])}"
                    )
                lines = [
                    (i, {k.strip(): (v or "").strip() for k, v in r.items() if k})
                    for i, r in enumerate(reader, 2)
                ]
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise DataError(f"{table}: unreadable labels table ({err})") from None
        rows = []
        for line, r in lines:
            where = f"{table}:{line}"
            if not r.get("file"):
                raise DataError(f"{where}: empty file name")
            path = (root / r["file"]).resolve()
            if not path.is_file():
                raise DataError(f"{where}: file not found: {path}")
            if file_format(path) is None:
                raise DataError(f"{where}: {path.name} is not an image, DICOM or NIfTI file")
            if not r.get("label"):
                raise DataError(f"{where}: empty label for {r['file']}")
            split = r.get("split") or None
            if split is not None and split not in SPLITS:
                raise DataError(f"{where}: split '{split}' is not one of {', '.join(SPLITS)}")
            rows.append(Entry(path, r["label"], split, r.get("patient_id") or "", where))
        given = {e.split is not None for e in rows}
        if given == {True, False}:
            raise DataError(
                f"{table}: the split column is filled on some lines only; fill it on every line or on none"
            )
        return self._grouped(rows)

    def _grouped(self, rows: list[Entry]) -> list[Entry]:
        """Fill each entry's group: its patient_id, else its DICOM PatientID, else itself."""
        for e in rows:
            if not e.group and file_format(e.file) == "dicom":
                from medpipe.data.files import read_dicom_header

                e.group = "dicom:" + str(read_dicom_header(e.file).get("PatientID", "") or "")
            if not e.group or e.group == "dicom:":
                e.group = "file:" + str(e.file)
        return rows

    # -- description, classes, splits ------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        rows = self.entries()
        root = self.root()
        files = [
            (
                str(e.file.relative_to(root)) if e.file.is_relative_to(root) else str(e.file),
                e.label,
                e.split,
                fingerprint(e.group),
                e.file.stat().st_size,
                sha256_file(e.file),
            )
            for e in rows
        ]
        keys = ("task", "classes", "intensity", "window", "split", "seed")
        spec = self.spec()
        return {
            "source": self.name,
            "files": len(files),
            "files_sha256": fingerprint(files),
            "shape": list(spec.shape),
            "canonical": spec.canonical,
            "labels_table": bool(self.cfg.get("labels")),
            **{k: self.cfg.get(k) for k in keys},
        }

    def _task_classes(self, labels: list[str]) -> tuple[str, list[str]]:
        task = str(self.cfg.get("task") or "auto")
        if task == "regression":
            return task, ["target"]
        classes = [str(c) for c in self.cfg.get("classes") or sorted(set(labels))]
        unknown = sorted(set(labels) - set(classes))
        if unknown:
            raise DataError(f"data.classes: labels {unknown} are not among {classes}")
        if task == "auto":
            task = "binary" if len(classes) == 2 else "multiclass"
        if task == "binary" and len(classes) != 2:
            raise DataError(
                f"data.task: binary needs 2 classes, the labels give {len(classes)}: {classes}"
            )
        if len(classes) < 2:
            raise DataError(f"data: one class only ({classes}); a classifier needs at least 2")
        return task, classes

    def _targets(self, rows: list[Entry], task: str, classes: list[str]) -> np.ndarray:
        if task != "regression":
            return np.array([classes.index(e.label) for e in rows], np.int64)
        try:
            return np.array([float(e.label) for e in rows], np.float32)
        except ValueError:
            bad = next(e for e in rows if not _is_float(e.label))
            raise DataError(
                f"{bad.where}: label '{bad.label}' is not a number (task regression)"
            ) from None

    def _assign(
        self, rows: list[Entry], y: np.ndarray, task: str
    ) -> tuple[list[str], dict[str, Any]]:
        """Each entry's split: from the table, or drawn over groups (stratified by label)."""
        groups = [e.group for e in rows]
        if rows[0].split is not None:
            splits = [e.split or "" for e in rows]
            seen: dict[str, tuple[str, str]] = {}
            for e, s in zip(rows, splits, strict=True):
                first = seen.setdefault(e.group, (s, e.where))
                if first[0] != s:
                    raise DataError(
                        f"{e.where}: split {s}, but the same patient is in split {first[0]} at "
                        f"{first[1]}: a patient's images must all be in one split (no leakage "
                        "between splits)"
                    )
            return splits, {"split_from": "table"}
        names = list(dict.fromkeys(groups))
        labels = None
        if task != "regression":  # a group's label: its most common one
            per_group: dict[str, Counter] = {}
            for g, v in zip(groups, y, strict=True):
                per_group.setdefault(g, Counter())[int(v)] += 1
            labels = np.array([per_group[g].most_common(1)[0][0] for g in names])
        parts, info = split_indices(
            len(names),
            self.cfg.get("split") or DEFAULT_SPLIT,
            int(self.cfg.get("seed", 0)),
            labels=labels,
            what="patients" if len(names) < len(rows) else "files",
        )
        of_group = {}
        for split, idx in parts.items():
            for i in idx:
                of_group[names[i]] = split
        info = {"split_from": "drawn", "groups": len(names), **info}
        return [of_group[g] for g in groups], info

    # -- reading ---------------------------------------------------------------------------------
    def _frames(self, e: Entry) -> int:
        if self.kind == "volume":
            return 1
        if file_format(e.file) == "dicom":
            return dicom_frames(e.file)
        if file_format(e.file) == "image":
            from PIL import Image

            try:
                with Image.open(e.file) as im:
                    return int(getattr(im, "n_frames", 1) or 1)
            except Exception as err:  # noqa: BLE001 - reported as the file's problem
                raise DataError(f"{e.file}: not a readable image ({err})") from None
        return 1

    def load(self) -> SourceData:
        rows = self.entries()
        task, classes = self._task_classes([e.label for e in rows])
        y = self._targets(rows, task, classes)
        assigned, info = self._assign(rows, y, task)
        spec, root = self.spec(), self.root()
        staging = Path(self.staging_dir or self.raw_dir)
        frames = [self._frames(e) for e in rows]
        sums = ChannelSums(spec.channels)
        notes: Counter = Counter()
        splits = {}
        for split in SPLITS:
            chosen = [i for i, s in enumerate(assigned) if s == split]
            n = sum(frames[i] for i in chosen)
            if n == 0:
                raise DataError(
                    f"data: split {split} is empty ({len(rows)} files); add files or change "
                    "data.split / the table's split column"
                )
            writer = NpyWriter(staging / f"{split}_x.npy", (n, *spec.shape), np.uint8)
            ids, ys = [], []
            try:
                for i in chosen:
                    e = rows[i]
                    samples, converted = samples_of(e.file, spec)
                    notes.update(converted)
                    if len(samples) != frames[i]:
                        raise DataError(
                            f"{e.file}: {len(samples)} frames read, {frames[i]} declared in its header"
                        )
                    rel = (
                        str(e.file.relative_to(root))
                        if e.file.is_relative_to(root)
                        else e.file.name
                    )
                    for k, sample in enumerate(samples):
                        writer.write(sample)
                        if split == "train":
                            sums.add(sample)
                        ids.append(rel if len(samples) == 1 else f"{rel}#{k}")
                        ys.append(y[i])
            except BaseException:
                writer.discard()
                raise
            writer.close()
            x = np.load(writer.path, mmap_mode="r")
            splits[split] = Split(x, np.asarray(ys, y.dtype), ids=np.array(ids, dtype=str))
        for note, count in notes.items():
            log.warning("%d files: %s", count, note)
        info.update(files=len(rows), converted={k: int(v) for k, v in notes.items()})
        return SourceData(
            splits, task, self.kind, classes, scale=255.0, info=info, stats=sums.stats(255.0)
        )


def input_spec(cfg: dict[str, Any], shape: Any = None) -> InputSpec:
    """The InputSpec a folder data config (or a trained model's data config) describes."""
    kind = str(cfg.get("kind"))
    if shape is None:
        if kind == "volume":
            shape = [1, *cfg.get("volume_shape")]
        else:
            shape = [int(cfg.get("channels", 1)), *cfg.get("image_size")]
    return InputSpec.from_options(kind, shape, cfg)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


Size2 = Annotated[list[PosInt], Field(min_length=2, max_length=2)]
Size3 = Annotated[list[PosInt], Field(min_length=3, max_length=3)]


@register_source("image_folder")
class ImageFolderSource(FolderSource):
    """2D images (PNG, JPEG, TIFF, BMP, DICOM): data=image_folder data.path=DIR."""

    class Options(FolderOptions):
        kind: Literal["image"] = "image"
        image_size: Size2 = [224, 224]
        channels: Literal[1, 3] = 1

    kind = "image"


@register_source("volume_folder")
class VolumeFolderSource(FolderSource):
    """3D volumes (NIfTI, multi-frame DICOM): data=volume_folder data.path=DIR."""

    class Options(FolderOptions):
        kind: Literal["volume"] = "volume"
        volume_shape: Size3 = [64, 64, 64]
        canonical: bool = True  # reorient NIfTI to the closest RAS orientation first

    kind = "volume"
