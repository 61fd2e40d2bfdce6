"""Which albumentations transforms also run batched on the device (no torch import: the config
validator reads this)."""

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


def on_device(ops: Sequence[dict[str, Any]]) -> bool:
    """True when every transform has a batched on-device version."""
    return all(op_name(op) in ON_DEVICE for op in ops)
