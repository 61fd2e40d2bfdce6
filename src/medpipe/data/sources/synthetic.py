"""Synthetic 2D lesion detection, generated deterministically from a seed (the default dataset).

Each image shows 2-4 bright structures on a smooth background with random gain, offset and noise.
Negative images hold only elongated, vessel-like structures; a positive image has one of them
replaced by a compact round lesion of the same integrated intensity. Position, count and total
brightness carry no label information, so a linear model on the pixels stays near chance, while a
small CNN, which can detect the local shape, learns the task.

The lesion's extent is known, so each split also stores a lesion mask (`<split>_mask.npy`): the
pixels within two standard deviations of the lesion's centre. Explanations are checked against it
(does the model look at the lesion?).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from medpipe.data.sources.base import (
    DataOptions,
    Source,
    SourceData,
    generated_splits,
    register_source,
)

CLASSES = ["no lesion", "lesion"]


def make_lesion_images(
    n: int,
    size: int,
    prevalence: float,
    noise: float,
    rng: np.random.Generator,
    with_mask: bool = False,
) -> tuple[np.ndarray, ...]:
    """Return uint8 images (n, 1, size, size) and int64 labels (n,); with `with_mask`, also the
    uint8 lesion masks (n, size, size): 1 within 2 sigma of the lesion's centre (where its
    isotropic Gaussian is above exp(-2) of its peak), all 0 in negative images.

    The mask is read off the values the image is drawn from (no extra random draws), so the
    images are the same with or without it."""
    k_max = 4
    labels = (rng.random(n) < prevalence).astype(np.int64)
    counts = rng.integers(2, k_max + 1, size=n)
    present = np.arange(k_max)[None, :] < counts[:, None]  # (n, k)
    margin = 4.0
    cy = rng.uniform(margin, size - 1 - margin, (n, k_max))
    cx = rng.uniform(margin, size - 1 - margin, (n, k_max))
    theta = rng.uniform(0, np.pi, (n, k_max))
    s_major = rng.uniform(2.4, 4.0, (n, k_max))
    s_minor = rng.uniform(0.7, 1.1, (n, k_max))
    amp = rng.uniform(0.55, 1.25, (n, k_max))
    # The first structure of a positive image becomes the lesion: isotropic, same integral.
    is_lesion = np.zeros((n, k_max), bool)
    is_lesion[:, 0] = labels == 1
    s_lesion = rng.uniform(1.3, 1.9, (n, k_max))
    integral = amp * s_major * s_minor
    s_a = np.where(is_lesion, s_lesion, s_major)
    s_b = np.where(is_lesion, s_lesion, s_minor)
    amp = np.where(is_lesion, integral / (s_lesion**2), amp)

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy = yy[None, None] - cy[..., None, None]
    dx = xx[None, None] - cx[..., None, None]
    c, s = np.cos(theta)[..., None, None], np.sin(theta)[..., None, None]
    u = c * dx + s * dy
    v = -s * dx + c * dy
    blobs = amp[..., None, None] * np.exp(
        -0.5 * ((u / s_a[..., None, None]) ** 2 + (v / s_b[..., None, None]) ** 2)
    )
    objects = (blobs * present[..., None, None]).sum(axis=1)  # (n, H, W)

    from scipy.ndimage import gaussian_filter  # here: the config check imports this module

    background = gaussian_filter(rng.standard_normal((n, size, size)), sigma=(0, 3, 3))
    background /= background.std(axis=(1, 2), keepdims=True) + 1e-8
    gain = rng.uniform(0.75, 1.25, (n, 1, 1))
    offset = rng.uniform(-0.15, 0.15, (n, 1, 1))
    img = (
        gain * (0.25 * background + objects) + offset + noise * rng.standard_normal((n, size, size))
    )
    lo, hi = -0.8, 2.2
    x = np.clip((img - lo) / (hi - lo) * 255.0, 0, 255).round().astype(np.uint8)
    if not with_mask:
        return x[:, None], labels
    # the lesion is structure 0 of a positive image: (u/s)^2 + (v/s)^2 <= 2^2, i.e. within 2 sigma
    r2 = (u[:, 0] / s_a[:, 0, None, None]) ** 2 + (v[:, 0] / s_b[:, 0, None, None]) ** 2
    mask = (r2 <= 4.0) & is_lesion[:, 0, None, None]
    return x[:, None], labels, mask.astype(np.uint8)


@register_source("synthetic_lesions")
class SyntheticLesionsSource(Source):
    class Options(DataOptions):
        seed: int
        image_size: Annotated[int, Field(ge=16, le=512)]
        n_train: Annotated[int, Field(ge=2)]
        n_val: Annotated[int, Field(ge=2)]
        n_test: Annotated[int, Field(ge=2)]
        prevalence: Annotated[float, Field(gt=0, lt=1)]
        noise: Annotated[float, Field(ge=0)]

    def describe(self) -> dict[str, Any]:
        keys = ("seed", "image_size", "n_train", "n_val", "n_test", "prevalence", "noise")
        # "masks": the processed folder holds lesion masks; folders written before they existed
        # have another fingerprint and are not reused
        return {"source": "synthetic_lesions", "masks": 1, **{k: self.cfg[k] for k in keys}}

    def load(self) -> SourceData:
        c = self.cfg
        splits = generated_splits(
            c,
            lambda n, rng: make_lesion_images(
                n,
                int(c["image_size"]),
                float(c["prevalence"]),
                float(c["noise"]),
                rng,
                with_mask=True,
            ),
        )
        return SourceData(
            splits,
            "binary",
            "image",
            list(CLASSES),
            255.0,
            info={"generator": "synthetic_lesions", "seed": int(c["seed"])},
        )
