"""Build the pieces a config describes and run them: train (fit, test, track) and evaluate."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

import medpipe
from medpipe.callbacks import CtrlC, HistoryWriter, progress_callbacks
from medpipe.data.augment_ops import on_device
from medpipe.data.batch_augment import BatchAugment
from medpipe.data.datamodule import MedDataModule
from medpipe.data.prepare import prepare_dataset
from medpipe.data.processed import DatasetMeta, read_meta
from medpipe.data.transforms import build_transforms
from medpipe.dvc_provenance import dvc_tags
from medpipe.errors import ConfigError, DataError
from medpipe.evaluation.report import write_regression_report, write_test_report
from medpipe.models.classification import ClassificationTask, InferenceModel, num_outputs
from medpipe.models.regression import RegressionInferenceModel, RegressionTask
from medpipe.models.task import MedTask
from medpipe.paths import project_root
from medpipe.task_check import task_problems
from medpipe.tracking.provenance import git_info, hydra_overrides
from medpipe.tracking.sweep import PARENT_ENV

log = logging.getLogger(__name__)

# Known-harmless notices that would otherwise bury the progress lines.
for _pattern in (
    r".*log_every_n_steps.*",
    r".*LeafSpec.*",
    r".*does not have many workers.*",
    r".*litlogger.*",
    r".*were assigned during export.*",  # MLflow's signature inference tracing an RNN
):
    warnings.filterwarnings("ignore", message=_pattern)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # device banners and tips


# -- building --------------------------------------------------------------------------------------
def resolve_loader(loader: str, augmentation_ops: list) -> str:
    """auto: the in-memory path unless a transform has no batched on-device version."""
    if loader == "auto":
        return "memory" if on_device(augmentation_ops) else "workers"
    return loader


def build_datamodule(
    cfg: dict[str, Any],
    seed: int,
    folder: Path | None = None,
    folds: dict[str, np.ndarray] | None = None,
) -> MedDataModule:
    """`folder`: the processed data when the caller has prepared it already (else prepared here);
    `folds`: row indices of each split into the pooled data (cross-validation)."""
    data = cfg["data"]
    if folder is None:
        folder = prepare_dataset(data, cfg["paths"]["processed_dir"], cfg["paths"]["raw_dir"])
    ops = list((cfg.get("augmentation") or {}).get("train") or [])
    loader = resolve_loader(data.get("loader", "auto"), ops)
    transform = None
    if loader == "workers":  # MONAI lists are tried once on the data's sample shape here
        transform = build_transforms(ops, seed, data["kind"], read_meta(folder).sample_shape)
    batch_augment = BatchAugment(ops, seed) if loader == "memory" and ops else None
    return MedDataModule(
        folder,
        batch_size=int(data["batch_size"]),
        loader=loader,
        num_workers=int(data.get("num_workers", 0)),
        pin_memory=bool(data.get("pin_memory", False)),
        seed=seed,
        train_transform=transform,
        batch_augment=batch_augment,
        folds=folds,
    )


def build_task(cfg: dict[str, Any], meta: DatasetMeta) -> MedTask:
    model = cfg["model"]
    loss = model.get("loss", "cross_entropy")
    problems = task_problems(cfg, meta)
    if problems:
        raise ConfigError(problems)
    net = instantiate(
        model["net"],
        in_channels=meta.channels,
        num_outputs=num_outputs(meta, loss),
        spatial_shape=meta.sample_shape[1:],
        _convert_="all",
    )
    common = dict(
        normalize=cfg["data"].get("normalize", "zscore"),
        optimizer=instantiate(cfg["optimizer"], _convert_="all"),
        scheduler=cfg["scheduler"],
        max_epochs=int(cfg["trainer"]["max_epochs"]),
        channels_last=bool(cfg.get("channels_last", False)),
        compile=cfg.get("compile", False),
    )
    if meta.task == "regression":
        task: MedTask = RegressionTask(
            net, meta, loss=loss, huber_delta=model.get("huber_delta", 1.0), **common
        )
    else:
        task = ClassificationTask(
            net,
            meta,
            loss=loss,
            class_weights=model.get("class_weights"),
            label_smoothing=model.get("label_smoothing", 0.0),
            **common,
        )
    task.run_config = cfg
    return task


def build_callbacks(
    cfg: dict[str, Any], out_dir: Path
) -> tuple[list[L.Callback], bool, HistoryWriter]:
    callbacks = [
        instantiate(c)
        for c in (cfg.get("callbacks") or {}).values()
        if isinstance(c, dict) and "_target_" in c
    ]
    progress, bar = progress_callbacks((cfg.get("callbacks") or {}).get("progress_bar", "auto"))
    history = HistoryWriter(out_dir)
    return [CtrlC(), *callbacks, *progress, history], bar, history


def _run_tags(cfg: dict[str, Any], meta: DatasetMeta, extra: dict[str, str]) -> dict[str, str]:
    git = git_info(project_root())
    tags = {
        **git,
        "mlflow.source.git.commit": git["git.commit"],
        "mlflow.source.name": "medpipe.train",
        "medpipe.version": medpipe.__version__,
        "data.name": meta.name,
        "data.sha256": meta.source.get("file_sha256") or meta.content_sha256,
        "data.processed_sha256": meta.content_sha256,
        "data.fingerprint": meta.fingerprint,
        "model.name": str(cfg["model"].get("name")),
        "hydra.overrides": " ".join(hydra_overrides()) or "(none)",
        **dvc_tags(cfg["paths"]["processed_dir"]),  # dvc.stage, dvc.data.md5 under DVC
    }
    tags.update({str(k): str(v) for k, v in (cfg.get("tags") or {}).items()})
    parent = os.environ.get(PARENT_ENV)
    if parent:  # a job of a sweep: nest it under the sweep's parent run
        tags["mlflow.parentRunId"] = parent
        tags["sweep.job_num"] = str(_job_num())
    if cfg.get("optuna_trial") is not None:
        tags["optuna.trial"] = str(cfg["optuna_trial"])
    tags.update(extra)  # e.g. a cross-validation fold's parent and fold number
    return tags


def _job_num() -> int | str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().job.num
    except Exception:  # noqa: BLE001 - outside Hydra
        return ""


def create_run(
    cfg: dict[str, Any], meta: DatasetMeta, extra_tags: dict[str, str] | None = None, suffix=""
):
    """The MLflow run of a training (or of a cross-validation's parent), tags and params logged."""
    from medpipe.tracking.mlflow_run import MlflowRun, default_artifact_location, tracking_uri

    mcfg = cfg["logger"]["mlflow"] or {}
    mlflow_dir = cfg["paths"]["mlflow_dir"]
    uri = tracking_uri(mcfg.get("tracking_uri"), mlflow_dir)
    name = cfg.get("run_name") or f"{cfg['model']['name']}-{meta.name}"
    if os.environ.get(PARENT_ENV):
        name = f"{name}-{_job_num()}"
    return MlflowRun.create(
        uri=uri,
        experiment_name=cfg["experiment_name"],
        run_name=name + suffix,
        artifact_location=default_artifact_location(uri, mcfg.get("artifact_location"), mlflow_dir),
        tags=_run_tags(cfg, meta, extra_tags or {}),
        params=cfg,
        synchronous=bool(mcfg.get("synchronous", False)),
    )


# -- outputs ---------------------------------------------------------------------------------------
def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)


