"""MedMNIST npz files: by flag from Zenodo (MD5 checked), from a mirror folder, or a local path."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from medpipe.data.catalog import CATALOG, MedMNISTInfo
from medpipe.data.processed import SPLITS, Split, file_digest, sha256_file
from medpipe.data.sources.base import DataOptions, Source, SourceData, register_source
from medpipe.errors import DataError


def md5_file(path: str | os.PathLike) -> str:
    return file_digest(path, "md5")


def download(url: str, dest: Path, md5: str | None, timeout: float = 60.0) -> Path:
    """Fetch url to dest through a .part file; the file appears only once complete and verified."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + f".{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            while block := resp.read(1 << 20):
                out.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        part.unlink(missing_ok=True)
        raise DataError(
            f"could not download {url} ({getattr(err, 'reason', err)}); without network pass "
            "data.path=FILE.npz or data.mirror=FOLDER (or set MEDMNIST_MIRROR)"
        ) from None
    if md5 is not None and (actual := md5_file(part)) != md5:
        part.unlink(missing_ok=True)
        raise DataError(f"{url}: downloaded file has MD5 {actual}, expected {md5}")
    os.replace(part, dest)
    return dest


@register_source("medmnist")
class MedMNISTSource(Source):
    class Options(DataOptions):
        flag: Annotated[str, Field(min_length=1)]
        size: Literal[28, 64, 128, 224] = 28
        path: str | None = None
        mirror: str | None = None
        download: bool = True
        verify_md5: bool = True
        url: str | None = None

        @model_validator(mode="after")
        def _check(self):
            from medpipe.data.catalog import CATALOG

            info = CATALOG.get(self.flag)
            if info is None and not self.path:
                raise ValueError(
                    f"flag: unknown MedMNIST flag '{self.flag}'; known: {', '.join(sorted(CATALOG))} "
                    "(or give data.path to a MedMNIST-format npz)"
                )
            if info is not None and self.size not in info.md5:
                raise ValueError(
                    f"size: {self.flag} comes in sizes {sorted(info.md5)}, not {self.size}"
                )
            if info is not None and info.kind != self.kind:
                raise ValueError(f"kind: {self.flag} is {info.kind} data, not {self.kind}")
            return self

    path_keys = {"path": False, "mirror": True}

    def _info(self) -> MedMNISTInfo | None:
        return CATALOG.get(self.cfg["flag"])

    def resolve_file(self) -> tuple[Path, str]:
        """The npz to read and how it was found (path | mirror | cache | download)."""
        cfg, info = self.cfg, self._info()
        size = int(cfg.get("size", 28))
        if cfg.get("path"):
            path = Path(cfg["path"]).expanduser().resolve()
            if not path.is_file():
                raise DataError(f"data.path: file not found: {path}")
            return path, "path"
        if info is None:
            raise DataError(
                f"data.flag: unknown MedMNIST flag '{cfg['flag']}' and no data.path given; "
                f"known flags: {', '.join(sorted(CATALOG))}"
            )
        expected = info.md5.get(size)
        name = info.file_name(size)
        if cfg.get("mirror"):
            path = Path(cfg["mirror"]).expanduser().resolve() / name
            if not path.is_file():
                raise DataError(f"data.mirror: {path.parent} has no {name}")
            self._check_md5(path, expected)
            return path, "mirror"
        cached = Path(self.raw_dir) / name
        if cached.is_file():
            self._check_md5(cached, expected)
            return cached, "cache"
        if not cfg.get("download", True):
            raise DataError(
                f"{name} is not in {cached.parent} and data.download=false; pass data.path=... or data.mirror=..."
            )
        url = cfg.get("url") or info.url(size)
        return download(url, cached, expected if cfg.get("verify_md5", True) else None), "download"

    def _check_md5(self, path: Path, expected: str | None) -> None:
        if expected and self.cfg.get("verify_md5", True) and (actual := md5_file(path)) != expected:
            raise DataError(
                f"{path}: MD5 {actual} differs from the official {expected} of "
                f"{self.cfg['flag']} (size {self.cfg.get('size', 28)}); use data.path=... for a "
                "non-official file or data.verify_md5=false"
            )

    def describe(self) -> dict[str, Any]:
        path, how = self.resolve_file()
        self._path = path
        return {
            "source": "medmnist",
            "flag": self.cfg["flag"],
            "size": int(self.cfg.get("size", 28)),
            "file_sha256": sha256_file(path),
            "kind": self.cfg.get("kind", "image"),
        }

    def load(self) -> SourceData:
        path = getattr(self, "_path", None) or self.resolve_file()[0]
        info = self._info()
        kind = info.kind if info else self.cfg.get("kind", "image")
        raw = read_medmnist_npz(path)
        # no MD5 vouches for data.path, nor for any file read with verify_md5=false: check its
        # contents against the catalogue before the catalogue's class names are attached to it
        if info is not None and (self.cfg.get("path") or not self.cfg.get("verify_md5", True)):
            from medpipe.data.catalog_check import catalogue_error, catalogue_mismatches

            size = int(self.cfg.get("size", 28))
            if mismatches := catalogue_mismatches(info, size, raw):
                raise DataError(catalogue_error(path, info, size, mismatches, raw["train"][0]))
        splits = {s: Split(_to_channels_first(raw[s][0], kind, path, s), raw[s][1]) for s in SPLITS}
        if info is not None:
            task, classes = (
                ("multiclass" if info.task == "ordinal" else info.task),
                list(info.classes),
            )
        else:
            task, classes = _infer_task(splits)
        for s in SPLITS:
            splits[s].y = _labels(splits[s].y, task, len(classes), path, s)
        scale = 255.0 if splits["train"].x.dtype == np.uint8 else 1.0
        return SourceData(
            splits,
            task,
            kind,
            classes,
            scale,
            info={
                "file": str(path),
                "flag": self.cfg["flag"],
                "size": int(self.cfg.get("size", 28)),
            },
        )


def read_medmnist_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read and check the six arrays of a MedMNIST npz; every problem names the file and key."""
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{path}: not an .npz archive (no zip structure; truncated or another format?)"
        )
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array, not an .npz archive of named arrays")
    with npz:
        wanted = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
        missing = [k for k in wanted if k not in npz.files]
        if missing:
            raise DataError(
                f"{path}: missing key(s) {', '.join(missing)}; a MedMNIST npz holds "
                f"{', '.join(wanted)} (found: {', '.join(sorted(npz.files)) or 'nothing'})"
            )
        out = {}
        for s in SPLITS:
            try:
                x, y = npz[f"{s}_images"], npz[f"{s}_labels"]
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
                raise DataError(
                    f"{path}: cannot read split '{s}' ({type(err).__name__}: {err})"
                ) from None
            if len(x) != len(y):
                raise DataError(
                    f"{path}: {s}_images has {len(x)} images but {s}_labels has {len(y)} labels"
                )
            if len(x) == 0:
                raise DataError(f"{path}: split '{s}' is empty")
            out[s] = (x, y)
    return out


def _to_channels_first(x: np.ndarray, kind: str, path: Path, split: str) -> np.ndarray:
    if kind == "image":
        if x.ndim == 3:
            return x[:, None]
        if x.ndim == 4 and x.shape[-1] in (1, 3):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        raise DataError(
            f"{path}: {split}_images has shape {x.shape}; 2D data needs (N,H,W) or (N,H,W,C)"
        )
    if kind == "volume":
        if x.ndim == 4:
            return x[:, None]
        raise DataError(f"{path}: {split}_images has shape {x.shape}; 3D data needs (N,D,H,W)")
    raise DataError(f"data.kind: '{kind}' is not a MedMNIST kind (image | volume)")


def _infer_task(splits: dict[str, Split]) -> tuple[str, list[str]]:
    y = splits["train"].y
    if y.ndim == 2 and y.shape[1] > 1:
        return "multilabel", [str(i) for i in range(y.shape[1])]
    n = int(max(int(np.max(s.y)) for s in splits.values())) + 1
    return ("binary" if n == 2 else "multiclass"), [str(i) for i in range(n)]


def _labels(y: np.ndarray, task: str, n_classes: int, path: Path, split: str) -> np.ndarray:
    if task == "multilabel":
        if y.ndim != 2 or y.shape[1] != n_classes:
            raise DataError(
                f"{path}: {split}_labels has shape {y.shape}; expected (N, {n_classes}) multi-hot"
            )
        return y.astype(np.float32)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"{path}: {split}_labels has shape {y.shape}; expected (N,) or (N, 1) class indices"
        )
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        raise DataError(
            f"{path}: {split}_labels holds {int(bad.sum())} label(s) outside 0..{n_classes - 1} "
            f"(e.g. {int(y[bad][0])})"
        )
    return y
