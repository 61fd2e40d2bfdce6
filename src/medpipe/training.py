"""One training: fit, test the best checkpoint, write the outputs and track the run in MLflow."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import yaml
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only

import medpipe
from medpipe.building import build_callbacks, build_datamodule, build_task
from medpipe.data.prepare import mix_tags
from medpipe.data.processed import DatasetMeta
from medpipe.dvc_provenance import dvc_tags
from medpipe.evaluating import collect_outputs, data_info, store_operating_point
from medpipe.evaluation.run_report import write_run_report
from medpipe.evaluation.settings import EvalSettings, Evaluation
from medpipe.outputs import (
    best_row,
    log_run_outputs,
    print_metrics,
    print_operating_point,
    print_warnings,
    write_json,
)
from medpipe.paths import project_root
from medpipe.resuming import (
    OUTPUT_DIR_TAG,
    Resume,
    check_writable,
    checkpoint_io,
    fill_gaps,
    reattach,
)
from medpipe.tasks.kinds import TaskKind
from medpipe.tracking.provenance import git_info, hydra_overrides
from medpipe.tracking.store import MAIN_METRICS_TAG, PARENT_ENV, WARNINGS_TAG

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


def _job_num() -> int | str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().job.num
    except Exception:  # noqa: BLE001 - outside Hydra
        return ""


def ui_hint(uri: str) -> str:
    """What serves the UI at a run's printed address: nothing to add for a tracking server,
    `make ui` for the project's store, `mlflow ui` on the store otherwise."""
    if uri.startswith(("http://", "https://")):
        return ""
    if uri == f"sqlite:///{project_root() / 'logs' / 'mlflow' / 'mlflow.db'}":
        return " (after `make ui`)"
    return f" (after `mlflow ui --backend-store-uri {uri}`)"


def run_tags(
    c: dict[str, Any], meta: DatasetMeta, kind: TaskKind, extra: dict[str, str]
) -> dict[str, str]:
    git = git_info(project_root())
    tags = {
        **git,
        "mlflow.source.git.commit": git["git.commit"],
        "mlflow.source.name": "medpipe.train",
        "medpipe.version": medpipe.__version__,
        "medpipe.task_kind": kind.name,
        MAIN_METRICS_TAG: ",".join(kind.main_keys()),  # compare's and sweeps' columns
        "data.name": meta.name,
        "data.sha256": meta.source.get("file_sha256") or meta.content_sha256,
        "data.processed_sha256": meta.content_sha256,
        "data.fingerprint": meta.fingerprint,
        **mix_tags(meta),  # data.train_fraction, data.synthetic_samples, ... where set
        "model.name": str(c["model"].get("name")),
        "hydra.overrides": " ".join(hydra_overrides()) or "(none)",
        **dvc_tags(c["paths"]["processed_dir"]),  # dvc.stage, dvc.data.md5 under DVC
    }
    tags.update({str(k): str(v) for k, v in (c.get("tags") or {}).items()})
    parent = os.environ.get(PARENT_ENV)
    if parent:  # a job of a sweep: nest it under the sweep's parent run
        tags["mlflow.parentRunId"] = parent
        tags["sweep.job_num"] = str(_job_num())
    if c.get("optuna_trial") is not None:
        tags["optuna.trial"] = str(c["optuna_trial"])
    tags.update(extra)  # e.g. a cross-validation fold's parent and fold number
    return tags


