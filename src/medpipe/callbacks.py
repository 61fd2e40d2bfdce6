"""Callbacks: a one-line-per-epoch progress report, and the per-epoch history file for DVC plots."""

from __future__ import annotations

import csv
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.utilities import rank_zero_only

SHOWN = (  # the first of these each epoch logs (a GAN: its two losses and val/fid)
    "train/loss",
    "train/d_loss",
    "train/g_loss",
    "val/loss",
    "val/auroc",
    "val/acc",
    "val/f1",
    "val/mae",
    "val/fid",
)


def _scalars(
    trainer: L.Trainer, prefixes: tuple[str, ...] = ("train/", "val/")
) -> dict[str, float]:
    out = {}
    for k, v in trainer.callback_metrics.items():
        if k.startswith(prefixes) and getattr(v, "numel", lambda: 1)() == 1:
            out[k] = float(v)
    return out


class CtrlC(Callback):
    """Ctrl-C stops training even when Python drops the KeyboardInterrupt.

    Python's default handler raises KeyboardInterrupt wherever the main thread happens to be; raised
    inside a finaliser (`__del__`, a weakref callback) it is printed as "Exception ignored" and
    lost, and training would go on to the end with exit status 0. This handler also records the
    signal, and the next batch or epoch boundary raises again if the first raise was lost. Lightning
    then stops gracefully, and the MLflow run is not left RUNNING.
    """

    def __init__(self) -> None:
        self.pressed = False
        self._previous = None

    def __getstate__(self) -> dict:  # ddp_spawn pickles callbacks; a handler is process-local
        return {**self.__dict__, "_previous": None}

    def _handle(self, signum, frame) -> None:
        self.pressed = True
        raise KeyboardInterrupt

    def _check(self, *args, **kwargs) -> None:
        if self.pressed:
            raise KeyboardInterrupt

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.pressed = False
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is signal.default_int_handler:  # leave a user's own handler alone
                self._previous = previous
                signal.signal(signal.SIGINT, self._handle)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) == self._handle:
                signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    on_train_batch_end = on_validation_batch_end = on_test_batch_end = _check
    on_train_epoch_end = on_validation_epoch_end = _check


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


class FitOnTrainingSplit(Callback):
    """Before the first training step, fit what a net learns from the training split in one
    pass rather than by gradient steps (MiniRocket's transform and feature scaling): a net with
    `fit_features(x)` and a `fitted` buffer, given the preprocessed training records. Skipped when
    a resumed checkpoint has already restored a fitted net."""

    def on_fit_start(self, trainer, pl_module):
        net = getattr(pl_module, "net", None)
        fit = getattr(net, "fit_features", None)
        if fit is None or bool(net.fitted):
            return
        import numpy as np
        import torch

        train = trainer.datamodule.split_arrays("train")
        x = torch.as_tensor(np.asarray(train.x, dtype=np.float32))
        with torch.no_grad():
            x = pl_module.preprocess(x.to(pl_module.device)).cpu()
        fit(x)


class HistoryWriter(Callback):
    """Writes <dir>/history.csv: one row per epoch with every train/ and val/ scalar.

    Rewritten atomically each epoch, so an interrupted run keeps the epochs it finished.
    """

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / "history.csv"
        self.rows: list[dict[str, float]] = []
        self.restored: list[dict[str, float]] = []  # the rows a resumed run's checkpoint held

    # A checkpoint carries the rows so far: a resumed fit keeps them, and drops any row written
    # after that checkpoint (the epoch it repeats). Testing a checkpoint restores nothing here.
    def state_dict(self) -> dict:
        return {"rows": [dict(r) for r in self.rows]}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        from lightning.pytorch.trainer.states import TrainerFn

        state = (checkpoint.get("callbacks") or {}).get(self.state_key)
        if trainer.state.fn != TrainerFn.FITTING or not isinstance(state, dict):
            return
        self.rows = [dict(r) for r in state.get("rows", [])]
        self.restored = [dict(r) for r in self.rows]
        if rank_zero_only.rank == 0 and self.rows:
            self._write()

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        row = {
            "epoch": trainer.current_epoch + 1,
            **_scalars(trainer, ("train/", "val/", "privacy/")),
        }
        if trainer.optimizers:
            row["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        self.rows.append(row)
        self._write()

    def _write(self) -> None:
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