def print_metrics(title: str, metrics: dict[str, float]) -> None:
    print(title)
    for k in sorted(metrics):
        print(f"  {k:<28} {metrics[k]:.4f}")


def write_outputs_report(task: MedTask, out_dir: Path) -> dict[str, Path]:
    """The test split's figures and report from the task's gathered test outputs."""
    if task.test_outputs is None:
        return {}
    out, target = (t.numpy() for t in task.test_outputs)
    meta = task.meta
    if meta.task == "regression":
        return write_regression_report(out, target, meta.classes[0], out_dir)
    return write_test_report(out, target, meta.task, meta.classes, out_dir)


def _input_example(dm: MedDataModule) -> np.ndarray:
    return np.asarray(dm.split_arrays("test").x[:2]).astype(np.float32)


# -- train -----------------------------------------------------------------------------------------
def train(cfg: DictConfig, folder: Path | None = None) -> float | None:
    """Fit, test the best checkpoint, write outputs and track the run. Returns the best monitor
    value (for sweepers); with cv.folds >= 2, every fold in turn, and the mean over folds."""
    if int(OmegaConf.select(cfg, "cv.folds") or 0) >= 2:
        from medpipe.crossval import cross_validate

        return cross_validate(cfg, folder)
    return train_once(cfg, folder)[0]


