"""Stratified k-fold splits of a processed dataset's pooled samples (numpy and scikit-learn only).

Every sample of the train, val and test splits is pooled (in that order); fold i tests on the i-th
part and validates on a stratified `val_fraction` of the rest, trains on what remains. Classes are
stratified for classification (the first label for multilabel data), quantile bins of the target for
regression, so each fold sees the same class balance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medpipe.data.processed import pooled_ids, pooled_labels, read_meta
from medpipe.errors import ConfigError


def strata(y: np.ndarray, task: str, folds: int) -> np.ndarray:
    """The label each sample is stratified on."""
    y = np.asarray(y)
    if task == "regression":
        edges = np.quantile(y, np.linspace(0, 1, folds + 1)[1:-1])
        return np.searchsorted(edges, y, side="right")
    if task == "multilabel":
        return y[:, 0].astype(np.int64)
    return y.astype(np.int64)


def make_folds(
    y: np.ndarray,
    task: str,
    folds: int,
    val_fraction: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> list[dict[str, np.ndarray]]:
    """For each fold {'train', 'val', 'test'}: sorted row indices into the pooled samples.
    `groups`: a record id per sample; when a record gave several samples (windows), all of them
    go to one part of every fold, so no record is trained on and tested in the same fold."""
    if groups is not None and len(np.unique(groups)) < len(groups):
        return _group_folds(strata(y, task, folds), np.asarray(groups), folds, val_fraction, seed)
    labels = strata(y, task, folds)
    counts = np.bincount(labels)
    if counts[counts > 0].min() < folds:
        smallest = int(np.flatnonzero(counts == counts[counts > 0].min())[0])
        raise ConfigError(
            f"cv.folds: {folds} stratified folds need at least {folds} samples of every class; "
            f"class {smallest} has {int(counts[smallest])} of {len(labels)} samples"
        )
    from sklearn.model_selection import StratifiedKFold, train_test_split  # on use: ~0.3 s

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = []
    for rest, test in splitter.split(np.zeros(len(labels)), labels):
        train, val = train_test_split(
            rest, test_size=val_fraction, random_state=seed, stratify=_stratify(labels[rest])
        )
        out.append({"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)})
    return out


def _group_folds(
    labels: np.ndarray, groups: np.ndarray, folds: int, val_fraction: float, seed: int
) -> list[dict[str, np.ndarray]]:
    """make_folds over records: stratified by each record's first label, then every sample of a
    record follows it."""
    names, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    record_folds = make_folds(labels[first], "multiclass", folds, val_fraction, seed)
    return [
        {part: np.flatnonzero(np.isin(inverse, rows)) for part, rows in fold.items()}
        for fold in record_folds
    ]


def _stratify(labels: np.ndarray) -> np.ndarray | None:
    """Stratify the validation draw unless a class is too rare for it (then draw at random)."""
    counts = np.bincount(labels)
    return labels if counts[counts > 0].min() >= 2 else None


def all_folds(c: dict[str, Any], folder: Path) -> list[dict[str, np.ndarray]]:
    """The folds of a run config over a processed folder: the same rows every time."""
    cv = c["cv"]
    seed = int(cv.get("seed") if cv.get("seed") is not None else c["seed"])
    y = pooled_labels(folder)
    task = read_meta(folder).task
    folds, val_fraction = int(cv["folds"]), float(cv["val_fraction"])
    return make_folds(y, task, folds, val_fraction, seed, groups=pooled_ids(folder))
