"""What a source provides: a description to fingerprint, and the splits with their labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medpipe.data.processed import Split


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