def train_once(
    cfg: DictConfig,
    folder: Path | None = None,
    folds: dict[str, np.ndarray] | None = None,
    run_tags: dict[str, str] | None = None,
    run_suffix: str = "",
) -> tuple[float, dict[str, float]]:
    """One training: (best monitor value, its metrics.json: test metrics and the validation metrics
    of the best epoch). `folds` and `run_tags` make it one fold of a cross-validation (its rows of
    the pooled data; its parent run and fold number)."""
    c: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    out_dir = Path(c["paths"]["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(int(c["seed"]), workers=True, verbose=False)
    dm = build_datamodule(c, int(c["seed"]), folder, folds)
    meta = dm.meta
    task = build_task(c, meta)
    callbacks, bar, history = build_callbacks(c, out_dir)
    fast = bool(c["trainer"].get("fast_dev_run"))

    run = None
    loggers: list[Any] = []
    if rank_zero_only.rank == 0:
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if "mlflow" in (c.get("logger") or {}) and not fast and rank_zero_only.rank == 0:
        run = create_run(c, meta, run_tags, run_suffix)
        loggers.append(run.logger)
    if "csv" in (c.get("logger") or {}):
        from lightning.pytorch.loggers import CSVLogger

        loggers.append(CSVLogger(**c["logger"]["csv"]))

    with run.guard() if run else contextlib.nullcontext():
        trainer: L.Trainer = instantiate(
            c["trainer"], callbacks=callbacks, logger=loggers or False, enable_progress_bar=bar
        )
        trainer.fit(task, datamodule=dm)
        ckpt = trainer.checkpoint_callback
        best_path = ckpt.best_model_path if ckpt is not None and not fast else ""
        monitor = c["monitor"]
        if ckpt is not None and ckpt.best_model_score is not None:
            best = float(ckpt.best_model_score)
        else:
            best = float(trainer.callback_metrics.get(monitor, math.nan))

        if run is not None and math.isfinite(best):
            run.client.log_metric(run.run_id, f"best/{monitor}", best)
        test_metrics: dict[str, float] = {}
        summary: dict[str, float] = {}
        if c.get("test_after_fit", True):
            results = trainer.test(task, datamodule=dm, ckpt_path=best_path or None, verbose=False)
            test_metrics = _floats(results[0]) if results else {}

        if trainer.is_global_zero:
            best_row = _best_row(history.rows, monitor, c["monitor_mode"])
            summary = {
                **test_metrics,
                **{k: v for k, v in best_row.items() if k.startswith("val/")},
            }
            if best_row:
                summary["best_epoch"] = best_row["epoch"]
            write_json(out_dir / "metrics.json", summary)
            files = [out_dir / "metrics.json", out_dir / "config.yaml"]
            if (out_dir / "history.csv").exists():
                files.append(out_dir / "history.csv")
            report = write_outputs_report(task, out_dir)
            if run is not None:
                _log_run_outputs(run, c, dm, task, files, report, best_path)
            print_metrics(
                f"test metrics ({'best checkpoint' if best_path else 'final weights'}, "
                f"{meta.name}, {c['model']['name']}):",
                test_metrics,
            )
            if best_path:
                print(f"best checkpoint: {best_path}")
            print(f"outputs: {out_dir}")
            if run is not None:
                print(
                    f"MLflow run {run.run_id} in experiment '{c['experiment_name']}' "
                    f"({run.logger._tracking_uri}); browse with `make ui`"
                )
    return best, summary


def _best_row(rows: list[dict[str, float]], monitor: str, mode: str) -> dict[str, float]:
    scored = [r for r in rows if monitor in r and not math.isnan(r[monitor])]
    if not scored:
        return rows[-1] if rows else {}
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: r[monitor])


def _log_run_outputs(
    run,
    cfg: dict[str, Any],
    dm: MedDataModule,
    task: MedTask,
    files: list[Path],
    report: dict[str, Path],
    best_path: str,
) -> None:
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
    if cfg.get("log_model", True):
        import monai

        exported = RegressionInferenceModel if task.meta.task == "regression" else InferenceModel
        model = exported(task).cpu().eval()
        reqs = [
            f"torch=={torch.__version__.split('+')[0]}",
            f"monai=={monai.__version__}",
            f"numpy=={np.__version__}",
        ]
        run.log_model(model, _input_example(dm), reqs)


# -- evaluate --------------------------------------------------------------------------------------
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


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test a checkpoint on the test split of its data; write metrics.json, plots and the report."""
    c: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
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
        from medpipe.crossval import fold_rows

        folds = fold_rows(run_cfg, folder, int(run_cfg["cv"]["fold"]))
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
    metrics = _floats(results[0]) if results else {}
    write_json(out_dir / "metrics.json", metrics)
    write_outputs_report(task, out_dir)
    print_metrics(f"test metrics of {c['ckpt_path']} ({meta.name}):", metrics)
    print(f"outputs: {out_dir}")
    return metrics
