"""Augmentation of whole batches on the training device, from the same YAML as albumentations.

The in-memory loader keeps every image on the device, so per-sample albumentations would undo its
speed. `BatchAugment` reads the `augmentation.train` entries and applies the same transforms, with
the same parameters, to a whole (B, C, H, W) batch at once: one random draw per sample, the
transform applied where that sample's coin flip (p) came up, no per-sample Python and no
host-device synchronisation. Intensities stay on the stored scale (0-255 for uint8 images).

The entries are instantiated by albumentations itself, and the parameter ranges are read from the
validated transforms, so a scalar, a range or a per-axis dict means here what it means there.
Supported (albumentations 2.0 semantics, checked pixel by pixel or in distribution by
tests/test_batch_augment.py): HorizontalFlip, VerticalFlip, Affine (rotate, scale, translate_percent
or translate_px in whole pixels, shear, keep_ratio, a scalar fill; bilinear, constant border: the
matrix albumentations builds, Shear @ Rotate @ Scale about the centre, then the shift),
RandomBrightnessContrast (x * (1 + a) + b * max), RandomGamma (gamma_limit in percent), GaussNoise
(std_range relative to max, per_channel), CoarseDropout (integer hole sizes from fractions or
pixels, integer corners, a scalar fill). Other transforms or arguments make `on_device()` false
(`medpipe.data.augment_ops.device_misfit` names them), and `data.loader=auto` falls back to the
DataLoader path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medpipe.data.augment_ops import ON_DEVICE as SUPPORTED
from medpipe.data.augment_ops import device_misfit
from medpipe.data.augment_ops import op_name as _name
from medpipe.data.transforms import instantiate_albumentations
from medpipe.errors import ConfigError

GEOMETRIC = frozenset({"HorizontalFlip", "VerticalFlip", "Affine"})


def _inverse(forward: torch.Tensor) -> torch.Tensor:
    """(B, 6): the inverse maps (output -> input, what grid_sample samples) of the forward maps
    (B, 2, 3) = [A | t], in closed form, as rows (gx, gy) of [A^-1 | -A^-1 t] flattened."""
    lin, t = forward[:, :, :2], forward[:, :, 2:]
    det = lin[:, 0, 0] * lin[:, 1, 1] - lin[:, 0, 1] * lin[:, 1, 0]
    # inverse of [[a, b], [c, d]] = [[d, -b], [-c, a]] / det
    sign = _ADJUGATE_SIGN.to(forward.device)
    inv_lin = lin.flip((1, 2)).transpose(1, 2) * (sign / det.view(-1, 1, 1))
    return torch.cat([inv_lin, -(inv_lin @ t)], 2).reshape(-1, 6)


def _warp(x: torch.Tensor, inverse: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Resample x (B, C, H, W) under the inverse maps (B, 6) (see `_inverse`) in grid_sample's
    normalised coordinates: bilinear, `fill` outside (albumentations' constant border)."""
    n, (h, w) = x.shape[0], x.shape[-2:]
    grid = (inverse @ _grid_basis(h, w, x.device, x.dtype)).view(n, h, w, 2)
    if fill:  # grid_sample pads with zeros: resample the difference to the fill instead
        return F.grid_sample(x - fill, grid, align_corners=False).add_(fill)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


_ADJUGATE_SIGN = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
_BASIS: dict[tuple, torch.Tensor] = {}


