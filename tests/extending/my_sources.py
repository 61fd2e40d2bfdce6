"""A data source of your own: one module and one YAML. Here: images of a bright ring (label 1) or
a filled disc (label 0) of the same brightness, generated from a seed."""

from typing import Annotated

import numpy as np
from pydantic import Field

from medpipe.data.sources import DataOptions, Source, SourceData, register_source
from medpipe.data.sources.base import generated_splits


@register_source("rings")
class RingsSource(Source):
    class Options(DataOptions):  # every key of conf/data/rings.yaml beyond the common ones
        seed: int = 0
        image_size: Annotated[int, Field(ge=8, le=256)] = 28
        n_train: Annotated[int, Field(ge=2)] = 256
        n_val: Annotated[int, Field(ge=2)] = 64
        n_test: Annotated[int, Field(ge=2)] = 64

    def describe(self):
        """What determines the processed data (its folder is named by a hash of this)."""
        keys = ("seed", "image_size", "n_train", "n_val", "n_test")
        return {"source": "rings", **{k: self.cfg[k] for k in keys}}

    def load(self):
        size = int(self.cfg["image_size"])
        yy, xx = np.mgrid[:size, :size]

        def make(n, rng):
            y = rng.integers(0, 2, n)
            cy, cx = rng.uniform(size * 0.3, size * 0.7, (2, n, 1, 1))
            r = np.hypot(yy - cy, xx - cx)
            disc = (r < size * 0.2) * 200.0
            ring = (np.abs(r - size * 0.25) < size * 0.07) * 200.0
            x = np.where(y[:, None, None] == 1, ring, disc) + rng.normal(0, 20, (n, size, size))
            return np.clip(x, 0, 255).astype(np.uint8)[:, None], y.astype(np.int64)

        return SourceData(generated_splits(self.cfg, make), "binary", "image", ["disc", "ring"])
