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


__all__ = [
    "SOURCES",
    "DataOptions",
    "Source",
    "SourceData",
    "make_source",
    "register_source",
    "source_class",
]
