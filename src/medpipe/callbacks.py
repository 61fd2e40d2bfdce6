"""Callbacks: a one-line-per-epoch progress report, and the per-epoch history file for DVC plots."""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from pathlib import Path

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.utilities import rank_zero_only

SHOWN = ("train/loss", "val/loss", "val/auroc", "val/acc", "val/f1", "val/mae")


def _scalars(
    trainer: L.Trainer, prefixes: tuple[str, ...] = ("train/", "val/")
) -> dict[str, float]:
    out = {}
    for k, v in trainer.callback_metrics.items():
        if k.startswith(prefixes) and getattr(v, "numel", lambda: 1)() == 1:
            out[k] = float(v)
    return out


class EpochLine(Callback):
    """One plain line per epoch (for CI logs and files): main metrics, epoch time and ETA."""

    def __init__(self, stream=None):
        self._stream = (
            stream  # None: sys.stdout at print time (keeps the callback picklable for ddp_spawn)
        )
        self._t0 = self._fit_t0 = 0.0

    def on_fit_start(self, trainer, pl_module):
        self._fit_t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        m = _scalars(trainer)
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        took = time.perf_counter() - self._t0
        elapsed = time.perf_counter() - self._fit_t0
        eta = elapsed / epoch * (total - epoch) if total and total > 0 else math.nan
        parts = [f"epoch {epoch}/{total}"] + [f"{k} {m[k]:.4f}" for k in SHOWN if k in m]
        parts += [f"{took:.1f}s", f"eta {eta:.0f}s"]
        print(" | ".join(parts), file=self._stream or sys.stdout, flush=True)


class HistoryWriter(Callback):
    """Writes <dir>/history.csv: one row per epoch with every train/ and val/ scalar.

    Rewritten atomically each epoch, so an interrupted run keeps the epochs it finished.
    """

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / "history.csv"
        self.rows: list[dict[str, float]] = []

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch + 1, **_scalars(trainer)}
        if trainer.optimizers:
            row["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        self.rows.append(row)
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.path)


def progress_callbacks(mode: str) -> tuple[list[Callback], bool]:
    """The progress display for `callbacks.progress_bar` and whether Lightning's bar stays enabled."""
    if mode == "auto":
        mode = "rich" if sys.stdout.isatty() else "plain"
    if mode == "rich":
        return [RichProgressBar(leave=True)], True
    if mode == "plain":
        return [EpochLine()], False
    return [], False
