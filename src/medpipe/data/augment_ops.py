"""Which albumentations transforms also run batched on the device, and which library serves which
sample kind (no torch import: the config validator reads this)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ON_DEVICE = frozenset(
    {
        "HorizontalFlip",
        "VerticalFlip",
        "Affine",
        "RandomBrightnessContrast",
        "RandomGamma",
        "GaussNoise",
        "CoarseDropout",
    }
)


def op_name(op: dict[str, Any]) -> str:
    return str(op.get("_target_", "")).rsplit(".", 1)[-1]


# The libraries `augmentation.train` entries may come from, by `_target_` prefix, and the sample kinds
# each one handles (albumentations is 2D only; MONAI array transforms take any channels-first array).
LIBRARIES = {"albumentations.": "albumentations", "monai.transforms.": "monai"}
LIBRARY_KINDS = {
    "albumentations": ("image",),
    "monai": ("image", "volume", "frames", "signal"),
}


def op_library(op: dict[str, Any]) -> str | None:
    """'albumentations', 'monai' or None (not a supported transform library)."""
    target = str(op.get("_target_", ""))
    return next((lib for prefix, lib in LIBRARIES.items() if target.startswith(prefix)), None)


# Arguments whose other values the on-device versions do not reproduce, with the values they do.
_DEVICE_VALUES: dict[str, dict[str, tuple]] = {
    "Affine": {
        "interpolation": (1,),  # cv2.INTER_LINEAR
        "border_mode": (0,),  # cv2.BORDER_CONSTANT
        "fit_output": (False,),
        "balanced_scale": (False,),
    },
    "RandomBrightnessContrast": {"brightness_by_max": (True,), "ensure_safe_range": (False,)},
    "GaussNoise": {"mean_range": ([0, 0],), "noise_scale_factor": (1,)},
}
_SCALAR_FILL = ("Affine", "CoarseDropout")  # fill: one number for every channel


def device_misfit(op: dict[str, Any]) -> str | None:
    """Why this entry has no batched on-device version ('Name' or 'Name.arg=value'), else None."""
    name = op_name(op)
    if op_library(op) != "albumentations" or name not in ON_DEVICE:
        return name if op_library(op) == "albumentations" else str(op.get("_target_"))
    for arg, allowed in _DEVICE_VALUES.get(name, {}).items():
        if arg in op and _plain(op[arg]) not in [_plain(v) for v in allowed]:
            return f"{name}.{arg}={op[arg]!r}"
    fill = op.get("fill", 0)
    if name in _SCALAR_FILL and (isinstance(fill, bool) or not isinstance(fill, int | float)):
        return f"{name}.fill={fill!r}"
    return None


def _plain(v: Any) -> Any:
    """Lists, tuples and numbers compared by value (YAML gives lists, defaults are tuples)."""
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


def on_device(ops: Sequence[dict[str, Any]]) -> bool:
    """True when every transform has a batched on-device version (albumentations ones, with
    arguments that version reproduces)."""
    return all(device_misfit(op) is None for op in ops)
