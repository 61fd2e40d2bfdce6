"""The weights that travel between the server and the clients, and the FedProx proximal term.

Only the net's floating-point tensors travel (weights, biases and normalisation statistics);
integer counters (BatchNorm's num_batches_tracked) stay local. The task's operating point
(threshold, temperature) is chosen once, on the server, after the last round.
"""

from __future__ import annotations

import lightning.pytorch as L
import torch
from flwr.app import ArrayRecord


def net_state(task: L.LightningModule) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().cpu().contiguous()
        for k, v in task.net.state_dict().items()
        if torch.is_floating_point(v)
    }


def to_record(task: L.LightningModule) -> ArrayRecord:
    return ArrayRecord(net_state(task))


def load_record(task: L.LightningModule, record: ArrayRecord) -> None:
    """Put the arrays of `record` into the task's net (strict about the names it sends)."""
    state = record.to_torch_state_dict()
    own = task.net.state_dict()
    missing = [k for k in net_state(task) if k not in state]
    unknown = [k for k in state if k not in own]
    if missing or unknown:
        raise ValueError(f"global weights do not fit the net: missing {missing}, unknown {unknown}")
    for k, v in state.items():
        own[k] = v.to(own[k].dtype)
    task.net.load_state_dict(own)


class ProximalTerm(L.Callback):
    """FedProx (Li et al. 2020): adds mu/2 * ||w - w_global||^2 to every local loss, as its gradient
    mu * (w - w_global) added after the backward pass (the task's loss code is untouched).
    Flower's FedProx strategy only sends `proximal-mu`; the client must apply it."""

    def __init__(self, mu: float):
        self.mu = float(mu)
        self.anchor: list[torch.Tensor] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.anchor = [p.detach().clone() for p in pl_module.net.parameters()]

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.mu <= 0:
            return
        with torch.no_grad():
            for p, w0 in zip(pl_module.net.parameters(), self.anchor, strict=True):
                if p.grad is not None:
                    p.grad.add_(p.detach() - w0, alpha=self.mu)
