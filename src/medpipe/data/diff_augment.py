"""Differentiable augmentation of a GAN discriminator's inputs (DiffAugment, Zhao et al. 2020):
the same random transforms applied to real and to generated images, with gradients flowing back
through them into the generator, so a discriminator trained on little data overfits less and the
generator still learns the un-augmented images.

Ops work on float batches (N, C, H, W) in the discriminator's input space, one random draw per
sample, each op applied to a sample with probability `p`:

- flip: horizontal mirror. Beware: at p >= 0.5 the discriminator cannot tell an image from its
  mirror image any more, so the generator may learn mirrored anatomy ("leaking"); keep p < 0.5
  or leave flip out for data with a handedness (chest X-rays).
- translation: integer shifts of up to 1/8 of each side, zero fill.
- cutout: a zeroed square of half the side at a random place.
- brightness: an offset in [-0.5, 0.5); contrast: a factor in [0.5, 1.5) about the image mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

DiffAugmentOp = Literal["flip", "translation", "cutout", "brightness", "contrast"]
OPS: tuple[str, ...] = DiffAugmentOp.__args__  # type: ignore[attr-defined]
TRANSLATION_RATIO = 0.125  # DiffAugment's defaults
CUTOUT_RATIO = 0.5


def _chosen(x: torch.Tensor, p: float) -> torch.Tensor:
    """(N,) bool: which samples get the op."""
    if p >= 1.0:
        return torch.ones(len(x), dtype=torch.bool, device=x.device)
    return torch.rand(len(x), device=x.device) < p


def flip(x: torch.Tensor, p: float) -> torch.Tensor:
    return torch.where(_chosen(x, p).view(-1, 1, 1, 1), x.flip(3), x)


def translation(x: torch.Tensor, p: float, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift each sample by whole pixels; what moves in from outside is 0."""
    n, _, h, w = x.shape
    sy, sx = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    keep = _chosen(x, p).long()
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device) * keep.view(-1, 1, 1)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device) * keep.view(-1, 1, 1)
    # index into the image padded by one zero pixel: positions outside clamp onto the padding
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (N, H+2, W+2, C)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, p: float, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero a (ratio*H) x (ratio*W) square centred anywhere in the image (clipped at the edges)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (n, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w, (n, 1, 1), device=x.device) - cw // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    hole &= _chosen(x, p).view(-1, 1, 1)
    return x * (~hole).unsqueeze(1).to(x.dtype)


def brightness(x: torch.Tensor, p: float) -> torch.Tensor:
    shift = torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5
    return x + shift * _chosen(x, p).view(-1, 1, 1, 1).to(x.dtype)


def contrast(x: torch.Tensor, p: float) -> torch.Tensor:
    factor = torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5
    factor = torch.where(_chosen(x, p).view(-1, 1, 1, 1), factor, torch.ones_like(factor))
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * factor + mean


FUNCTIONS = {
    "flip": flip,
    "translation": translation,
    "cutout": cutout,
    "brightness": brightness,
    "contrast": contrast,
}


class DiffAugment(nn.Module):
    """The ops in the order given (colour ops are best listed before geometric ones); identity
    when the list is empty."""

    def __init__(self, ops: Sequence[str] = (), p: float = 1.0):
        super().__init__()
        unknown = [op for op in ops if op not in FUNCTIONS]
        if unknown:
            raise ValueError(f"unknown DiffAugment op(s) {unknown}; use {', '.join(OPS)}")
        self.ops, self.p = list(ops), float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = FUNCTIONS[op](x, self.p)
        return x

    def extra_repr(self) -> str:
        return f"ops={self.ops}, p={self.p}"