def _grid_basis(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(6, H*W*2) such that inverse maps (B, 2, 3) viewed as (B, 6), times it, are the sampling
    grids (B, H, W, 2), contiguous.

    One plain GEMM writes the whole batch's grids in grid_sample's layout. Broadcast arithmetic
    into a trailing size-2 axis, a transpose into it, or affine_grid's batched matmul of 3-wide
    matrices cost 5-20x more on a CPU at 28x28. Row (k, j) holds pixel-centre coordinate j
    (x, y, 1; normalised, align_corners=False) in grid component k (gx, gy).
    """
    key = (h, w, str(device), dtype)
    if key not in _BASIS:
        xs = (torch.arange(w, device=device, dtype=dtype) * 2 + 1) / w - 1
        ys = (torch.arange(h, device=device, dtype=dtype) * 2 + 1) / h - 1
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        coords = (xx.reshape(-1), yy.reshape(-1), torch.ones(h * w, device=device, dtype=dtype))
        basis = torch.zeros(2, 3, h * w, 2, device=device, dtype=dtype)
        for k in range(2):
            for j, coord in enumerate(coords):
                basis[k, j, :, k] = coord
        _BASIS[key] = basis.view(6, h * w * 2)
    return _BASIS[key]


def _then(later: torch.Tensor, earlier: torch.Tensor | None) -> torch.Tensor:
    """The map `later` after `earlier`, both (B, 2, 3) affine maps [A | t]."""
    if earlier is None:
        return later
    lin = later[:, :, :1] * earlier[:, :1] + later[:, :, 1:2] * earlier[:, 1:2]
    lin[:, :, 2:] += later[:, :, 2:]
    return lin


class BatchAugment(nn.Module):
    """`block`: samples whose parameters are drawn at once (every coin, angle, factor and the
    composed and inverted maps, in a few tensor operations for thousands of samples); each batch
    takes the next rows, so per batch only the image work runs. Same seed, same batch sizes:
    same augmentation."""

    def __init__(
        self,
        ops: Sequence[dict[str, Any]],
        seed: int = 0,
        max_value: float = 255.0,
        block: int = 4096,
    ):
        super().__init__()
        misfits = [
            f"augmentation.train[{i}] ({op.get('_target_')})"
            + (f" {why.split('.', 1)[1]}" if "=" in why else "")
            for i, op in enumerate(ops)
            if (why := device_misfit(op)) is not None
        ]
        if misfits:
            raise ConfigError(
                f"{', '.join(misfits)}: no on-device version; use data.loader=workers "
                f"(on-device: {', '.join(sorted(SUPPORTED))})"
            )
        self.names = [_name(op) for op in ops]
        # albumentations' own validation and argument normalisation (scalars, ranges, dicts)
        self.transforms = instantiate_albumentations(ops)
        self.max_value = max_value
        self.block = block
        self.stages = self._stages()
        self._plans: dict[tuple, _Plan] = {}
        self.seed = seed

    @property
    def seed(self) -> int:
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        """A new seed restarts the stream (the data module gives each DDP rank its own)."""
        self._seed = int(value)
        self._generator: torch.Generator | None = None
        self._drawn: list[torch.Tensor] = []  # per stage, parameters of the drawn block's samples
        self._drawn_for: _Plan | None = None  # the image size and device they were drawn for
        self._next = 0

    def _stages(self) -> list[tuple[str, list[int], float | None]]:
        """The transforms in order as stages (kind, transform indices, border fill): a run of
        flips and affines with one border fill is one 'warp' (one resample); every other
        transform is a stage of its own. Flips map the image onto itself and have no border."""
        stages: list[tuple[str, list[int], float | None]] = []
        for i, (name, t) in enumerate(zip(self.names, self.transforms, strict=True)):
            if name not in GEOMETRIC:
                stages.append((name, [i], None))
                continue
            fill = float(t.fill) if name == "Affine" else None
            last = stages[-1] if stages and stages[-1][0] == "warp" else None
            if last is not None and (fill is None or last[2] is None or last[2] == fill):
                stages[-1] = ("warp", [*last[1], i], last[2] if fill is None else fill)
                continue
            stages.append(("warp", [i], fill))
        return stages

    def _plan(self, h: int, w: int, device: torch.device) -> _Plan:
        key = (h, w, str(device))
        if key not in self._plans:
            self._plans[key] = _Plan(self.transforms, self.names, h, w, self.max_value, device)
        return self._plans[key]

    @torch.no_grad()
    def _draw(self, n: int, plan: _Plan, device: torch.device) -> list[torch.Tensor]:
        """Per stage, the parameters of the next n samples. One random call draws every coin flip
        (p) and every uniform parameter; each coin is folded into its sample's parameters
        (identity where it did not come up), so no transform is computed twice."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self._seed)
        u = torch.rand(n, plan.width, device=device, generator=self._generator)
        u = torch.addcmul(plan.lo, u, plan.span)
        coins = u[:, : len(self.transforms)] < plan.p
        drawn = []
        for kind, idx, _fill in self.stages:
            if kind == "warp":
                geometry = None  # forward map (n, 2, 3), normalised coordinates
                for i in idx:
                    t, cols = self.transforms[i], u[:, plan.columns[i]]
                    geometry = getattr(self, f"_{self.names[i]}")(
                        t, coins[:, i], cols, plan, geometry
                    )
                drawn.append(_inverse(geometry))
            else:
                i = idx[0]
                t, cols = self.transforms[i], u[:, plan.columns[i]]
                drawn.append(getattr(self, f"_draw_{kind}")(t, coins[:, i], cols, plan))
        return drawn

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) on the stored scale (uint8 or float); returns float32 on that scale."""
        b = x.shape[0]
        plan = self._plan(*x.shape[-2:], x.device)
        if plan is not self._drawn_for or self._next + b > len(self._drawn[0]):
            self._drawn, self._drawn_for = self._draw(max(self.block, b), plan, x.device), plan
            self._next = 0
        params = [d[self._next : self._next + b] for d in self._drawn]
        self._next += b
        x = x.float()
        for (kind, idx, fill), p in zip(self.stages, params, strict=True):
            if kind == "warp":
                x = _warp(x, p, fill or 0.0)
            else:
                x = getattr(self, f"_apply_{kind}")(x, p, self.transforms[idx[0]], plan)
        return x

    # -- geometry: forward maps (n, 2, 3) composed in order --------------------------------------
    @staticmethod
    def _flip(apply, plan, geometry, axis: int):
        """Mirror along x (axis 0) or y (axis 1) after `geometry`: negate that row of the map."""
        sign = 1.0 - 2.0 * apply.float().view(-1, 1, 1) * plan.row_mask[axis]
        return (plan.eye if geometry is None else geometry) * sign

    def _HorizontalFlip(self, t, apply, u, plan, geometry):
        return self._flip(apply, plan, geometry, 0)

    def _VerticalFlip(self, t, apply, u, plan, geometry):
        return self._flip(apply, plan, geometry, 1)

    def _Affine(self, t, apply, u, plan, geometry):
        # u: angle (rad), scale x, scale y, shift x and y in pixels (before rounding), shear x, y
        n = u.shape[0]
        sheared, shift_px = plan.affine[id(t)]
        theta, sx = u[:, 0], u[:, 1]
        sy = sx if t.keep_ratio else u[:, 2]
        cos, sin = torch.cos(theta), torch.sin(theta)
        # albumentations' matrix about the centre, in pixels (x right, y down):
        # Shear [[1, kx], [ky, 1]] @ Rotate [[cos, sin], [-sin, cos]] @ diag(sx, sy)
        if sheared:
            k = torch.tan(u[:, 5:7])
            kx, ky = k[:, 0], k[:, 1]
            a00, a01 = cos - kx * sin, sin + kx * cos
            a10, a11 = ky * cos - sin, ky * sin + cos
        else:
            a00, a01, a10, a11 = cos, sin, -sin, cos
        # whole-pixel shifts: int() of a fraction of the side, or randint of pixels
        shift = (torch.floor(u[:, 3:5]) if shift_px else torch.trunc(u[:, 3:5])) * plan.pixel
        # in normalised coordinates the off-diagonal terms carry the aspect ratio
        m = torch.stack(
            [a00 * sx, a01 * sy * plan.aspect[0], shift[:, 0]]
            + [a10 * sx * plan.aspect[1], a11 * sy, shift[:, 1]],
            -1,
        )
        m = torch.where(apply.view(-1, 1, 1), m.view(n, 2, 3), plan.eye)
        return _then(m, geometry)

    # -- intensity: parameters per sample, then applied per batch --------------------------------
    def _draw_RandomBrightnessContrast(self, t, apply, u, plan):
        # (n, 2): contrast factor, brightness shift on the stored scale
        return torch.where(apply.view(-1, 1), u, plan.no_change)

    def _apply_RandomBrightnessContrast(self, x, p, t, plan):
        alpha, beta = p[:, :1].view(-1, 1, 1, 1), p[:, 1:].view(-1, 1, 1, 1)
        return torch.addcmul(beta, x, alpha).clamp_(0, self.max_value)

    def _draw_RandomGamma(self, t, apply, u, plan):
        return torch.where(apply.view(-1, 1), u, 1.0)

    def _apply_RandomGamma(self, x, p, t, plan):
        m = self.max_value
        return (x / m).clamp_(0, 1).pow_(p.view(-1, 1, 1, 1)) * m

    def _draw_GaussNoise(self, t, apply, u, plan):
        return torch.where(apply.view(-1, 1), u, 0.0)

    def _apply_GaussNoise(self, x, p, t, plan):
        shape = x.shape if t.per_channel else (x.shape[0], 1, *x.shape[2:])
        noise = torch.randn(shape, device=x.device, generator=self._generator)
        return torch.addcmul(x, noise, p.view(-1, 1, 1, 1)).clamp_(0, self.max_value)

    def _draw_CoarseDropout(self, t, apply, u, plan):
        """(n, 4 * max holes): per hole its height, width and top-left corner in whole pixels;
        holes beyond the sample's count, or where its coin did not come up, get height 0."""
        n, (h, w) = u.shape[0], plan.size
        holes = torch.floor(u[:, 1:]).view(n, -1, 4)
        count = torch.floor(u[:, 0]) * apply.float()  # holes this sample gets
        index = torch.arange(holes.shape[1], device=u.device).view(1, -1)
        height = holes[:, :, 0] * (index < count.view(-1, 1)).float()
        width = holes[:, :, 1]
        # corners uniform over the integer positions where the hole fits
        y0 = torch.floor(u[:, 3::4] * (h - holes[:, :, 0] + 1))
        x0 = torch.floor(u[:, 4::4] * (w - width + 1))
        return torch.stack([height, width, y0, x0], -1).view(n, -1)

    def _apply_CoarseDropout(self, x, p, t, plan):
        b, (h, w) = x.shape[0], x.shape[-2:]
        yy, xx = plan.rows.view(1, 1, h, 1), plan.cols.view(1, 1, 1, w)
        mask = torch.zeros(b, 1, h, w, dtype=torch.bool, device=x.device)
        for hole in p.view(b, -1, 4, 1, 1, 1).unbind(1):
            ph, pw, y0, x0 = hole.unbind(1)
            mask |= (yy >= y0) & (yy < y0 + ph) & (xx >= x0) & (xx < x0 + pw)
        return x.masked_fill(mask, float(t.fill))


