"""Data sources: each turns one kind of input (npz, generator, ...) into processed splits."""

from __future__ import annotations

from typing import Any

from medpipe.data.sources.base import Source, SourceData
from medpipe.data.sources.cine import SyntheticCineSource
from medpipe.data.sources.ecg import PhysioNet2017Source, SyntheticECGSource, WFDBSource
from medpipe.data.sources.medmnist import MedMNISTSource
from medpipe.data.sources.synthetic import SyntheticLesionsSource
from medpipe.data.sources.table import TableSource

SOURCES: dict[str, type[Source]] = {
    "medmnist": MedMNISTSource,
    "synthetic_lesions": SyntheticLesionsSource,
    "physionet2017": PhysioNet2017Source,
    "wfdb": WFDBSource,
    "table": TableSource,
    "synthetic_ecg": SyntheticECGSource,
    "synthetic_cine": SyntheticCineSource,
}


def make_source(data_cfg: dict[str, Any], raw_dir: str) -> Source:
    return SOURCES[data_cfg["source"]](data_cfg, raw_dir)


__all__ = ["SOURCES", "Source", "SourceData", "make_source"]
