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
    bootstrap: interval settings, None for no intervals. explain: evaluation.explain.* .
    Built from the run's config by `from_config`; the defaults live in medpipe.config."""

    threshold: str
    calibration: str
    bootstrap: BootstrapSettings | None
    ece_bins: int
    explain: dict[str, Any] = field(default_factory=lambda: {"enabled": False})

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> EvalSettings:
        from medpipe.config import EvaluationCfg, TrainCfg

        ev = EvaluationCfg.model_validate(c.get("evaluation") or {})
        boot, bootstrap = ev.bootstrap, None
        if boot.n > 0:
            seed = int(c.get("seed", 0)) if boot.seed is None else boot.seed  # null: the run's
            bootstrap = BootstrapSettings(boot.n, boot.method, boot.level, seed)
        defaults = TrainCfg.model_fields
        return cls(
            threshold=str(c.get("threshold", defaults["threshold"].default)),
            calibration=str(c.get("calibration", defaults["calibration"].default)),
            bootstrap=bootstrap,
            ece_bins=ev.ece_bins,
            explain=ev.explain.model_dump(),
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
