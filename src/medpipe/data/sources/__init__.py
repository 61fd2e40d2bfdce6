"""Data sources: each turns one kind of input (npz, generator, records, ...) into processed splits.
Every module of this package registers its sources (`@register_source`); nothing lists them."""

from __future__ import annotations

from typing import Any

from medpipe.data.sources.base import (
    SOURCES,
    DataOptions,
    Source,
    SourceData,
    register_source,
    source_class,
)
from medpipe.errors import ConfigError


def make_source(data_cfg: dict[str, Any], raw_dir: str) -> Source:
    cls, problem = source_class(data_cfg.get("source"))
    if cls is None:
        raise ConfigError(problem or "data.source: unknown")
    return cls(data_cfg, raw_dir)


def reading_of(data_cfg: dict[str, Any]) -> dict[str, Any]:
    """How the data of a training config reads one new file (its source's `reading()`)."""
    return make_source(data_cfg, "").reading()


__all__ = [
    "SOURCES",
    "DataOptions",
    "Source",
    "SourceData",
    "make_source",
    "reading_of",
    "register_source",
    "source_class",
]
