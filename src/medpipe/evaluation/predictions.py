"""A run's kept predictions: one row per sample of a split, written as `predictions/<split>.csv`
(readable in any spreadsheet) beside `predictions/<split>.json` (what the columns mean and which
data they belong to). Intervals, calibration, operating points, paired comparisons and reports
are computed from these files, so any of them can be recomputed later from the run's artifacts.

Columns: `row` (the sample's row in the split, or in the pooled data for a cross-validation
fold), `record_id` where the data has record ids (as the processed data stores them: salted
`h_<hex>` hashes under privacy.hash_ids=true), the target (`target`: class index or value;
multilabel: `target_<label>` 0/1), the model's output (`prob_<class>` per class; binary: the
positive class only; regression: `predicted`), the raw net outputs (`logit_<i>`) and, for
classification, `predicted` (the class or labels decided at the run's threshold).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medpipe.errors import DataError
from medpipe.evaluation.stats import class_key


@dataclass
class Predictions:
    """One split's predictions. `scores`: binary (N,) P(positive class); multiclass (N, C);
    multilabel (N, K); regression (N,) values. `logits`: the raw net outputs (N, L) or None."""

    split: str
    task: str
    classes: list[str]
    target: np.ndarray
    scores: np.ndarray
    rows: np.ndarray
    logits: np.ndarray | None = None
    ids: np.ndarray | None = None
    threshold: float | list[float] | None = None  # None: argmax (multiclass) or regression
    info: dict[str, Any] = field(default_factory=dict)  # data hashes, temperature, rule, ...

    def __len__(self) -> int:
        return len(self.target)

    def predicted(self) -> np.ndarray:
        if self.task == "binary":
            return (self.scores >= self.threshold).astype(np.int64)
        if self.task == "multiclass":
            return self.scores.argmax(1)
        if self.task == "multilabel":
            return (self.scores >= np.asarray(self.threshold)).astype(np.int64)
        return self.scores

    def _columns(self) -> tuple[list[str], list[np.ndarray]]:
        keys = [class_key(c) for c in self.classes]
        names, cols = ["row"], [self.rows]
        if self.ids is not None:
            names.append("record_id")
            cols.append(self.ids)
        if self.task == "multilabel":
            names += [f"target_{k}" for k in keys]
            cols += list(self.target.T)
        else:
            names.append("target")
            cols.append(self.target)
        if self.task == "regression":
            names.append("predicted")
            cols.append(self.scores)
        else:
            if self.task == "binary":
                names.append(f"prob_{keys[1]}")
                cols.append(self.scores)
            else:
                names += [f"prob_{k}" for k in keys]
                cols += list(self.scores.T)
            pred = self.predicted()
            if self.task == "multilabel":
                names += [f"predicted_{k}" for k in keys]
                cols += list(pred.T)
            else:
                names.append("predicted")
                cols.append(pred)
        if self.logits is not None:
            names += [f"logit_{i}" for i in range(self.logits.shape[1])]
            cols += list(self.logits.T)
        return names, cols

    def save(self, folder: Path) -> list[Path]:
        """Write `<folder>/<split>.csv` and `<folder>/<split>.json`; returns both paths."""
        folder.mkdir(parents=True, exist_ok=True)
        names, cols = self._columns()
        csv_path, json_path = folder / f"{self.split}.csv", folder / f"{self.split}.json"
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(names)
            w.writerows(zip(*(_text(c) for c in cols), strict=True))
        header = {
            "split": self.split,
            "task": self.task,
            "classes": list(self.classes),
            "n": len(self),
            "threshold": self.threshold,
            "columns": names,
            **self.info,
        }
        json_path.write_text(json.dumps(header, indent=2))
        return [csv_path, json_path]

    @classmethod
    def load(cls, csv_path: str | Path) -> Predictions:
        """Read a `<split>.csv` written by save() (its `.json` beside it)."""
        csv_path = Path(csv_path)
        json_path = csv_path.with_suffix(".json")
        try:
            header = json.loads(json_path.read_text())
            with open(csv_path, newline="") as f:
                rows = list(csv.reader(f))
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{csv_path}: unreadable predictions ({err})") from None
        names, body = rows[0], rows[1:]
        col = {n: [r[i] for r in body] for i, n in enumerate(names)}
        task, classes = header["task"], header["classes"]
        keys = [class_key(c) for c in classes]

        def num(name: str, dtype=np.float64) -> np.ndarray:
            return np.asarray(col[name], dtype=np.float64).astype(dtype)

        if task == "multilabel":
            target = np.stack([num(f"target_{k}", np.int64) for k in keys], 1)
        else:
            target = num("target", np.float64 if task == "regression" else np.int64)
        if task == "regression":
            scores = num("predicted")
        elif task == "binary":
            scores = num(f"prob_{keys[1]}")
        else:
            scores = np.stack([num(f"prob_{k}") for k in keys], 1)
        logit_names = [n for n in names if n.startswith("logit_")]
        info = {
            k: v
            for k, v in header.items()
            if k not in ("split", "task", "classes", "n", "threshold", "columns")
        }
        return cls(
            split=header["split"],
            task=task,
            classes=classes,
            target=target,
            scores=scores,
            rows=num("row", np.int64),
            logits=np.stack([num(n) for n in logit_names], 1) if logit_names else None,
            ids=np.asarray(col["record_id"]) if "record_id" in col else None,
            threshold=header.get("threshold"),
            info=info,
        )


def _text(values: np.ndarray) -> list[str]:
    """Column values as CSV text: floats with full float32 precision, integers as integers."""
    a = np.asarray(values)
    if a.dtype.kind == "f":
        return [f"{v:.9g}" for v in a.tolist()]
    return [str(v) for v in a.tolist()]
