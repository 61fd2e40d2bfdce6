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

GEOMETRIC = frozenset({"HorizontalFlip", "VerticalFlip", "Affine"})


def _warp(x: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Resample x under the forward maps (B, 3, 3): bilinear, zeros outside (albumentations'
    constant border). grid_sample needs output -> input, the inverse, computed in closed form; the
    grid is built with broadcast arithmetic (affine_grid's small batched matmul is slow on CPUs)."""
    a, b_, c, d = forward[:, 0, 0], forward[:, 0, 1], forward[:, 1, 0], forward[:, 1, 1]
    tx, ty = forward[:, 0, 2], forward[:, 1, 2]
    det = a * d - b_ * c
    ia, ib, ic, id_ = d / det, -b_ / det, -c / det, a / det
    itx, ity = -(ia * tx + ib * ty), -(ic * tx + id_ * ty)
    h, w = x.shape[-2:]
    # pixel centres in normalised coordinates (align_corners=False)
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1
    # grid (B, H, W, 2) = x * column0 + y * column1 + t, written directly in its final layout
    col_x = torch.stack([ia, ic], -1).view(-1, 1, 1, 2)
    col_y = torch.stack([ib, id_], -1).view(-1, 1, 1, 2)
    shift = torch.stack([itx, ity], -1).view(-1, 1, 1, 2)
    grid = torch.addcmul(shift, xs.view(1, 1, w, 1), col_x) + ys.view(1, h, 1, 1) * col_y
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _compose(later: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
    """later @ earlier for (B, 3, 3) maps, without a batched matmul."""
    return (later.unsqueeze(-1) * earlier.unsqueeze(1)).sum(2)


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
        """x: (B, C, H, W) on the stored scale (uint8 or float); returns float32 on that scale.

        Each sample's coin flip is folded into its parameters (identity where it did not come up),
        so no transform is computed twice; consecutive flips and affines are composed into one
        matrix and resampled once.
        """
        g = self._gen(x.device)
        x = x.float()
        b = x.shape[0]
        geometry = None  # pending forward map (B, 3, 3) in normalised coordinates
        for op in self.ops:
            apply = torch.rand(b, device=x.device, generator=g) < float(op.get("p", 0.5))
            name = _name(op)
            if name in GEOMETRIC:
                m = getattr(self, f"_{name}")(x, op, apply, g)
                geometry = m if geometry is None else _compose(m, geometry)
                continue
            if geometry is not None:
                x, geometry = _warp(x, geometry), None
            x = getattr(self, f"_{name}")(x, op, apply, g)
        return _warp(x, geometry) if geometry is not None else x

    @staticmethod
    def _identity_where_not(apply: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(3, device=m.device).expand_as(m)
        return torch.where(apply.view(-1, 1, 1), m, eye)

    def _HorizontalFlip(self, x, op, apply, g):
        m = torch.eye(3, device=x.device).repeat(x.shape[0], 1, 1)
        m[:, 0, 0] = torch.where(apply, -1.0, 1.0)
        return m

    def _VerticalFlip(self, x, op, apply, g):
        m = torch.eye(3, device=x.device).repeat(x.shape[0], 1, 1)
        m[:, 1, 1] = torch.where(apply, -1.0, 1.0)
        return m

    def _Affine(self, x, op, apply, g):
        b, dev = x.shape[0], x.device
        rot = _range(op.get("rotate"), (0.0, 0.0), symmetric=True)
        scale = _range(op.get("scale"), (1.0, 1.0))
        trans = _range(op.get("translate_percent"), (0.0, 0.0), symmetric=True)
        shear = _range(op.get("shear"), (0.0, 0.0), symmetric=True)
        h, w = x.shape[-2:]
        theta = self._u(b, *rot, dev, g) * (math.pi / 180)
        sx = self._u(b, *scale, dev, g)
        # albumentations scales the axes independently unless keep_ratio
        sy = sx if op.get("keep_ratio", False) else self._u(b, *scale, dev, g)
        # albumentations shifts by whole pixels (truncated); grid units span 2 per image side.
        tx = torch.trunc(self._u(b, *trans, dev, g) * w) * (2 / w)
        ty = torch.trunc(self._u(b, *trans, dev, g) * h) * (2 / h)
        shx = torch.tan(self._u(b, *shear, dev, g) * (math.pi / 180))
        shy = torch.tan(self._u(b, *shear, dev, g) * (math.pi / 180))
        cos, sin = torch.cos(theta), torch.sin(theta)
        # Forward map A = R(theta) * Shear * diag(sx, sy) plus the translation.
        m = torch.zeros(b, 3, 3, device=dev)
        m[:, 0, 0], m[:, 0, 1] = sx * (cos - sin * shy), sy * (cos * shx - sin)
        m[:, 1, 0], m[:, 1, 1] = sx * (sin + cos * shy), sy * (sin * shx + cos)
        m[:, 0, 2], m[:, 1, 2], m[:, 2, 2] = tx, ty, 1.0
        return self._identity_where_not(apply, m)

    def _RandomBrightnessContrast(self, x, op, apply, g):
        b, dev = x.shape[0], x.device
        blim = _range(op.get("brightness_limit", 0.2), (-0.2, 0.2), symmetric=True)
        clim = _range(op.get("contrast_limit", 0.2), (-0.2, 0.2), symmetric=True)
        alpha = torch.where(apply, 1 + self._u(b, *clim, dev, g), 1.0).view(-1, 1, 1, 1)
        beta = torch.where(apply, self._u(b, *blim, dev, g) * self.max_value, 0.0).view(-1, 1, 1, 1)
        return (x * alpha + beta).clamp_(0, self.max_value)

    def _RandomGamma(self, x, op, apply, g):
        lo, hi = _range(op.get("gamma_limit", (80, 120)), (80.0, 120.0))
        gamma = torch.where(apply, self._u(x.shape[0], lo, hi, x.device, g) / 100, 1.0)
        return (x / self.max_value).clamp_(0, 1).pow_(gamma.view(-1, 1, 1, 1)) * self.max_value

    def _GaussNoise(self, x, op, apply, g):
        lo, hi = _range(op.get("std_range", (0.2, 0.44)), (0.2, 0.44))
        std = torch.where(apply, self._u(x.shape[0], lo, hi, x.device, g) * self.max_value, 0.0)
        noise = torch.randn(x.shape, device=x.device, generator=g) * std.view(-1, 1, 1, 1)
        return (x + noise).clamp_(0, self.max_value)

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
            mask |= hole & ((k < n_holes) & apply).view(-1, 1, 1, 1)
        return x.masked_fill(mask, 0.0)
