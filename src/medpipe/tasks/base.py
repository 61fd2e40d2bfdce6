"""What every task module shares: on-device preprocessing, batches with or without lengths, cheap
epoch-level logging, test outputs for reports, optimisation and self-describing checkpoints.

Subclasses (classification, regression) define the loss, the outputs the metrics read and the
metric collections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import lightning.pytorch as L
import torch
from torch import nn

from medpipe.data.processed import DatasetMeta
from medpipe.data.transforms import Normalizer
from medpipe.models.optim import build_scheduler
from medpipe.models.windows import WindowReading, read_net


def unpack(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(x, y) or (x, y, lengths): padded sequences carry their true lengths."""
    if len(batch) == 3:
        return batch[0], batch[1], batch[2]
    return batch[0], batch[1], None


def unshard(gathered: torch.Tensor, n: int) -> torch.Tensor:
    """Rows in split order from all_gather's (world, per_rank, ...) of an unshuffled sharded
    loader: rank r held rows r, r + world, ... of the split padded to world * per_rank."""
    return gathered.transpose(0, 1).reshape(-1, *gathered.shape[2:])[:n]


class MedTask(L.LightningModule):
    """Training, evaluation and test loops over any net; the subclass says what is learnt.

    Input batches carry samples in their stored dtype; `preprocess` normalises them on the device.
    Training loss and the training metric are accumulated on the device and logged once per epoch
    (no per-step logging, no per-step host-device sync).
    """

    train_metric_name = ""
    window_link = "identity"  # raw outputs are averaged across a record's windows as they are

    def __init__(
        self,
        net: nn.Module,
        meta: DatasetMeta,
        normalize: str,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: dict[str, Any],
        max_epochs: int,
        channels_last: bool = False,
        compile: bool | str = False,
    ):
        super().__init__()
        self.net = net
        # channels_last: the net's weights and every input batch in NHWC (NDHWC for volumes)
        rank = len(meta.sample_shape) + 1
        self.memory_format = (
            {4: torch.channels_last, 5: torch.channels_last_3d}.get(rank) if channels_last else None
        )
        if self.memory_format is not None:
            self.net.to(memory_format=self.memory_format)
        self.compile_mode = ("default" if compile is True else compile) or None
        self._fast_net: nn.Module | None = None  # torch.compile'd self.net, built on first use
        self.meta = meta
        self.task = meta.task
        # whole records read in windows (data.preprocess.window.mode=random): models/windows.py;
        # `window_link` says how the subclass's raw outputs are combined across windows
        self.windows = WindowReading.of(meta.source)
        self.optimizer_factory = optimizer
        self.scheduler_cfg = dict(scheduler)
        self.max_epochs = max_epochs
        self.preprocess = Normalizer(
            normalize, meta.scale, meta.mean, meta.std, spatial_dims=len(meta.sample_shape) - 1
        )
        self.register_buffer("_loss_sum", torch.zeros((), dtype=torch.float64), persistent=False)
        self.register_buffer("_loss_count", torch.zeros((), dtype=torch.float64), persistent=False)
        self.run_config: dict[str, Any] = {}
        # trainer.test() runs over `eval_split` (the datamodule's `test_split`) and keeps the net's
        # raw outputs and the targets of every row, in row order: collected[split] = (raw, y).
        self.eval_split = "test"
        self.collected: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._test_buffer: list[tuple[torch.Tensor, torch.Tensor]] = []

    # -- what subclasses define ------------------------------------------------------------------
    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def outputs(self, raw: torch.Tensor) -> torch.Tensor:
        """What metrics and reports read: probabilities (classification) or values (regression)."""
        raise NotImplementedError

    def metric_target(self, y: torch.Tensor) -> torch.Tensor:
        return y

    # val_metrics, test_metrics (compute() -> {name: tensor}) and train_metric (a torchmetrics
    # Metric) are set by the subclass.

    # -- model -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.preprocess(x)
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        net = self._compiled() if self.compile_mode else self.net
        return read_net(net, x, lengths, self.windows, self.window_link, self.training)

    def _compiled(self) -> nn.Module:
        """torch.compile of the net, kept off the module tree: the checkpoint, the exported model
        and DDP see the plain net and its parameter names; the compiled one shares its weights."""
        if self._fast_net is None:
            object.__setattr__(self, "_fast_net", torch.compile(self.net, mode=self.compile_mode))
        return self._fast_net

    # -- steps -----------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y, lengths = unpack(batch)
        raw = self(x, lengths)
        n = len(x)
        if n:
            loss = self.loss(raw, y)
            self._loss_sum += loss.detach().double() * n
            self._loss_count += n
            self.train_metric.update(self.outputs(raw.detach()), self.metric_target(y))
        else:  # a Poisson-sampled batch (privacy=dp) can be empty: its step is noise only
            loss = raw.sum() * 0.0
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self._log_train_epoch()
        return loss

    def _log_train_epoch(self) -> None:
        # One call per epoch, so the epoch value is exactly this one; sync_dist averages the
        # per-rank means once, as per-step logging with sync_dist did.
        mean = (self._loss_sum / self._loss_count.clamp(min=1)).float()
        self.log("train/loss", mean, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log(f"train/{self.train_metric_name}", self.train_metric, on_step=False, on_epoch=True)
        self._loss_sum.zero_()
        self._loss_count.zero_()

    # Validation keeps each batch's outputs and loss on the device and hands them to the metrics
    # and the logger once, at the epoch's end: no per-batch logging or metric-state updates.
    def on_validation_epoch_start(self) -> None:
        self._val_kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._val_loss = torch.zeros((), dtype=torch.float64, device=self.device)

    def validation_step(self, batch, batch_idx):
        x, y, lengths = unpack(batch)
        raw = self(x, lengths)
        self._val_loss += self.loss(raw, y).double() * len(x)
        self._val_kept.append((self.outputs(raw), self.metric_target(y)))

    def on_validation_epoch_end(self) -> None:
        kept, self._val_kept = self._val_kept, []
        n = sum(len(t) for _, t in kept)
        if n:
            self.val_metrics.update(
                torch.cat([o for o, _ in kept]), torch.cat([t for _, t in kept])
            )
            mean = (self._val_loss / n).float()  # sync_dist: the ranks' means averaged, once
            self.log("val/loss", mean, prog_bar=True, batch_size=n, sync_dist=True)
        self._log_metrics("val", self.val_metrics)

    def _log_metrics(self, split: str, metrics: nn.Module) -> None:
        for name, value in metrics.compute().items():
            self.log(f"{split}/{name}", value, prog_bar=split == "val" and name in ("auroc", "mae"))
        metrics.reset()

    def on_test_epoch_start(self) -> None:
        self._test_buffer = []

    def test_step(self, batch, batch_idx):
        """Keep the raw outputs; the task kind's `evaluate_outputs` computes the metrics from
        them (at the operating point chosen on the validation split, with intervals)."""
        x, y, lengths = unpack(batch)
        raw = self(x, lengths)
        if self.eval_split == "test":
            self.log("test/loss", self.loss(raw, y), batch_size=len(x), sync_dist=True)
        self._test_buffer.append((raw.detach().float(), y.detach()))

    def on_test_epoch_end(self) -> None:
        raw = torch.cat([p for p, _ in self._test_buffer])
        target = torch.cat([t for _, t in self._test_buffer])
        if self.trainer.world_size > 1:
            n = len(self.trainer.datamodule.split_arrays(self.eval_split))
            raw = unshard(self.all_gather(raw), n)
            target = unshard(self.all_gather(target), n)
        self.collected[self.eval_split] = (raw.cpu(), target.cpu())
        self._test_buffer = []

    # -- optimisation ----------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        scheduler = build_scheduler(optimizer, self.scheduler_cfg, self.max_epochs)
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }

    # -- checkpoints carry what is needed to rebuild the task ----------------------------------
    def operating_point(self) -> dict[str, Any]:
        """What a task kind decides after training (threshold, temperature); {} if nothing."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["medpipe"] = {
            "config": self.run_config,
            "meta": asdict(self.meta),
            "operating_point": self.operating_point(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint written before a buffer existed (the operating point's) loads with the
        buffer's default; the threshold rule comes back with it."""
        state = checkpoint.setdefault("state_dict", {})
        for name, value in self.named_buffers():
            if name not in state and name in self.state_dict():
                state[name] = value
        rule = (checkpoint.get("medpipe") or {}).get("operating_point", {}).get("threshold_rule")
        if rule and hasattr(self, "threshold_rule"):
            self.threshold_rule = rule
