"""Reading a checkpoint medpipe wrote: one clear error for a missing, unreadable or foreign file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medpipe.errors import DataError


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ckpt_path: file not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - report any unreadable file the same way
        raise DataError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(ckpt, dict) or "medpipe" not in ckpt or "state_dict" not in ckpt:
        raise DataError(f"{path}: not a medpipe checkpoint (no 'medpipe' config inside)")
    return ckpt
