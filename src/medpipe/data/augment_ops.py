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


def on_device(ops: Sequence[dict[str, Any]]) -> bool:
    """True when every transform has a batched on-device version (albumentations ones only)."""
    return all(op_library(op) == "albumentations" and op_name(op) in ON_DEVICE for op in ops)
