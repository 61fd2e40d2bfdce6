"""A Lightning callback the resume tests add through the config
(`+callbacks.pause._target_=resume_probe.PauseMidEpoch`, with tests/ on PYTHONPATH and
`allowed_targets=[resume_probe]`): it does nothing unless $RESUME_PROBE_MARKER is set; then, in
training epoch `epoch` at batch `batch`, it writes that marker file and sleeps, so that the test
can SIGKILL the process in the middle of an epoch at a known place."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class PauseMidEpoch(Callback):
    def __init__(self, epoch: int = 3, batch: int = 1, seconds: float = 60.0):
        self.epoch, self.batch, self.seconds = epoch, batch, seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        marker = os.environ.get("RESUME_PROBE_MARKER")
        if marker and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            Path(marker).write_text(str(os.getpid()))
            time.sleep(self.seconds)


class KeepLastCheckpoint(Callback):
    """Copies checkpoints/last.ckpt, as written at the start of training epoch `epoch`, to
    last.ckpt.keep (a test puts it back to stage a run that died in that epoch)."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            import shutil

            trainer.strategy.checkpoint_io.teardown()  # checkpoints are written in a thread
            last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
            shutil.copyfile(last, last.with_name("last.ckpt.keep"))
