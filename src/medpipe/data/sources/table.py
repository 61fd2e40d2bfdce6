"""Signals from a delimited text table: one series per row, the label in the first or last column.

Blank lines are ignored. Every row must have the same number of columns; a ragged row or a value that
is not a number is a DataError naming the file and line. A missing sample (an empty cell, nan, inf)
is one too under `preprocess.missing: error` (the default); the other rules read it as NaN and
handle it (medpipe.data.signal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from medpipe.data import signal
from medpipe.data.processed import SPLITS, Split, sha256_file
from medpipe.data.sources.base import Source, SourceData, register_source
from medpipe.data.sources.ecg import (
    DEFAULT_SPLIT,
    Fractions,
    PosFloat,
    SignalOptions,
    _preprocess_desc,
    split_indices,
)
from medpipe.errors import DataError

DELIMITERS = {",": ",", "\t": "\t", "tab": "\t", "comma": ",", "whitespace": None}


def _label_text(value: str) -> str:
    """A label as a class name: '1.0' and '1' are the same class."""
    try:
        f = float(value)
    except ValueError:
        return value
    return str(int(f)) if np.isfinite(f) and f == int(f) else value


def sniff_delimiter(line: str) -> str | None:
    if "," in line:
        return ","
    if "\t" in line:
        return "\t"
    return None


def read_table(
    path: Path,
    delimiter: str = "auto",
    header: bool = False,
    label_column: str = "last",
    allow_missing: bool = False,
) -> tuple[np.ndarray, list[str], list[int]]:
    """Return series (N, T) float64, their label texts and their 1-based line numbers.

    `allow_missing`: an empty sample cell is read as NaN and NaN/inf samples are kept (the
    preprocess block's `missing` rule handles them); otherwise both are DataErrors.
    """
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file; expected delimited numbers") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    lines = text.splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if header and numbered:
        numbered = numbered[1:]
    if not numbered:
        raise DataError(f"{path}: empty file; expected one series per line")
    sep = (
        sniff_delimiter(numbered[0][1])
        if delimiter == "auto"
        else DELIMITERS.get(delimiter, delimiter)
    )

    def fields(line: str) -> list[str]:
        return line.split() if sep is None else [f.strip() for f in line.strip().split(sep)]

    first = fields(numbered[0][1])
    width = len(first)
    if width < 2:
        raise DataError(
            f"{path}:{numbered[0][0]}: one column; expected a label and a series per line "
            f"(delimiter {'whitespace' if sep is None else repr(sep)})"
        )
    lab = 0 if label_column == "first" else width - 1
    x = np.empty((len(numbered), width - 1), np.float64)
    labels, linenos = [], []
    for r, (lineno, line) in enumerate(numbered):
        f = fields(line)
        if len(f) != width:
            raise DataError(
                f"{path}:{lineno}: {len(f)} columns, but line {numbered[0][0]} has {width}; "
                "expected every row to have the same number of values"
            )
        labels.append(f.pop(lab))
        linenos.append(lineno)
        if allow_missing:
            f = [v if v else "nan" for v in f]
        try:
            x[r] = np.array(f, dtype=np.float64)
        except ValueError:
            col, v = next((i, v) for i, v in enumerate(f) if not _is_float(v))
            raise DataError(
                f"{path}:{lineno}: value {v!r} (column {col + 1 + (lab == 0)}) is not a number; "
                "expected numeric samples"
            ) from None
        if not allow_missing and not np.isfinite(x[r]).all():
            col = int(np.nonzero(~np.isfinite(x[r]))[0][0])
            raise DataError(
                f"{path}:{lineno}: value {f[col]!r} (column {col + 1 + (lab == 0)}) is not "
                "finite; expected numeric samples without NaN or inf"
            )
    return x, labels, linenos


@register_source("table")
class TableSource(Source):
    """One single-channel series per row; `test_path` (optional) holds the test rows, otherwise
    the rows are split train/val/test (stratified for classification, seeded)."""

    class Options(SignalOptions):
        path: str | None = None
        test_path: str | None = None
        delimiter: Literal["auto", ",", "\t", "tab", "comma", "whitespace"] = "auto"
        label_column: Literal["first", "last"] = "last"
        header: bool = False
        fs: PosFloat
        task: Literal["binary", "multiclass", "regression"] = "multiclass"
        classes: Annotated[list[str | int], Field(min_length=1)] | None = None
        split: Fractions = [0.7, 0.1, 0.2]
        seed: int = 0

        def _native_fs(self) -> float | None:
            return self.fs

        @model_validator(mode="after")
        def _check(self):
            if not self.path:
                raise ValueError("path: required: the delimited text file, one series per row")
            self._split_problem(self.split)
            if self.test_path is None and self.split[1] <= 0:
                raise ValueError("split: the val fraction must be positive")
            n = len(self.classes or [])
            if self.task == "regression" and n > 1:
                raise ValueError(f"classes: regression takes one name (the target's), not {n}")
            if self.task == "binary" and n not in (0, 2):
                raise ValueError(f"classes: task binary takes 2 class names, not {n}")
            return self

    path_keys = {"path": False, "test_path": False}

    def _paths(self) -> tuple[Path, Path | None]:
        if not self.cfg.get("path"):
            raise DataError("data.path: not set; give the table file, one series per row")
        path = Path(str(self.cfg["path"])).expanduser().resolve()
        test = self.cfg.get("test_path")
        test_path = Path(str(test)).expanduser().resolve() if test else None
        for p, key in ((path, "path"), (test_path, "test_path")):
            if p is not None and not p.is_file():
                raise DataError(f"data.{key}: file not found: {p}")
        return path, test_path

    def describe(self) -> dict[str, Any]:
        path, test_path = self._paths()
        keys = ("delimiter", "label_column", "header", "fs", "task", "classes", "split", "seed")
        return {
            "source": "table",
            "file": path.name,
            "sha256": sha256_file(path),
            "test_file": test_path.name if test_path else None,
            "test_sha256": sha256_file(test_path) if test_path else None,
            **{k: self.cfg.get(k) for k in keys},
            **_preprocess_desc(self.cfg),
        }

    def _read(self, path: Path) -> tuple[np.ndarray, list[str], list[int]]:
        c = self.cfg
        return read_table(
            path,
            str(c.get("delimiter", "auto")),
            bool(c.get("header", False)),
            str(c.get("label_column", "last")),
            allow_missing=signal.missing_rule(c.get("preprocess")) != "error",
        )

    def _targets(
        self, labels: list[str], linenos: list[int], path: Path, classes: list[str]
    ) -> np.ndarray:
        task = self.cfg.get("task", "multiclass")
        if task == "regression":
            try:
                y = np.array([float(v) for v in labels], np.float32)
            except ValueError:
                i = next(i for i, v in enumerate(labels) if not _is_float(v))
                raise DataError(
                    f"{path}:{linenos[i]}: target {labels[i]!r} is not a number; "
                    "task regression expects numeric targets"
                ) from None
            if not np.isfinite(y).all():
                i = int(np.nonzero(~np.isfinite(y))[0][0])
                raise DataError(f"{path}:{linenos[i]}: target {labels[i]!r} is not finite")
            return y
        index = {name: i for i, name in enumerate(classes)}
        out = np.empty(len(labels), np.int64)
        for i, v in enumerate(labels):
            key = _label_text(v)
            if key not in index:
                raise DataError(
                    f"{path}:{linenos[i]}: label {v!r} is not one of the classes "
                    f"{', '.join(classes)}"
                )
            out[i] = index[key]
        return out

    def _classes(self, labels: list[str]) -> list[str]:
        task = self.cfg.get("task", "multiclass")
        given = self.cfg.get("classes")
        if task == "regression":
            return [str(given[0])] if given else ["target"]
        if given:
            return [_label_text(str(v)) for v in given]
        found = sorted({_label_text(v) for v in labels})
        if all(_is_float(v) for v in found):
            found.sort(key=float)
        return found

    def load(self) -> SourceData:
        path, test_path = self._paths()
        c = self.cfg
        task = c.get("task", "multiclass")
        x, labels, linenos = self._read(path)
        files = [(x, labels, linenos, path)]
        if test_path is not None:
            files.append((*self._read(test_path), test_path))
            if files[1][0].shape[1] != x.shape[1]:
                raise DataError(
                    f"{test_path}: series of {files[1][0].shape[1]} values, but {path.name} has "
                    f"{x.shape[1]}; expected the same length"
                )
        classes = self._classes(labels + (files[1][1] if test_path else []))
        if task == "binary" and len(classes) != 2:
            raise DataError(
                f"{path}: task binary needs 2 classes, found {len(classes)} "
                f"({', '.join(classes[:10])})"
            )
        ys = [self._targets(lab, ln, p, classes) for _, lab, ln, p in files]
        fs = float(c["fs"])
        pre = c.get("preprocess") or {}
        records = [row[None] for f in files for row in f[0]]
        names = [f"{p}:{ln}" for _, _, lns, p in files for ln in lns]
        xp, lengths, rec = signal.preprocess_records(records, fs, pre, names=names)
        n_missing = [signal.count_missing(r) for r in records]
        y_all = np.concatenate(ys)
        n_main = len(files[0][0])
        seed = int(c.get("seed", 0))
        fractions = list(c.get("split") or DEFAULT_SPLIT)
        strat = y_all[:n_main] if task != "regression" else None
        if test_path is None:
            parts, info = split_indices(n_main, fractions, seed, strat, what="rows")
        else:
            # train/val from the main file in the ratio of their fractions, test from test_path.
            f_train, f_val = fractions[0], fractions[1]
            parts, info = _two_way(n_main, f_val / (f_train + f_val), seed, strat)
            parts["test"] = np.arange(n_main, n_main + len(files[1][0]))
        missing = signal.missing_summary(pre, n_missing, parts, names, str(path))
        splits = {}
        for s in SPLITS:
            keep = np.isin(rec, parts[s])
            splits[s] = Split(xp[keep], y_all[rec[keep]], lengths[keep])
        info.update({"fs": signal.final_rate(fs, pre), "rows": len(y_all)})
        if missing:
            info["missing"] = missing
        return SourceData(splits, task, "signal", classes, 1.0, info)


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _two_way(
    n: int, val_fraction: float, seed: int, labels: np.ndarray | None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from sklearn.model_selection import train_test_split

    from medpipe.data.sources.ecg import _stratify_labels

    if n < 2:
        raise DataError(f"only {n} rows besides the test file; train and val need at least 2")
    n_val = min(max(1, int(round(val_fraction * n))), n - 1)
    strat = None if labels is None else _stratify_labels(labels, n_val)
    train, val = train_test_split(np.arange(n), test_size=n_val, random_state=seed, stratify=strat)
    return {"train": np.sort(train), "val": np.sort(val)}, {"stratified": strat is not None}
