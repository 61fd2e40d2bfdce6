"""Lightning callbacks the benchmarks add to medpipe's real training path through the config
(`+callbacks.<name>._target_=benchmarks.probes.<Class>`); they only take timestamps.

The subprocess benchmarks need the repository root on PYTHONPATH (common.cli_env does that).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, ClassVar

from lightning.pytorch.callbacks import Callback


def _sync(pl_module) -> None:
    import torch

    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)


class TrainTimer(Callback):
    """Steady-state timing of a fit, in-process: the first `warmup_epochs` epochs are not counted.

    For each counted epoch:
      train_s: from on_train_epoch_start to on_train_batch_end of its last batch: fetching and
               slicing the batch, on-device augmentation, forward, loss, metric update, self.log,
               backward, optimizer step and every per-batch hook. No validation, no epoch end.
      full_s:  from the first counted on_train_epoch_start to on_train_end: the training batches,
               validation (with its metrics), epoch-end metric computation, checkpointing, the
               history file, the epoch line and the MLflow calls.
      train_cpu_s: the process's CPU time (all its threads) over the same span as train_s: the
               work done, whatever the other jobs on the machine do.
      step_s:  the time of each counted step, from the end of the previous one (or the epoch's
               start) to the end of this one; its median is robust to bursts of load.
    Results are appended to `TrainTimer.records` (the benchmark reads them after `train` returns).
    The GPU is synchronised only at the epoch boundaries (step_s is only meaningful on a CPU).
    """

    records: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, warmup_epochs: int = 1):
        self.warmup_epochs = warmup_epochs
        self._t0 = self._epoch_t0 = 0.0
        self._train_s = self._train_cpu_s = self._epoch_cpu0 = 0.0
        self._samples = self._batches = 0
        self._last = 0.0
        self._steps: list[float] = []

    def on_fit_start(self, trainer, pl_module):
        net = getattr(pl_module, "net", pl_module)
        self._init = float(sum(p.detach().double().sum() for p in net.parameters()))

    def _counted(self, trainer) -> bool:
        return trainer.current_epoch >= self.warmup_epochs

    def on_train_epoch_start(self, trainer, pl_module):
        if not self._counted(trainer):
            return
        _sync(pl_module)
        self._epoch_t0 = self._last = time.perf_counter()
        self._epoch_cpu0 = time.process_time()
        if trainer.current_epoch == self.warmup_epochs:
            self._t0 = self._epoch_t0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self._counted(trainer):
            return
        self._samples += len(batch[0])
        self._batches += 1
        if batch_idx == trainer.num_training_batches - 1:
            _sync(pl_module)
            self._train_s += time.perf_counter() - self._epoch_t0
            self._train_cpu_s += time.process_time() - self._epoch_cpu0
        t = time.perf_counter()
        self._steps.append(t - self._last)
        self._last = t

    def on_train_end(self, trainer, pl_module):
        _sync(pl_module)
        TrainTimer.records.append(
            {
                "train_s": self._train_s,
                "train_cpu_s": self._train_cpu_s,
                "full_s": time.perf_counter() - self._t0 if self._t0 else float("nan"),
                "samples": self._samples,
                "batches": self._batches,
                "epochs": trainer.current_epoch - self.warmup_epochs,
                "init_checksum": getattr(self, "_init", float("nan")),
                "step_s": self._steps,
            }
        )


class Probe(Callback):
    """Wall-clock timestamps (time.time(), comparable across processes) of a training subprocess,
    written as JSON to $BENCH_PROBE_FILE: fit start, the first training step's start and end,
    the end of training, and per-epoch training-loop durations."""

    def __init__(self):
        self.path = os.environ.get("BENCH_PROBE_FILE")
        self.data: dict[str, Any] = {"epoch_s": []}
        self._epoch_t0 = 0.0

    def _write(self) -> None:
        if self.path:
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as f:
                json.dump(self.data, f)
            os.replace(tmp, self.path)

    def on_fit_start(self, trainer, pl_module):
        self.data["fit_start"] = time.time()
        self._write()

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_t0 = time.time()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if "first_step_start" not in self.data:
            self.data["first_step_start"] = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if "first_step_end" not in self.data:
            _sync(pl_module)
            self.data["first_step_end"] = time.time()
            self._write()

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.data["epoch_s"].append(time.time() - self._epoch_t0)

    def on_train_end(self, trainer, pl_module):
        self.data["train_end"] = time.time()
        self.data["epochs"] = trainer.current_epoch
        self._write()

    def on_test_end(self, trainer, pl_module):
        self.data["test_end"] = time.time()
        self._write()


class EpochClock(Callback):
    """In-process: perf_counter at each training epoch's start and at the end of training.

    Epoch i spans [starts[i], starts[i+1]) (the last one ends at on_train_end): its training
    batches, validation, epoch-end metrics, checkpoint, history, epoch line and logger calls.
    Appended to `EpochClock.records` as {"starts": [...], "end": t}.
    """

    records: ClassVar[list[dict[str, Any]]] = []

    def __init__(self):
        self.starts: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        _sync(pl_module)
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        _sync(pl_module)
        EpochClock.records.append({"starts": list(self.starts), "end": time.perf_counter()})
