"""Does a local npz hold the MedMNIST set its flag names? Split sizes, shape, channels, labels.

Torch-free: it reads only the raw arrays of `read_medmnist_npz` (split -> (images, labels), as
stored: 2D (N,H,W) or (N,H,W,C), 3D (N,D,H,W) or (N,D,H,W,C)) and the catalogue entry.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np

from medpipe.data.catalog import MedMNISTInfo


def _grid(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _per_sample(shape: tuple[int, ...]) -> str:
    return f"(N, {', '.join(str(d) for d in shape[1:])})" if len(shape) > 1 else "(N,)"


def _layout(info: MedMNISTInfo, x: np.ndarray) -> tuple[tuple[int, ...], int] | None:
    """(spatial shape, channels) of stored images read as `info.kind`; None if not that layout."""
    nd = 3 if info.kind == "volume" else 2
    sample = tuple(int(d) for d in x.shape[1:])
    if len(sample) == nd:
        return sample, 1
    if len(sample) == nd + 1 and sample[-1] <= 4:
        return sample[:-1], sample[-1]
    return None


def _image_problems(info: MedMNISTInfo, size: int, x: np.ndarray) -> list[str]:
    """Phrases (without the split) for one split's images, worded alike for every split."""
    nd = 3 if info.kind == "volume" else 2
    what = "volumes" if info.kind == "volume" else "images"
    layout = _layout(info, x)
    if layout is None:
        stored = (0,) + (size,) * nd + ((info.channels,) if info.channels > 1 else ())
        return [
            f"{what} are stored as {_per_sample(x.shape)}, {info.flag} at size {size} as "
            f"{_per_sample(stored)}"
        ]
    spatial, channels = layout
    out = []
    if spatial != (size,) * nd:
        out.append(
            f"{what} are {_grid(spatial)}, {info.flag} at size {size} is {_grid((size,) * nd)}"
        )
    if channels != info.channels:
        out.append(
            f"{what} have {channels} channel(s), {info.flag} has {info.channels}"
            + (" (gray)" if info.channels == 1 else " (RGB)" if info.channels == 3 else "")
        )
    return out


def _label_problems(info: MedMNISTInfo, y: np.ndarray) -> list[str]:
    k = len(info.classes)
    if info.task == "multilabel":
        if y.ndim != 2 or y.shape[1] != k:
            return [f"labels are {_per_sample(y.shape)}, {info.flag} has (N, {k}) 0/1 columns"]
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            return [f"labels hold {int(bad.sum())} value(s) other than 0/1 (e.g. {y[bad][0]})"]
        return []
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        return [
            f"labels are {_per_sample(y.shape)}, {info.flag} has one class index per sample "
            "((N,) or (N, 1))"
        ]
    v = y.astype(np.float64, copy=False)
    whole = np.isfinite(v) & (v == np.round(v))
    if not whole.all():
        return [f"labels hold {int((~whole).sum())} non-integer value(s) (e.g. {y[~whole][0]})"]
    bad = (v < 0) | (v > k - 1)
    if bad.any():
        return [
            f"labels hold {int(bad.sum())} value(s) outside 0..{k - 1} of {info.flag}'s {k} "
            f"classes (e.g. label {int(v[bad][0])})"
        ]
    return []


def catalogue_mismatches(
    info: MedMNISTInfo, size: int, arrays: dict[str, tuple[np.ndarray, np.ndarray]]
) -> list[str]:
    """One short phrase per way the arrays differ from `info` at `size`; [] when they match.

    A phrase true of every split is given once; otherwise it names the split(s).
    """
    out = [
        f"{split} has {len(arrays[split][0])} samples, {info.flag} has {expected}"
        for split, expected in info.n_samples.items()
        if len(arrays[split][0]) != expected
    ]
    for problems in (
        {s: _image_problems(info, size, x) for s, (x, _) in arrays.items()},
        {s: _label_problems(info, y) for s, (_, y) in arrays.items()},
    ):
        seen: list[str] = []
        for phrases in problems.values():
            seen += [p for p in phrases if p not in seen]
        for phrase in seen:
            splits = [s for s, phrases in problems.items() if phrase in phrases]
            out.append(phrase if len(splits) == len(problems) else f"{'/'.join(splits)} {phrase}")
    # Only the side differs and it is another official size: say which data.size fits.
    spatial = {(_layout(info, x) or ((), 0))[0] for x, _ in arrays.values()}
    if len(out) == 1 and len(spatial) == 1:
        sides = set(spatial.pop())
        if len(sides) == 1 and (side := sides.pop()) != size and side in info.md5:
            out[0] += f" (data.size={side} selects that version)"
    return out


def _own_kind(x: np.ndarray) -> str | None:
    """How a flag outside the catalogue reads these images: image, volume (data.kind), or None."""
    if x.ndim == 3 or (x.ndim == 4 and x.shape[-1] in (1, 3)):
        return "image"
    return "volume" if x.ndim == 4 and x.shape[-1] > 4 else None


def _path_override(path: str | Path) -> str:
    """data.path=PATH as one shell word that Hydra reads back as PATH."""
    text = str(path)
    if re.fullmatch(r"[\w./+:@%-]+", text):
        return f"data.path={text}"
    if re.fullmatch(r"[\w./+:@% -]+", text):  # spaces: Hydra keeps them, the shell needs quotes
        return f'"data.path={text}"'
    hydra = "data.path='" + text.replace("'", "\\'") + "'"  # Hydra quoting for , = ' [ ] etc.
    return f'"{hydra}"' if not re.search(r'[$`"\\!]', text) else shlex.quote(hydra)


def catalogue_error(
    path: str | Path, info: MedMNISTInfo, size: int, mismatches: list[str], images: np.ndarray
) -> str:
    """The one error line for a file that is not `info.flag` at `size`, and how to load it.

    `images`: the file's train images, which decide the data.kind it loads under its own name.
    """
    head = f"{path}: not {info.flag} at size {size}: {'; '.join(mismatches)}."
    kind = _own_kind(images)
    if kind is None:
        return (
            f"{head} Under its own name it would not load either: medpipe reads 2D images as "
            "(N, H, W) or (N, H, W, C) with C 1 or 3 and 3D volumes as (N, D, H, W)"
        )
    volume = " data.kind=volume" if kind == "volume" else ""
    return (
        f"{head} To train on this file under its own name, use data=medmnist data.flag=mydata "
        f"{_path_override(path)}{volume} (any name that is not a MedMNIST flag; the task and "
        "classes, named 0, 1, ..., are then inferred from the labels)"
    )
