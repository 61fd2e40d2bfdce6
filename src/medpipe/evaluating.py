"""Test a saved checkpoint on the test split of its data (or of another file in the same format):
metrics.json, the task kind's report and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch

from medpipe.building import build_datamodule, build_task
from medpipe.data.folds import all_folds
from medpipe.data.prepare import prepare_dataset
from medpipe.data.processed import DatasetMeta
from medpipe.errors import DataError
from medpipe.outputs import floats, print_metrics, write_json


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ckpt_path: file not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - report any unreadable file the same way
        raise DataError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(ckpt, dict) or "medpipe" not in ckpt or "state_dict" not in ckpt:
        raise DataError(f"{path}: not a medpipe checkpoint (no 'medpipe' config inside)")
    return ckpt


def evaluate(c: dict[str, Any]) -> dict[str, float]:
    """Test the checkpoint `c["ckpt_path"]` (resolved evaluate config); write its outputs."""
    ckpt = load_checkpoint(c["ckpt_path"])
    run_cfg = ckpt["medpipe"]["config"]
    for key, value in (c.get("data") or {}).items():
        if value is not None:
            run_cfg["data"][key] = value
    run_cfg["paths"].update({k: c["paths"][k] for k in ("processed_dir", "raw_dir")})
    out_dir = Path(c["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(int(run_cfg["seed"]), workers=True, verbose=False)
    folder = prepare_dataset(
        run_cfg["data"], run_cfg["paths"]["processed_dir"], run_cfg["paths"]["raw_dir"]
    )
    folds = None
    if (run_cfg.get("cv") or {}).get("fold") is not None:  # one fold of a cross-validation
        folds = all_folds(run_cfg, folder)[int(run_cfg["cv"]["fold"])]
    no_aug = {**run_cfg, "augmentation": {"train": []}}
    dm = build_datamodule(no_aug, int(run_cfg["seed"]), folder, folds)
    meta = DatasetMeta.from_dict(ckpt["medpipe"]["meta"])
    task = build_task({**run_cfg, "compile": False}, meta)  # one pass: compiling would not pay
    task.load_state_dict(ckpt["state_dict"])
    trainer = L.Trainer(
        accelerator=c["trainer"]["accelerator"],
        devices=c["trainer"]["devices"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=bool(run_cfg["trainer"].get("deterministic", False)),
    )
    results = trainer.test(task, datamodule=dm, verbose=False)
    metrics = floats(results[0]) if results else {}
    write_json(out_dir / "metrics.json", metrics)
    task.write_report(out_dir)
    print_metrics(f"test metrics of {c['ckpt_path']} ({meta.name}):", metrics)
    print(f"outputs: {out_dir}")
    return metrics
