"""Learning-rate schedules from the `scheduler` config, in epochs."""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    SequentialLR,
    StepLR,
)


def milestone_epochs(milestones: list[float], max_epochs: int) -> list[int]:
    """Milestones below 1 are fractions of max_epochs; the others are epoch numbers."""
    return sorted({max(1, round(m * max_epochs)) if m < 1 else int(m) for m in milestones})


def build_scheduler(
    optimizer: Optimizer, cfg: dict[str, Any], max_epochs: int
) -> LRScheduler | None:
    name = cfg.get("name", "none")
    if name == "none":
        return None
    if name == "step":
        return StepLR(optimizer, step_size=int(cfg["step_size"]), gamma=float(cfg["gamma"]))
    if name == "multistep":
        return MultiStepLR(
            optimizer,
            milestone_epochs(list(cfg["milestones"]), max_epochs),
            gamma=float(cfg["gamma"]),
        )
    if name == "cosine":
        warmup = int(cfg.get("warmup_epochs", 0))
        cosine = CosineAnnealingLR(
            optimizer, T_max=max(1, max_epochs - warmup), eta_min=float(cfg.get("eta_min", 0.0))
        )
        if warmup <= 0:
            return cosine
        ramp = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
        return SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
    raise ValueError(f"unknown scheduler '{name}'")