def create_run(
    c: dict[str, Any],
    meta: DatasetMeta,
    kind: TaskKind,
    extra_tags: dict[str, str] | None = None,
    suffix: str = "",
    datasets: list[Any] | None = None,
):
    """The MLflow run of a training (or of a cross-validation's parent), tags, params and the
    `datasets` it used (MLflow DatasetInputs: `split_inputs`, `pooled_input`) logged."""
    from medpipe.tracking.mlflow_run import MlflowRun, default_artifact_location, tracking_uri

    mcfg = c["logger"]["mlflow"] or {}
    mlflow_dir = c["paths"]["mlflow_dir"]
    uri = tracking_uri(mcfg.get("tracking_uri"), mlflow_dir)
    name = c.get("run_name") or f"{c['model']['name']}-{meta.name}"
    if os.environ.get(PARENT_ENV):
        name = f"{name}-{_job_num()}"
    return MlflowRun.create(
        uri=uri,
        experiment_name=c["experiment_name"],
        run_name=name + suffix,
        artifact_location=default_artifact_location(uri, mcfg.get("artifact_location"), mlflow_dir),
        tags=run_tags(c, meta, kind, extra_tags or {}),
        params=c,
        synchronous=bool(mcfg.get("synchronous", False)),
        datasets=datasets or [],
    )


