"""Augmentation of whole batches on the training device, from the same YAML as albumentations.

The in-memory loader keeps every image on the device, so per-sample albumentations would undo its
speed. `BatchAugment` reads the `augmentation.train` entries and applies the same transforms, with
the same parameters, to a whole (B, C, H, W) batch at once: one random draw per sample, the
transform applied where that sample's coin flip (p) came up, no per-sample Python and no
host-device synchronisation. Intensities stay on the stored scale (0-255 for uint8 images).

Supported (albumentations 2.0 semantics): HorizontalFlip, VerticalFlip, Affine (rotate, scale per axis
unless keep_ratio, translate_percent in whole pixels, shear; bilinear, constant 0 border), RandomBrightnessContrast (x * (1 + a) +
b * max), RandomGamma (gamma_limit in percent), GaussNoise (std_range relative to max),
CoarseDropout (num_holes_range, hole_height_range / hole_width_range as fractions, fill 0).
Anything else makes `supported()` false, and `data.loader=auto` falls back to the DataLoader path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medpipe.data.augment_ops import ON_DEVICE as SUPPORTED
from medpipe.data.augment_ops import op_name as _name
from medpipe.errors import ConfigError


def _range(v: Any, default: tuple[float, float], symmetric: bool = False) -> tuple[float, float]:
    if v is None:
        return default
    if isinstance(v, int | float):
        return (-float(v), float(v)) if symmetric else (float(v), float(v))
    lo, hi = v
    return float(lo), float(hi)


class BatchAugment(nn.Module):
    def __init__(self, ops: Sequence[dict[str, Any]], seed: int = 0, max_value: float = 255.0):
        super().__init__()
        unknown = [
            f"augmentation.train[{i}] ({op.get('_target_')})"
            for i, op in enumerate(ops)
            if _name(op) not in SUPPORTED
        ]
        if unknown:
            raise ConfigError(
                f"{', '.join(unknown)}: no on-device version; use data.loader=workers "
                f"(on-device: {', '.join(sorted(SUPPORTED))})"
            )
        self.ops = [dict(op) for op in ops]
        self.seed = seed
        self.max_value = max_value
        self._generator: torch.Generator | None = None

    def _gen(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def _u(self, n: int, lo: float, hi: float, device, g) -> torch.Tensor:
        return torch.rand(n, device=device, generator=g) * (hi - lo) + lo

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) on the stored scale (uint8 or float); returns float32 on that scale."""
        g = self._gen(x.device)
        x = x.float()
        b = x.shape[0]
        for op in self.ops:
            apply = torch.rand(b, device=x.device, generator=g) < float(op.get("p", 0.5))
            x = getattr(self, f"_{_name(op)}")(x, op, apply, g)
        return x

    @staticmethod
    def _where(apply: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        return torch.where(apply.view(-1, *([1] * (old.dim() - 1))), new, old)

    def _HorizontalFlip(self, x, op, apply, g):
        return self._where(apply, x.flip(-1), x)

    def _VerticalFlip(self, x, op, apply, g):
        return self._where(apply, x.flip(-2), x)

    def _Affine(self, x, op, apply, g):
        b, dev = x.shape[0], x.device
        rot = _range(op.get("rotate"), (0.0, 0.0), symmetric=True)
        scale = _range(op.get("scale"), (1.0, 1.0))
        trans = _range(op.get("translate_percent"), (0.0, 0.0), symmetric=True)
        shear = _range(op.get("shear"), (0.0, 0.0), symmetric=True)
        h, w = x.shape[-2:]
        theta = self._u(b, *rot, dev, g) * math.pi / 180
        sx = self._u(b, *scale, dev, g)
        sy = (
            sx if op.get("keep_ratio", False) else self._u(b, *scale, dev, g)
        )  # albumentations: independent
        # albumentations shifts by whole pixels (truncated); grid units span 2 per image side.
        tx = torch.trunc(self._u(b, *trans, dev, g) * w) * 2 / w
        ty = torch.trunc(self._u(b, *trans, dev, g) * h) * 2 / h
        shx = torch.tan(self._u(b, *shear, dev, g) * math.pi / 180)
        shy = torch.tan(self._u(b, *shear, dev, g) * math.pi / 180)
        cos, sin = torch.cos(theta), torch.sin(theta)
        # Forward map A = R(theta) * Shear * diag(sx, sy); grid_sample wants its inverse.
        fwd = torch.zeros(b, 3, 3, device=dev)
        fwd[:, 0, 0], fwd[:, 0, 1] = sx * (cos - sin * shy), sy * (cos * shx - sin)
        fwd[:, 1, 0], fwd[:, 1, 1] = sx * (sin + cos * shy), sy * (sin * shx + cos)
        fwd[:, 0, 2], fwd[:, 1, 2], fwd[:, 2, 2] = tx, ty, 1.0
        inv = torch.linalg.inv(fwd)[:, :2]
        grid = F.affine_grid(inv, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return self._where(apply, out, x)

    def _RandomBrightnessContrast(self, x, op, apply, g):
        b, dev = x.shape[0], x.device
        blim = _range(op.get("brightness_limit", 0.2), (-0.2, 0.2), symmetric=True)
        clim = _range(op.get("contrast_limit", 0.2), (-0.2, 0.2), symmetric=True)
        alpha = (1 + self._u(b, *clim, dev, g)).view(-1, 1, 1, 1)
        beta = (self._u(b, *blim, dev, g) * self.max_value).view(-1, 1, 1, 1)
        return self._where(apply, (x * alpha + beta).clamp(0, self.max_value), x)

    def _RandomGamma(self, x, op, apply, g):
        lo, hi = _range(op.get("gamma_limit", (80, 120)), (80.0, 120.0))
        gamma = (self._u(x.shape[0], lo, hi, x.device, g) / 100).view(-1, 1, 1, 1)
        out = (x / self.max_value).clamp(0, 1).pow(gamma) * self.max_value
        return self._where(apply, out, x)

    def _GaussNoise(self, x, op, apply, g):
        lo, hi = _range(op.get("std_range", (0.2, 0.44)), (0.2, 0.44))
        std = (self._u(x.shape[0], lo, hi, x.device, g) * self.max_value).view(-1, 1, 1, 1)
        noise = torch.randn(x.shape, device=x.device, generator=g) * std
        return self._where(apply, (x + noise).clamp(0, self.max_value), x)

    def _CoarseDropout(self, x, op, apply, g):
        b, _, h, w = x.shape
        dev = x.device
        n_lo, n_hi = (int(v) for v in _range(op.get("num_holes_range", (1, 1)), (1.0, 1.0)))
        hh = _range(op.get("hole_height_range", (0.1, 0.1)), (0.1, 0.1))
        hw = _range(op.get("hole_width_range", (0.1, 0.1)), (0.1, 0.1))
        n_holes = torch.randint(n_lo, n_hi + 1, (b,), device=dev, generator=g)
        yy = torch.arange(h, device=dev).view(1, 1, h, 1)
        xx = torch.arange(w, device=dev).view(1, 1, 1, w)
        mask = torch.zeros(b, 1, h, w, dtype=torch.bool, device=dev)
        for k in range(n_hi):
            ph = (self._u(b, *hh, dev, g) * h).clamp(min=1).view(-1, 1, 1, 1)
            pw = (self._u(b, *hw, dev, g) * w).clamp(min=1).view(-1, 1, 1, 1)
            y0 = torch.rand(b, device=dev, generator=g).view(-1, 1, 1, 1) * (h - ph)
            x0 = torch.rand(b, device=dev, generator=g).view(-1, 1, 1, 1) * (w - pw)
            hole = (yy >= y0) & (yy < y0 + ph) & (xx >= x0) & (xx < x0 + pw)
            mask |= hole & (k < n_holes).view(-1, 1, 1, 1)
        return self._where(apply, x.masked_fill(mask, 0.0), x)
