"""What a source provides: a description to fingerprint, and the splits with their labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medpipe.data.processed import SPLITS, Split


@dataclass
class SourceData:
    splits: dict[str, Split]
    task: str
    kind: str
    classes: list[str]
    scale: float = 255.0
    info: dict[str, Any] = field(default_factory=dict)  # provenance: file, sha256, url, ...
    score_classes: list[str] = field(default_factory=list)  # classes a challenge F1 averages


class Source:
    """Base class; subclasses read their own keys of the data config."""

    def __init__(self, cfg: dict[str, Any], raw_dir: str):
        self.cfg = cfg
        self.raw_dir = raw_dir

    def describe(self) -> dict[str, Any]:
        """Everything that determines the processed output (options and input file hashes)."""
        raise NotImplementedError

    def load(self) -> SourceData:
        raise NotImplementedError


def generated_splits(
    cfg: dict[str, Any], make: Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]
) -> dict[str, Split]:
    """Splits of a seeded generator: `make(n, rng)` -> (x, y) for n_train, n_val and n_test samples.
    One independent random stream per split, so changing n_train leaves val and test unchanged."""
    splits = {}
    for i, split in enumerate(SPLITS):
        x, y = make(int(cfg[f"n_{split}"]), np.random.default_rng([int(cfg["seed"]), i]))
        splits[split] = Split(x, y)
    return splits
