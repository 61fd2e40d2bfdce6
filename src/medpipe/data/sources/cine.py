"""Synthetic cine sequences whose label is the direction of change: is the lesion growing?

Every sequence shows a round lesion on a smooth textured background with vessel-like distractors,
sometimes a second, static round blob, per-frame pixel noise and a slight per-frame gain flicker.
The lesion radius changes monotonically over the T frames. Each sequence is generated as a
*growing* one (label 1); a shrinking sequence (label 0) is a growing one played backwards: its whole
frame axis is reversed, noise and distractors included.

Everything except the lesion radius is time-reversal symmetric in distribution (static, i.i.d. per
frame, a linear drift between two i.i.d. end points, or a pulsation with a uniform random phase), so
the only label information is the order of the frames: the set of frames of a shrinking sequence
is distributed exactly like that of a growing one. A per-frame model averaged over frames (2.5D) is
therefore at chance by construction, while a model that reads the order (CNN + RNN, 3D CNN) is
not. Nothing but the lesion depends on the frame index. One caveat is unavoidable for a monotone
change: a model that knows which frame it sees (the first, say) can guess from the lesion's absolute
size, which is smaller at the start of a growing sequence; the size range is wide compared with the
change within a sequence to keep that weak (about 69 % from the first frame's bright area, against
99 % from its change between the first and last frames).

Layout: x uint8 (N, 1, T, H, W), channels first like volumes (time is the depth axis), y int64 (N,).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from medpipe.data.sources.base import (
    DataOptions,
    Source,
    SourceData,
    generated_splits,
    register_source,
)

CLASSES = ["shrinking", "growing"]

# Lesion radius (pixels at image_size 32; scaled with the image): the small end of the trajectory
# and how much it grows within one sequence.
R_SMALL = (1.5, 5.0)
R_GROWTH = (2.0, 3.5)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def make_cine(
    n: int, frames: int, size: int, noise: float, rng: np.random.Generator, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Return uint8 sequences (n, 1, frames, size, size) and int64 labels (n,), 1 = growing.

    Exactly half the sequences (rounded down) shrink. Generated in chunks to bound memory.
    """
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    x = np.empty((n, 1, frames, size, size), np.uint8)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x[start : start + m, 0] = _growing(m, frames, size, noise, rng)
    shrink = labels == 0
    x[shrink] = x[shrink][:, :, ::-1]  # shrinking = growing played backwards
    return x, labels


