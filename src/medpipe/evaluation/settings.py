"""What a task kind's evaluation of its kept outputs is asked for (from the run's config), and
what it gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medpipe.evaluation.bootstrap import BootstrapSettings


@dataclass(frozen=True)
class EvalSettings:
    """threshold: the operating-point rule chosen on the validation split (`0.5`, `youden`,
    `max_f1`, `sensitivity@0.95`, `specificity@0.95`, ...). calibration: none | temperature.
    bootstrap: interval settings, None for no intervals. explain: evaluation.explain.* ."""

    threshold: str = "youden"
    calibration: str = "temperature"
    bootstrap: BootstrapSettings | None = BootstrapSettings()
    ece_bins: int = 15
    explain: dict[str, Any] = field(default_factory=lambda: {"enabled": False})

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> EvalSettings:
        ev = c.get("evaluation") or {}
        boot = dict(ev.get("bootstrap") or {})
        seed = boot.get("seed")
        bootstrap = None
        if int(boot.get("n", 2000)) > 0:
            bootstrap = BootstrapSettings(
                n=int(boot.get("n", 2000)),
                method=str(boot.get("method", "percentile")),
                level=float(boot.get("level", 0.95)),
                seed=int(c.get("seed", 0) if seed is None else seed),
            )
        return cls(
            threshold=str(c.get("threshold", "youden")),
            calibration=str(c.get("calibration", "temperature")),
            bootstrap=bootstrap,
            ece_bins=int(ev.get("ece_bins", 15)),
            explain={"enabled": False, **(ev.get("explain") or {})},
        )


@dataclass
class Evaluation:
    """metrics: `test/<metric>` (at the chosen threshold), `test/<metric>_ci_low|_ci_high`,
    `test_at_0.5/<metric>`, calibration and operating-point values. files: figures (.png) and
    reports to log. warnings: what the reader of the result must know (absent classes, a model
    that finds almost no positives at 0.5, ...). operating_point: what the checkpoint and the
    exported model carry (rule, threshold, temperature)."""

    metrics: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    predictions: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    operating_point: dict[str, Any] = field(default_factory=dict)


def threshold_text(t: float | list[float]) -> str:
    """`0.438` or `[0.41, 0.6]` (one per label)."""
    return f"{t:.3g}" if isinstance(t, float) else "[" + ", ".join(f"{v:.3g}" for v in t) + "]"
