"""One MLflow run per training: created after the data is ready, FINISHED only when everything is
logged, FAILED (or KILLED on Ctrl-C) if anything raises, never left RUNNING."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

log = logging.getLogger(__name__)
MAX_PARAM_LEN = 6000


def tracking_uri(cfg_uri: str | None, mlflow_dir: str) -> str:
    """Config value > $MLFLOW_TRACKING_URI > the embedded sqlite store under paths.mlflow_dir."""
    if cfg_uri:
        return cfg_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = Path(mlflow_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def default_artifact_location(uri: str, cfg_location: str | None, mlflow_dir: str) -> str | None:
    if cfg_location:
        return cfg_location
    if uri.startswith("sqlite:"):
        return (Path(mlflow_dir).resolve() / "artifacts").as_uri()
    return None  # a server decides


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


class EpochStepMLFlowLogger(MLFlowLogger):
    """MLFlowLogger that steps metrics by epoch and leaves the run status to `MlflowRun`."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        super().log_metrics(metrics, int(epoch) if epoch is not None else step)

    def finalize(self, status: str = "success") -> None:
        if status != "success" and self._initialized:
            MlflowRun.end(self, "FAILED")


class MlflowRun:
    """Creates the run (with tags and params) and closes it with the right status."""

    def __init__(self, logger: EpochStepMLFlowLogger):
        self.logger = logger

    @classmethod
    def create(
        cls,
        uri: str,
        experiment_name: str,
        run_name: str,
        artifact_location: str | None,
        tags: dict[str, str],
        params: dict[str, Any],
        synchronous: bool,
    ) -> MlflowRun:
        logger = EpochStepMLFlowLogger(
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=uri,
            artifact_location=artifact_location,
            tags=tags,
            synchronous=synchronous,
        )
        run = cls(logger)
        run.log_params(params)
        return run

    @property
    def client(self):
        return self.logger.experiment

    @property
    def run_id(self) -> str:
        return self.logger.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def log_model(self, model, input_example, pip_requirements: list[str]) -> None:
        import mlflow

        mlflow.set_tracking_uri(self.logger._tracking_uri)
        with mlflow.start_run(run_id=self.run_id, log_system_metrics=False):
            mlflow.pytorch.log_model(
                model, name="model", input_example=input_example, pip_requirements=pip_requirements
            )

    @staticmethod
    def end(logger: MLFlowLogger, status: str) -> None:
        import mlflow

        with contextlib.suppress(Exception):
            mlflow.flush_async_logging()
        logger.experiment.set_terminated(logger.run_id, status)

    @contextlib.contextmanager
    def guard(self) -> Iterator[MlflowRun]:
        """FINISHED if the block completes, FAILED on an error, KILLED on Ctrl-C."""
        try:
            yield self
        except KeyboardInterrupt:
            self.end(self.logger, "KILLED")
            raise
        except BaseException:
            self.end(self.logger, "FAILED")
            raise
        self.end(self.logger, "FINISHED")
