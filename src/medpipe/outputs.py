"""What a run leaves behind: metrics.json (atomically), the printed summary, and the artifacts and
exported model logged to its MLflow run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medpipe.data.datamodule import MedDataModule
from medpipe.tasks.base import MedTask
from medpipe.tracking.provenance import hydra_overrides


def floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)


def print_metrics(title: str, metrics: dict[str, float]) -> None:
    print(title)
    for k in sorted(metrics):
        print(f"  {k:<28} {metrics[k]:.4f}")


def best_row(rows: list[dict[str, float]], monitor: str, mode: str) -> dict[str, float]:
    """The history row of the best epoch on `monitor` (the last row if none has it)."""
    scored = [r for r in rows if monitor in r and not math.isnan(r[monitor])]
    if not scored:
        return rows[-1] if rows else {}
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: r[monitor])


def input_example(dm: MedDataModule) -> np.ndarray:
    return np.asarray(dm.split_arrays("test").x[:2]).astype(np.float32)


def log_run_outputs(
    run,
    c: dict[str, Any],
    dm: MedDataModule,
    task: MedTask,
    files: list[Path],
    report: dict[str, Path],
    best_path: str,
) -> None:
    """Config, overrides, metrics, history, report, best checkpoint and the exported model."""
    run.log_artifact(files[1], "config")
    overrides = files[1].parent / "overrides.yaml"
    overrides.write_text("\n".join(f"- {o}" for o in hydra_overrides()) + "\n")
    run.log_artifact(overrides, "config")
    for f in files:
        if f.name != "config.yaml":
            run.log_artifact(f)
    for f in report.values():
        run.log_artifact(f, "plots" if f.suffix == ".png" else "reports")
    if best_path:
        run.log_artifact(Path(best_path), "checkpoints")
    if c.get("log_model", True):
        import monai

        model = task.inference_model().cpu().eval()
        reqs = [
            f"torch=={torch.__version__.split('+')[0]}",
            f"monai=={monai.__version__}",
            f"numpy=={np.__version__}",
        ]
        run.log_model(model, input_example(dm), reqs)
