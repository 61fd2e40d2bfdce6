"""Test a saved checkpoint on the test split of its data (or of another file in the same format)
at its stored operating point: metrics.json with intervals, the kept predictions, the task kind's
report and plots. Also what training uses to collect the outputs of its best checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch

from medpipe.building import build_datamodule, build_task
from medpipe.checkpoints import (  # noqa: F401  (medpipe.evaluating.load_checkpoint)
    load_checkpoint,
    read_weights_only,
)
from medpipe.data.folds import all_folds
from medpipe.data.prepare import prepare_dataset, runs_tracking_uri
from medpipe.data.processed import DatasetMeta
from medpipe.evaluation.settings import EvalSettings
from medpipe.outputs import floats, print_metrics, print_warnings, write_json
from medpipe.tasks.base import MedTask


def collect_outputs(
    trainer: L.Trainer, task, dm, splits: tuple[str, ...], ckpt_path: str | None = None
) -> dict[str, float]:
    """Run the test loop over each split (the checkpoint's weights), keeping the raw outputs and
    targets in `task.collected[split]`; returns what the test split's loop logged (test/loss)."""
    logged: dict[str, float] = {}
    try:
        for split in splits:
            task.eval_split = dm.test_split = split
            results = trainer.test(  # weights-only, as every checkpoint read (checkpoints.py)
                task, datamodule=dm, ckpt_path=ckpt_path, verbose=False, weights_only=True
            )
            if split == "test":
                logged = floats(results[0]) if results else {}
    finally:
        task.eval_split = dm.test_split = "test"
    return logged


def store_operating_point(path: str | Path, task) -> None:
    """Write the task's operating point (threshold and temperature buffers, and the rule) into
    the checkpoint at `path`, atomically: it was saved during training, before they were chosen."""
    path = Path(path)
    ckpt = read_weights_only(path)
    state = ckpt["state_dict"]
    for name, value in task.named_buffers():
        if name in state and not name.startswith("net."):
            state[name] = value.detach().cpu().clone()
    ckpt["medpipe"]["operating_point"] = task.operating_point()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def data_info(meta: DatasetMeta, folder: Path | None = None) -> dict[str, Any]:
    """What ties kept predictions to their data: the processed content's hash and fingerprint."""
    return {
        "data_name": meta.name,
        "data_sha256": meta.content_sha256,
        "data_fingerprint": meta.fingerprint,
    }


def restore(c: dict[str, Any]) -> tuple[dict[str, Any], Path, dict | None, MedTask]:
    """What the checkpoint `c["ckpt_path"]` describes (evaluate and explain read it alike): its
    run config with `c`'s non-null `data` keys and paths, its prepared data folder, its fold's rows
    (None outside cross-validation) and its task module with the trained weights."""
    ckpt = load_checkpoint(c["ckpt_path"])
    run_cfg = ckpt["medpipe"]["config"]
    for key, value in (c.get("data") or {}).items():
        if value is not None:
            run_cfg["data"][key] = value
    run_cfg["paths"].update({k: c["paths"][k] for k in ("processed_dir", "raw_dir")})
    L.seed_everything(int(run_cfg["seed"]), workers=True, verbose=False)
    folder = prepare_dataset(  # a generator named by runs:/ is read from the run's store
        run_cfg["data"],
        run_cfg["paths"]["processed_dir"],
        run_cfg["paths"]["raw_dir"],
        tracking_uri=runs_tracking_uri(run_cfg),
        privacy=run_cfg.get("privacy"),  # hashed record ids, as the run stored them
    )
    folds = None
    if (run_cfg.get("cv") or {}).get("fold") is not None:  # one fold of a cross-validation
        folds = all_folds(run_cfg, folder)[int(run_cfg["cv"]["fold"])]
    return run_cfg, folder, folds, trained_task(ckpt)


def trained_task(ckpt: dict[str, Any]) -> MedTask:
    """The task module a read checkpoint describes, with its trained weights and operating point
    (evaluate, explain, export and predict rebuild it alike)."""
    meta = DatasetMeta.from_dict(ckpt["medpipe"]["meta"])
    task = build_task({**ckpt["medpipe"]["config"], "compile": False}, meta)  # one pass
    task.on_load_checkpoint(ckpt)
    task.load_state_dict(ckpt["state_dict"])
    return task


def evaluate(c: dict[str, Any]) -> dict[str, float]:
    """Test the checkpoint `c["ckpt_path"]` (resolved evaluate config); write its outputs."""
    run_cfg, folder, folds, task = restore(c)
    meta = task.meta
    out_dir = Path(c["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    # the test split on this command's device; memory when it fits there (evaluate has no loader)
    loader = "auto" if run_cfg["data"].get("loader") == "memory" else run_cfg["data"].get("loader")
    data = {**run_cfg["data"], "loader": loader or "auto"}
    no_aug = {**run_cfg, "augmentation": {"train": []}, "data": data, "trainer": c["trainer"]}
    dm = build_datamodule(no_aug, int(run_cfg["seed"]), folder, folds, splits=("test",))
    trainer = L.Trainer(
        accelerator=c["trainer"]["accelerator"],
        devices=c["trainer"]["devices"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=bool(run_cfg["trainer"].get("deterministic", False)),
    )
    logged = collect_outputs(trainer, task, dm, ("test",))
    settings = EvalSettings.from_config(run_cfg)  # the run's intervals; its stored threshold
    rows = {"test": folds["test"]} if folds is not None else None
    evaluation = task.evaluate_outputs(
        out_dir, settings, dm.split_arrays("test"), rows, refit=False, info=data_info(meta)
    )
    metrics = {**logged, **evaluation.metrics}
    write_json(out_dir / "metrics.json", metrics)
    print_metrics(f"test metrics of {c['ckpt_path']} ({meta.name}):", metrics)
    print_warnings(evaluation.warnings)
    print(f"outputs: {out_dir}")
    return metrics
