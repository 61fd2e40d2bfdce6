"""Per-sample augmentation (albumentations, training split only) and on-device normalisation."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from medpipe.errors import ConfigError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations contacts PyPI otherwise


def build_albumentations(
    ops: Sequence[dict[str, Any]], seed: int
) -> Callable[[np.ndarray], np.ndarray] | None:
    """Compose the `augmentation.train` list into a function on one (C, H, W) uint8 image.

    Each entry is instantiated by Hydra; a wrong class or argument becomes a ConfigError that names
    the entry.
    """
    if not ops:
        return None
    import albumentations as A
    from hydra.utils import instantiate

    transforms = []
    for i, op in enumerate(ops):
        where = f"augmentation.train[{i}] ({op.get('_target_')})"
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                transforms.append(instantiate(op, _convert_="all"))
        except Exception as err:  # noqa: BLE001 - any failure here is a config problem
            cause = err.__cause__ or err
            first = (
                str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            )
            raise ConfigError(f"{where}: {first}") from None
        # albumentations only warns about unknown arguments; a typo must not silently do nothing.
        for w in caught:
            if "not valid for transform" in str(w.message):
                raise ConfigError(f"{where}: {w.message}")
    compose = A.Compose(transforms, seed=seed)

    def apply(image_chw: np.ndarray) -> np.ndarray:
        out = compose(image=np.ascontiguousarray(image_chw.transpose(1, 2, 0)))["image"]
        if out.ndim == 2:
            out = out[:, :, None]
        return out.transpose(2, 0, 1)

    return apply


class Normalizer(torch.nn.Module):
    """Map stored intensities to network input: x / scale, then per-channel z-score if asked."""

    def __init__(
        self,
        mode: str,
        scale: float,
        mean: Sequence[float],
        std: Sequence[float],
        spatial_dims: int,
    ):
        super().__init__()
        shape = (1, -1) + (1,) * spatial_dims
        self.mode = mode
        self.scale = float(scale)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.mode == "none":
            return x
        x = x / self.scale
        if self.mode == "zscore":
            x = (x - self.mean) / self.std
        return x
