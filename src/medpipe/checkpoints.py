"""Reading a checkpoint medpipe wrote: one clear error for a missing, unreadable or foreign file.

A checkpoint is a pickle, and unpickling a file runs whatever its author put in it. So every read
is PyTorch's `weights_only=True` loading: tensors, plain containers (dict, list, tuple, OrderedDict,
Counter), numbers and strings, plus the types in SAFE_GLOBALS. What medpipe saves is only those:
the state dicts, Lightning's loops, callbacks, optimizer and scheduler states, and the "medpipe"
entry (the resolved config, the data's metadata and the operating point as plain containers). The
config inside is checked against the `_target_` allow-list (medpipe.targets) before anything reads
it. Lightning's own reads (`trainer.fit/test(ckpt_path=...)`) pass `weights_only=True` too:
Lightning 2.6 forwards it to torch.load, where None would leave it to torch's default (and to the
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD environment variable); tests/test_hostile.py checks every call.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from medpipe.errors import DataError

# Types beyond torch's own weights-only set that medpipe checkpoints hold: none. Add one here only
# when something medpipe saves needs it (torch.serialization.get_unsafe_globals_in_checkpoint).
SAFE_GLOBALS: list[Any] = []


def read_weights_only(path: Path) -> Any:
    """torch.load(path) with weights_only=True and SAFE_GLOBALS; DataError for a refused file."""
    try:  # torch warns about unusual pickle protocols: the error below says it in one line
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - report any unreadable file the same way
        text = " ".join(str(err).split())
        if isinstance(err, pickle.UnpicklingError) or "weights_only" in text:
            what = _first_global(text)
            raise DataError(
                f"{path}: refused: {what}(not a plain medpipe checkpoint; weights_only loading "
                "reads tensors and plain containers only, and runs no code from the file)"
            ) from None
        raise DataError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {text[:200]})"
        ) from None


def _first_global(text: str) -> str:
    """'it names <module.attr> ' from torch's weights-only error text, else ''."""
    m = re.search(r"GLOBAL ([\w.]+)", text)
    return f"it names {m.group(1)} " if m else ""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at `path`, read weights-only; its saved config checked against the running
    command's `_target_` allow-list. DataError (one line each) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ckpt_path: file not found: {path}")
    ckpt = read_weights_only(path)
    if not isinstance(ckpt, dict) or "medpipe" not in ckpt or "state_dict" not in ckpt:
        raise DataError(f"{path}: not a medpipe checkpoint (no 'medpipe' config inside)")
    med = ckpt["medpipe"]
    config = med.get("config") if isinstance(med, dict) else None
    if not isinstance(config, dict):
        raise DataError(f"{path}: not a medpipe checkpoint (no 'medpipe' config inside)")
    from medpipe.errors import ConfigError
    from medpipe.targets import allowed, extension_problems, target_problems

    # A checkpoint cannot widen the allow-list: its own saved allowed_targets are only a hint.
    if problems := target_problems(config):
        saved = config.get("allowed_targets") or []
        widened = [*allowed(), *saved]
        hint = ""
        if saved and not extension_problems(saved) and not target_problems(config, widened):
            names = ",".join(saved)
            hint = f" (it was trained with allowed_targets=[{names}]: pass that if you trust it)"
        raise ConfigError([f"{path}: its saved config: {p}{hint}" for p in problems])
    return ckpt
