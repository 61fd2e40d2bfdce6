"""One MLflow run per training: created after the data is ready, FINISHED only when everything is
logged, FAILED (or KILLED on Ctrl-C) if anything raises, never left RUNNING.

`MlflowRun.guard` is the one place a run's final status is decided; Lightning's logger never ends
the run. Everything is written through the logger's MlflowClient, except the exported model:
MLflow 3 creates LoggedModels only through its fluent `log_model`, which runs inside the same run.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

from medpipe.tracking import store
from medpipe.tracking.store import MAX_PARAM_LEN, default_artifact_location, flatten, tracking_uri

__all__ = [
    "EpochStepMLFlowLogger",
    "MlflowRun",
    "default_artifact_location",
    "flatten",
    "tracking_uri",
]
log = logging.getLogger(__name__)


class EpochStepMLFlowLogger(MLFlowLogger):
    """MLFlowLogger that steps metrics by epoch and leaves the run status to `MlflowRun`."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        super().log_metrics(metrics, int(epoch) if epoch is not None else step)

    def finalize(self, status: str = "success") -> None:
        """Lightning calls this after fit and after test; the run's status is MlflowRun's to set."""


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
        store.CURRENT["run_id"] = run.run_id
        run.log_params(params)
        return run

    @property
    def client(self):
        return self.logger.experiment

    @property
    def run_id(self) -> str:
        return self.logger.run_id

    @property
    def uri(self) -> str:
        return self.logger._tracking_uri

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

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

    def log_model(self, model, input_example, pip_requirements: list[str], **options: Any) -> None:
        """`options`: further arguments of mlflow.pytorch.log_model (signature, metadata, ...)."""
        import mlflow

        mlflow.set_tracking_uri(self.logger._tracking_uri)
        with mlflow.start_run(run_id=self.run_id, log_system_metrics=False):
            mlflow.pytorch.log_model(
                model,
                name="model",
                input_example=input_example,
                pip_requirements=pip_requirements,
                **options,
            )

    def end(self, status: str) -> None:
        store.end_run(self.client, self.run_id, status)

    @contextlib.contextmanager
    def guard(self) -> Iterator[MlflowRun]:
        """FINISHED if the block completes, FAILED on an error, KILLED on Ctrl-C."""
        try:
            yield self
        except KeyboardInterrupt:
            self.end("KILLED")
            raise
        except BaseException:
            self.end("FAILED")
            raise
        self.end("FINISHED")