def train_once(
    c: dict[str, Any],
    kind: TaskKind,
    folder: Path | None = None,
    folds: dict[str, np.ndarray] | None = None,
    extra_tags: dict[str, str] | None = None,
    run_suffix: str = "",
    resume: Resume | None = None,
) -> tuple[float, dict[str, float]]:
    """One training of the resolved, checked config `c`: (best monitor value, its metrics.json:
    test metrics and the validation metrics of the best epoch). `folds` and `extra_tags` make it
    one fold of a cross-validation (its rows of the pooled data; its parent run and fold).
    `resume`: continue from its last checkpoint into its MLflow run (medpipe.resuming)."""
    out_dir = Path(c["paths"]["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:
        check_writable(out_dir)
    L.seed_everything(int(c["seed"]), workers=True, verbose=False)
    dm = build_datamodule(c, int(c["seed"]), folder, folds)
    meta = dm.meta
    task = build_task(c, meta, kind, training=True)
    callbacks, bar, history = build_callbacks(c, out_dir)
    private = None
    if (c.get("privacy") or {}).get("dp"):  # DP-SGD (medpipe.privacy.dp), planned before the run
        from medpipe.privacy.dp import private_training

        private = private_training(c, dm, kind, folds)
        callbacks.insert(0, private)  # before the history and checkpoints read its epsilon
    fast = bool(c["trainer"].get("fast_dev_run"))

    run = None
    loggers: list[Any] = []
    if rank_zero_only.rank == 0:
        (out_dir / "config.yaml").write_text(yaml.safe_dump(c, sort_keys=False))
    if "mlflow" in (c.get("logger") or {}) and not fast and rank_zero_only.rank == 0:
        from medpipe.tracking.mlflow_run import PendingRun, StartPendingRun, split_inputs
        from medpipe.tracking.store import is_server, tracking_uri

        def record(run) -> None:  # where resume= and evaluate find the run
            write_json(
                out_dir / "run.json",
                {"run_id": run.run_id, "tracking_uri": run.uri, "experiment_id": run.experiment_id},
            )

        def new_run():
            inputs = split_inputs(meta, dm.folder, folds, c["data"].get("path"))
            tags = {
                **(extra_tags or {}),
                "data.loader": dm.loader,  # what data.loader=auto chose
                OUTPUT_DIR_TAG: str(out_dir.resolve()),  # where resume= finds last.ckpt
            }
            run = create_run(c, meta, kind, tags, run_suffix, inputs)
            if private is not None:
                run.log_params(private.plan.params())
            return run

        mcfg = c["logger"]["mlflow"] or {}
        if resume is not None and resume.run_id:
            run = reattach(resume, bool(mcfg.get("synchronous", False)))
            record(run)
        elif is_server(tracking_uri(mcfg.get("tracking_uri"), c["paths"]["mlflow_dir"])):
            run = new_run()  # a server's address is checked before anything trains
            record(run)
        else:  # a local store: the run is created while the first epoch trains
            run = PendingRun(new_run, record)
            callbacks.append(StartPendingRun(run))
        loggers.append(run.logger)
    if "csv" in (c.get("logger") or {}):
        from lightning.pytorch.loggers import CSVLogger

        loggers.append(CSVLogger(**c["logger"]["csv"]))

    with run.guard() if run else contextlib.nullcontext():
        trainer: L.Trainer = instantiate(
            c["trainer"],
            callbacks=callbacks,
            logger=loggers or False,
            enable_progress_bar=bar,
            plugins=[checkpoint_io()],  # every checkpoint written atomically
        )
        ckpt_path = str(resume.ckpt) if resume is not None and resume.ckpt.is_file() else None
        trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        if run is not None and resume is not None and hasattr(run.logger, "skip"):
            fill_gaps(run, history.restored)  # epochs whose metrics the crash kept from MLflow
        ckpt = trainer.checkpoint_callback
        best_path = ckpt.best_model_path if ckpt is not None and not fast else ""
        monitor = c["monitor"]
        if ckpt is not None and ckpt.best_model_score is not None:
            best = float(ckpt.best_model_score)
        else:
            best = float(trainer.callback_metrics.get(monitor, math.nan))

        if run is not None and math.isfinite(best):
            run.log_metrics({f"best/{monitor}": best})
        test_metrics: dict[str, float] = {}
        summary: dict[str, float] = {}
        evaluation = Evaluation()
        tested = bool(c.get("test_after_fit", True))
        if tested:  # every rank takes part; rank zero evaluates
            test_metrics = collect_outputs(trainer, task, dm, ("val", "test"), best_path or None)

        if trainer.is_global_zero and tested:
            evaluation = task.evaluate_outputs(
                out_dir,
                EvalSettings.from_config(c),
                dm.split_arrays("test"),
                rows=folds,
                info=data_info(meta),
            )
            test_metrics.update(evaluation.metrics)
            if best_path:  # the checkpoint carries the operating point chosen just now
                store_operating_point(best_path, task)
            if run is not None:
                run.log_metrics({k: v for k, v in evaluation.metrics.items() if math.isfinite(v)})
                if evaluation.warnings:
                    run.set_tags({WARNINGS_TAG: " | ".join(evaluation.warnings)})

        if trainer.is_global_zero:
            best_epoch = best_row(history.rows, monitor, c["monitor_mode"])
            summary = {
                **test_metrics,
                **{k: v for k, v in best_epoch.items() if k.startswith("val/")},
            }
            if best_epoch:
                summary["best_epoch"] = best_epoch["epoch"]
            if private is not None:  # the epsilon spent by the whole training, and its settings
                summary.update(private.summary())
            if run is not None:  # the run's val/* are the last epoch's; these are the best's
                run.log_metrics(
                    {  # best/<monitor> is logged above, from the checkpoint
                        f"best/{k}": v
                        for k, v in summary.items()
                        if k.startswith("val/") and k != monitor
                    }
                    | ({"best_epoch": summary["best_epoch"]} if "best_epoch" in summary else {})
                )
            write_json(out_dir / "metrics.json", summary)
            files = [out_dir / "metrics.json", out_dir / "config.yaml"]
            if (out_dir / "history.csv").exists():
                files.append(out_dir / "history.csv")
            report = dict(evaluation.files)
            if tested:
                report["html"] = write_run_report(
                    out_dir, c, meta, summary, evaluation, out_dir / "history.csv"
                )
            if run is not None:
                log_run_outputs(run, c, dm, task, files, report, best_path, evaluation.predictions)
            print_metrics(
                f"test metrics ({'best checkpoint' if best_path else 'final weights'}, "
                f"{meta.name}, {c['model']['name']}):",
                test_metrics,
            )
            print_operating_point(evaluation.operating_point)
            print_warnings(evaluation.warnings)
            if best_path:
                print(f"best checkpoint: {best_path}")
            print(f"outputs: {out_dir}")
            if run is not None:
                print(f"MLflow run {run.run_id}: {run.url}{ui_hint(run.uri)}")
    return best, summary
