"""Which loading path a run's data takes (`data.loader`): in memory on the training device when the
processed arrays fit in `data.memory_share` of that device's free memory, else a DataLoader over the
memory-mapped arrays. The decision (`choose_loader`) is a pure function of sizes; the sizes come
from the .npy headers (nothing is read) and the free memory from psutil or CUDA. No torch at import.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medpipe.data.processed import OPTIONAL, SPLITS
from medpipe.errors import ConfigError

DEVICE_KEYS = ("x", "y", "lengths")  # what the in-memory path puts on the device
HOST = "free host RAM"


@dataclass(frozen=True)
class LoaderChoice:
    loader: str  # memory | workers
    reason: str  # why, in a few words

    def line(self) -> str:
        """The one line a run prints, e.g. `data loader: memory (1.2 GB of arrays fit in ...)`."""
        what = "memory" if self.loader == "memory" else "workers, memory-mapped"
        return f"data loader: {what} ({self.reason})"


@dataclass(frozen=True)
class DeviceMemory:
    """Free memory where the in-memory path would put the data. `free` None: unknown. `copies`:
    how many processes of the run keep their own copy in it (CPU DDP on one host)."""

    free: int | None
    where: str = HOST
    copies: int = 1


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _percent(share: float) -> str:
    return f"{share * 100:.3g}%"


def choose_loader(
    requested: str,
    array_bytes: int,
    memory: DeviceMemory,
    share: float,
    per_sample_ops: Sequence[str] = (),
) -> LoaderChoice:
    """The loading path for `requested` (auto | memory | workers): `auto` keeps the arrays
    (`array_bytes` per copy) on the device when they fit in `share` of its free memory and no
    augmentation op needs per-sample work (`per_sample_ops`, their names); `memory` that does not
    fit raises ConfigError (one line). Unknown free memory: auto keeps the in-memory path."""
    if requested == "workers":
        return LoaderChoice("workers", "data.loader=workers")
    if requested == "auto" and per_sample_ops:
        ops = ", ".join(dict.fromkeys(per_sample_ops))
        return LoaderChoice("workers", f"augmentation has per-sample ops: {ops}")
    needed = array_bytes * memory.copies
    sized = f"{format_bytes(needed)} of arrays"
    if memory.copies > 1:
        sized += f" ({memory.copies} processes x {format_bytes(array_bytes)})"
    prefix = "data.loader=memory; " if requested == "memory" else ""
    if memory.free is None:
        return LoaderChoice("memory", f"{prefix}{sized}; {memory.where} unknown")
    budget = f"{_percent(share)} of {format_bytes(memory.free)} {memory.where}"
    if needed <= share * memory.free:
        return LoaderChoice("memory", f"{prefix}{sized} fit in {budget}")
    if requested == "memory":
        raise ConfigError(
            f"data.loader: 'memory' needs {sized} on the training device, more than {budget} "
            f"(data.memory_share={share:g}); use data.loader=auto or workers (memory-mapped), "
            "or raise data.memory_share"
        )
    return LoaderChoice("workers", f"{sized} exceed {budget}")


def pool_problem(pool_bytes: int, host: DeviceMemory, share: float) -> str | None:
    """Why a cross-validation's pooled data cannot be held, or None. The folds' DataModule reads
    every split into host RAM, pooled, and copies each fold's rows out of the pool: twice the
    arrays, whichever loading path (medpipe.data.datamodule)."""
    if host.free is None or 2 * pool_bytes <= share * host.free:
        return None
    return (
        f"cv.folds: cross-validation holds every split pooled in host RAM plus each fold's copy "
        f"(2 x {format_bytes(pool_bytes)}), more than {_percent(share)} of "
        f"{format_bytes(host.free)} {host.where} (data.memory_share={share:g}); raise "
        "data.memory_share, free memory, or train without cross-validation (cv.folds=0)"
    )


def npy_bytes(path: str | os.PathLike) -> int:
    """The size of the array a .npy file holds, from its header (nothing is read)."""
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    return int(arr.nbytes)


def array_bytes(
    folder: str | os.PathLike,
    splits: Iterable[str] = SPLITS,
    keys: Iterable[str] = DEVICE_KEYS,
) -> int:
    """Bytes of the processed arrays `keys` of `splits` in `folder` (files absent: 0; a corrupt
    one is reported when it is read)."""
    total = 0
    for split in splits:
        for key in keys:
            path = Path(folder) / f"{split}_{key}.npy"
            with contextlib.suppress(OSError, ValueError):
                total += npy_bytes(path) if path.is_file() else 0
    return total


POOL_KEYS = ("x", "y", *OPTIONAL)  # what pooled_split concatenates (where every split has it)


def host_memory(copies: int = 1) -> DeviceMemory:
    import psutil

    return DeviceMemory(int(psutil.virtual_memory().available), HOST, copies)


def _cuda_indices(devices: Any, count: int) -> list[int]:
    """The CUDA device indices a Trainer's `devices` names (Lightning's meaning: n -> the first n,
    a list or "0,1" -> those, -1 or "auto" -> all)."""
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return list(range(count))
        if "," in text:
            return [int(d) for d in text.split(",") if d.strip()]
        devices = int(text)
    if isinstance(devices, list | tuple):
        return [int(d) for d in devices]
    if devices == -1:
        return list(range(count))
    return list(range(min(int(devices), count)))


def _smi_free(index: int) -> int | None:
    """Free bytes of CUDA device `index` from nvidia-smi (no CUDA context in this process), or
    None. nvidia-smi counts physical devices: `index` is mapped through CUDA_VISIBLE_DEVICES."""
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    ident = visible[index] if index < len(visible) and visible[index] else str(index)
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                f"--id={ident}",
                "--query-gpu=memory.free",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return int(float(out.stdout.strip().splitlines()[0]) * 2**20)  # MiB
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def _cuda_free(indices: list[int], forking: bool) -> dict[int, int | None]:
    """Free bytes of the CUDA devices `indices`. torch.cuda.mem_get_info opens a CUDA context on
    the device it asks about: fine for this process's own device, but a context on every GPU of a
    DDP run would stay with rank zero, and a forking strategy must not find CUDA initialised at
    all; those ask nvidia-smi (several GPUs falling back to this process's own device)."""
    if forking or len(indices) > 1:
        free = {i: _smi_free(i) for i in indices}
        if forking or all(v is not None for v in free.values()):
            return free
        indices = [indices[int(os.environ.get("LOCAL_RANK", 0)) % len(indices)]]
    import torch

    return {i: int(torch.cuda.mem_get_info(i)[0]) for i in indices}


def training_memory(trainer: dict[str, Any]) -> DeviceMemory:
    """Free memory of the device a Trainer config trains on: the least free of its CUDA devices
    (each DDP rank holds its own copy on its own GPU), else host RAM (CPU, MPS's shared memory),
    shared by every process of a CPU DDP run on this host."""
    accelerator = str(trainer.get("accelerator", "cpu"))
    devices = trainer.get("devices", 1)
    strategy = str(trainer.get("strategy", "auto"))
    if accelerator in ("gpu", "cuda", "auto"):
        import torch

        count = torch.cuda.device_count()
        indices = [i for i in _cuda_indices(devices, count) if 0 <= i < count] if count else []
        if indices:
            forking = "fork" in strategy or "notebook" in strategy
            free = _cuda_free(indices, forking)
            if any(v is None for v in free.values()):
                return DeviceMemory(None, f"free memory of cuda:{indices[0]}")
            i = min(free, key=lambda k: free[k])  # type: ignore[arg-type, return-value]
            where = f"free memory of cuda:{i}"
            if len(free) > 1:
                where += f" (the least free of {len(free)} GPUs)"
            return DeviceMemory(free[i], where)
    copies = 1
    if strategy.startswith("ddp") and devices not in ("auto", "-1", -1):
        copies = len(_cuda_indices(devices, count=10**6))  # n processes, or one per listed id
    return host_memory(max(copies, 1))