def _growing(n: int, frames: int, size: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """n growing sequences, uint8 (n, frames, size, size)."""
    t_len, k = frames, size / 32.0
    f32 = np.float32
    u = np.linspace(0.0, 1.0, t_len, dtype=f32)  # normalised time, forward
    yy, xx = np.mgrid[0:size, 0:size].astype(f32)

    # Lesion: radius r0 -> r0 + growth along a monotone ease curve u**gamma; centre drifts linearly
    # between two points placed symmetrically about a random centre (reversal swaps them).
    r0 = rng.uniform(*R_SMALL, n) * k
    growth = rng.uniform(*R_GROWTH, n) * k
    gamma = np.exp(rng.uniform(np.log(0.6), np.log(1.6), n))
    radius = (r0[:, None] + growth[:, None] * u[None, :] ** gamma[:, None]).astype(f32)  # (n, T)
    margin = (R_SMALL[1] + R_GROWTH[1]) * k + 1.0
    centre = rng.uniform(margin, size - 1 - margin, (n, 2))
    drift = rng.uniform(-1.0, 1.0, (n, 2)) * k
    pos = centre[:, None, :] + drift[:, None, :] * (2.0 * u[None, :, None] - 1.0)  # (n, T, 2)
    amp = rng.uniform(0.7, 1.1, n)
    dist = np.sqrt(
        (yy[None, None] - pos[..., 0, None, None].astype(f32)) ** 2
        + (xx[None, None] - pos[..., 1, None, None].astype(f32)) ** 2
    )
    objects = amp[:, None, None, None].astype(f32) * _sigmoid(
        (radius[..., None, None] - dist) / f32(0.6 * k)
    )  # (n, T, H, W)

    # Distractors: 1-3 elongated vessel-like structures; the first one's width pulsates with a
    # uniform random phase (time-reversal symmetric), the others are static.
    k_max = 3
    present = np.arange(k_max)[None, :] < rng.integers(1, k_max + 1, n)[:, None]
    cy = rng.uniform(2, size - 3, (n, k_max))
    cx = rng.uniform(2, size - 3, (n, k_max))
    theta = rng.uniform(0, np.pi, (n, k_max))
    s_major = rng.uniform(4.0, 8.0, (n, k_max)) * k
    s_minor = rng.uniform(0.7, 1.1, (n, k_max)) * k
    v_amp = rng.uniform(0.5, 0.9, (n, k_max)) * present
    phase = rng.uniform(0, 2 * np.pi, n)
    period = rng.uniform(3.0, 8.0, n)
    pulse = 1.0 + 0.2 * np.sin(
        2 * np.pi * np.arange(t_len)[None, :] / period[:, None] + phase[:, None]
    )
    c, s = np.cos(theta)[..., None, None], np.sin(theta)[..., None, None]
    dy = yy[None, None] - cy[..., None, None]
    dx = xx[None, None] - cx[..., None, None]
    along = ((c * dx + s * dy) / s_major[..., None, None]) ** 2  # (n, k, H, W)
    across = ((-s * dx + c * dy) / s_minor[..., None, None]) ** 2
    static = (v_amp[:, 1:, None, None] * np.exp(-0.5 * (along[:, 1:] + across[:, 1:]))).sum(1)
    objects += static[:, None].astype(f32)
    width = pulse[:, :, None, None] ** 2  # (n, T, 1, 1): across / width
    objects += (
        v_amp[:, 0, None, None, None]
        * np.exp(-0.5 * (along[:, 0, None] + across[:, 0, None] / width))
    ).astype(f32)

    # Half the sequences also hold a static round blob in the lesion's size range, so "is there a
    # round blob" is no shortcut: the lesion is the one that changes.
    has_blob = rng.random(n) < 0.5
    b_r = rng.uniform(R_SMALL[0], R_SMALL[1] + R_GROWTH[1], n) * k
    b_pos = rng.uniform(2, size - 3, (n, 2))
    b_amp = rng.uniform(0.7, 1.1, n) * has_blob
    b_dist = np.sqrt(
        (yy[None] - b_pos[:, 0, None, None]) ** 2 + (xx[None] - b_pos[:, 1, None, None]) ** 2
    )
    objects += (b_amp[:, None, None] * _sigmoid((b_r[:, None, None] - b_dist) / (0.6 * k)))[
        :, None
    ].astype(f32)

    # Background texture (static), gain/offset per sequence, gain flicker and noise i.i.d. per frame.
    from scipy.ndimage import gaussian_filter  # here: the config check imports this module

    background = gaussian_filter(rng.standard_normal((n, size, size)), sigma=(0, 3 * k, 3 * k))
    background /= background.std(axis=(1, 2), keepdims=True) + 1e-8
    gain = rng.uniform(0.8, 1.2, (n, 1, 1, 1)) * (
        1.0 + 0.03 * rng.standard_normal((n, t_len, 1, 1))
    )
    offset = rng.uniform(-0.15, 0.15, (n, 1, 1, 1))
    img = gain.astype(f32) * (f32(0.25) * background[:, None].astype(f32) + objects)
    img += offset.astype(f32)
    img += f32(noise) * rng.standard_normal((n, t_len, size, size), dtype=f32)
    lo, hi = -0.8, 2.2
    return np.clip((img - lo) * f32(255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)


@register_source("synthetic_cine")
class SyntheticCineSource(Source):
    class Options(DataOptions):
        kind: Literal["frames"]
        seed: int
        frames: Annotated[int, Field(ge=2, le=256)]
        image_size: Annotated[int, Field(ge=16, le=256)]
        n_train: Annotated[int, Field(ge=2)]
        n_val: Annotated[int, Field(ge=2)]
        n_test: Annotated[int, Field(ge=2)]
        noise: Annotated[float, Field(ge=0)]

    def describe(self) -> dict[str, Any]:
        keys = ("seed", "frames", "image_size", "n_train", "n_val", "n_test", "noise")
        return {"source": "synthetic_cine", **{k: self.cfg[k] for k in keys}}

    def load(self) -> SourceData:
        c = self.cfg
        splits = generated_splits(
            c,
            lambda n, rng: make_cine(
                n, int(c["frames"]), int(c["image_size"]), float(c["noise"]), rng
            ),
        )
        return SourceData(
            splits,
            "binary",
            "frames",
            list(CLASSES),
            255.0,
            info={"generator": "synthetic_cine", "seed": int(c["seed"])},
        )