class _Plan:
    """Per image size and device: where each transform's uniform draws sit in the one (B, width)
    random matrix (the first columns are the coins), their ranges, and constant tensors."""

    def __init__(self, transforms: list, names: list[str], h: int, w: int, max_value, device):
        ranges: list[tuple[float, float]] = [(0.0, 1.0)] * len(transforms)  # the coins
        self.columns: list[slice] = []
        self.affine: dict[int, tuple[bool, bool]] = {}  # per Affine: sheared, shift in pixels
        for t, name in zip(transforms, names, strict=True):
            cols = self._ranges(t, name, h, w, max_value)
            self.columns.append(slice(len(ranges), len(ranges) + len(cols)))
            ranges += cols

        def tensor(v) -> torch.Tensor:
            return torch.tensor(v, dtype=torch.float32, device=device)

        self.width = len(ranges)
        self.lo = tensor([r[0] for r in ranges])
        self.span = tensor([r[1] - r[0] for r in ranges])
        self.p = tensor([float(t.p) for t in transforms])
        self.eye = torch.eye(2, 3, device=device)
        self.row_mask = tensor([[[1.0], [0.0]], [[0.0], [1.0]]])  # (axis, 2, 1)
        self.pixel = tensor([2 / w, 2 / h])
        self.aspect = (h / w, w / h)
        self.no_change = tensor([1.0, 0.0])
        self.rows, self.cols = tensor(range(h)), tensor(range(w))
        self.size = (h, w)

    def _ranges(self, t, name: str, h: int, w: int, max_value) -> list[tuple[float, float]]:
        """The uniform ranges a transform draws per sample, in the units its method uses."""
        if name == "Affine":
            rad = math.pi / 180
            cols = [(t.rotate[0] * rad, t.rotate[1] * rad), t.scale["x"], t.scale["y"]]
            if t.translate_px is not None:  # randint(lo, hi) = floor of uniform [lo, hi + 1)
                cols += [(lo, hi + 1) for lo, hi in (t.translate_px["x"], t.translate_px["y"])]
            else:
                tp = t.translate_percent or {"x": (0.0, 0.0), "y": (0.0, 0.0)}
                cols += [(tp["x"][0] * w, tp["x"][1] * w), (tp["y"][0] * h, tp["y"][1] * h)]
            # albumentations negates the drawn shear angles
            shear = [(-hi * rad, -lo * rad) for lo, hi in (t.shear["x"], t.shear["y"])]
            self.affine[id(t)] = (any(lo or hi for lo, hi in shear), t.translate_px is not None)
            return cols + shear
        if name == "RandomBrightnessContrast":
            (clo, chi), (blo, bhi) = t.contrast_limit, t.brightness_limit
            return [(1 + clo, 1 + chi), (blo * max_value, bhi * max_value)]
        if name == "RandomGamma":
            return [(t.gamma_limit[0] / 100, t.gamma_limit[1] / 100)]
        if name == "GaussNoise":
            return [(t.std_range[0] * max_value, t.std_range[1] * max_value)]
        if name == "CoarseDropout":
            n_lo, n_hi = (int(v) for v in t.num_holes_range)
            hh, hw = t.hole_height_range, t.hole_width_range
            if hh[1] >= 1:  # pixels: randint over [lo, min(hi, side)]
                sizes = [(int(hh[0]), int(min(hh[1], h)) + 1), (int(hw[0]), int(min(hw[1], w)) + 1)]
            else:  # fractions of the side, truncated to whole pixels
                sizes = [(h * hh[0], h * hh[1]), (w * hw[0], w * hw[1])]
            return [(n_lo, n_hi + 1)] + (sizes + [(0.0, 1.0), (0.0, 1.0)]) * n_hi
        return []  # flips draw nothing but their coin
