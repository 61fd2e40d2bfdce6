"""One MLflow run per training: created after the data is ready (with a local store, in a thread
once the first step is done: `PendingRun`), FINISHED only when everything is logged, FAILED (or
KILLED on Ctrl-C) if anything raises, never left RUNNING.

`MlflowRun.guard` is the one place a run's final status is decided; Lightning's logger never ends
the run. Everything is written through the logger's MlflowClient, except the exported model:
MLflow 3 creates LoggedModels only through its fluent `log_model`, which runs inside the same run.

Every run records the data it used as MLflow dataset inputs (`split_inputs`, `pooled_input`): the
UI's Dataset column and the run page's Datasets section show them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, MLFlowLogger

from medpipe.tracking import liveness, store
from medpipe.tracking.store import MAX_PARAM_LEN, default_artifact_location, flatten, tracking_uri

if TYPE_CHECKING:
    from mlflow.entities import DatasetInput

    from medpipe.data.processed import DatasetMeta

__all__ = [
    "EpochStepMLFlowLogger",
    "MlflowRun",
    "PendingRun",
    "default_artifact_location",
    "flatten",
    "pooled_input",
    "split_inputs",
    "tracking_uri",
]
log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# The `mlflow.data.context` input tag of each split (the UI shows it next to the dataset's name).
CONTEXTS = {"train": "train", "val": "validation", "test": "test"}
POOLED_CONTEXT = "pooled"  # a cross-validation's parent run: every row, each fold splits them
DIGEST_LEN = 36  # MLflow stores at most 36 characters of a dataset's digest


def dataset_source(meta: DatasetMeta, data_path: str | None = None) -> tuple[str, str]:
    """(source type, source JSON) of processed data, as MLflow's own dataset sources write them:
    the original file (`local`, {"uri"}), its download address (`http`, {"url"}) or, for generated
    data, the generator and its options (`code`, {"tags"})."""
    src = meta.source
    if src.get("file"):
        path = Path(str(src["file"]))
        if not path.is_absolute() and data_path and Path(str(data_path)).name == path.name:
            path = Path(str(data_path)).expanduser().resolve()  # a table source records the name
        return "local", json.dumps({"uri": str(path)})
    if src.get("url"):
        return "http", json.dumps({"url": str(src["url"])})
    options = {k: v for k, v in src.items() if k != "format_version"}
    options.setdefault("generator", src.get("source") or meta.name)
    return "code", json.dumps({"tags": options}, sort_keys=True, default=str)


def _arrays(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The stored samples and targets of a split, memory-mapped (only their headers are read)."""
    return tuple(  # type: ignore[return-value]
        np.load(folder / f"{split}_{key}.npy", mmap_mode="r", allow_pickle=False)
        for key in ("x", "y")
    )


def _dataset(
    meta: DatasetMeta,
    folder: Path,
    name: str,
    digest: str,
    rows: int,
    context: str,
    data_path: str | None,
    split: str | None = None,
) -> DatasetInput:
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.types import Schema, TensorSpec
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    x, y = _arrays(folder, "train")  # every split is stored alike
    schema = TensorDatasetSchema(
        features=Schema([TensorSpec(x.dtype, (-1, *x.shape[1:]), "x")]),
        targets=Schema([TensorSpec(y.dtype, (-1, *y.shape[1:]), "y")]),
    )
    profile = {
        "num_rows": rows,
        "features_shape": [rows, *x.shape[1:]],
        "features_dtype": str(x.dtype),
        "targets_shape": [rows, *y.shape[1:]],
        "targets_dtype": str(y.dtype),
        "task": meta.task,
        "kind": meta.kind,
        "classes": list(meta.classes),
        "processed_sha256": meta.content_sha256,
        "fingerprint": meta.fingerprint,
    }
    if missing := missing_profile(meta.source.get("missing"), split):
        profile["missing"] = missing
    source_type, source = dataset_source(meta, data_path)
    return DatasetInput(
        dataset=Dataset(
            name=name,
            digest=digest[:DIGEST_LEN],
            source_type=source_type,
            source=source,
            schema=json.dumps(schema.to_dict()),
            profile=json.dumps(profile),
        ),
        tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)],
    )


def missing_profile(missing: Any, split: str | None) -> dict[str, Any] | None:
    """What a signal source's `info["missing"]` (preprocess.missing) counts for one split (None:
    every split, summed: pooled data and cross-validation folds, whose rows mix the splits)."""
    if not isinstance(missing, dict):
        return None
    out: dict[str, Any] = {"rule": missing.get("rule")}
    for key, counts in missing.items():
        if isinstance(counts, dict):
            out[key] = counts.get(split, 0) if split in counts else sum(counts.values())
    return out


def fold_digest(content_sha256: str, split: str, rows: np.ndarray) -> str:
    """The digest of a cross-validation fold's split: the processed data's hash and the split's
    row indices into the pooled samples (folds of the same data differ, the same fold does not)."""
    h = hashlib.sha256(f"{content_sha256}:{split}:".encode())
    h.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return h.hexdigest()[:DIGEST_LEN]


def split_inputs(
    meta: DatasetMeta,
    folder: str | Path,
    folds: Mapping[str, np.ndarray] | None = None,
    data_path: str | None = None,
) -> list[DatasetInput]:
    """The train, val and test data of a training run as MLflow dataset inputs named
    `<data>/<split>` (MLflow keeps one input per name and digest, so the three splits of one
    processed dataset need their own names), with context train, validation or test.

    digest: the processed data's hash (`data.processed_sha256`, cut to MLflow's 36 characters);
    for a cross-validation fold (`folds`: row indices of each split into the pooled samples)
    the hash of that and the split's rows. `data_path`: the configured data file, for sources
    that record only its name."""
    folder = Path(folder)
    inputs = []
    for split in SPLITS:
        if folds is None:
            digest, rows = meta.content_sha256, int(meta.sizes[split])
        else:
            digest, rows = fold_digest(meta.content_sha256, split, folds[split]), len(folds[split])
        name = f"{meta.name}/{split}"
        inputs.append(
            _dataset(
                meta,
                folder,
                name,
                digest,
                rows,
                CONTEXTS[split],
                data_path,
                split if folds is None else None,
            )
        )
    return inputs


def pooled_input(
    meta: DatasetMeta, folder: str | Path, data_path: str | None = None
) -> DatasetInput:
    """The pooled train+val+test samples a cross-validation splits into folds, named after the
    data, digest the processed hash, context `pooled`."""
    rows = sum(int(meta.sizes[s]) for s in SPLITS)
    return _dataset(
        meta, Path(folder), meta.name, meta.content_sha256, rows, POOLED_CONTEXT, data_path
    )


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
        with store.keep_uri_env():  # the logger opens its run here (mlflow.set_tracking_uri)
            self.client  # noqa: B018
        # This process owns the run: host, pid and a heartbeat (tracking/liveness.py), so that a
        # run its dead process leaves RUNNING is marked KILLED later; end() stops the heartbeat.
        liveness.start(self.client, self.run_id)

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
        datasets: Sequence[DatasetInput] = (),
    ) -> MlflowRun:
        """The run, with its params and dataset inputs; its experiment marked as model training
        for the UI. If logging those fails, the run is ended FAILED (KILLED on Ctrl-C)."""
        store.open_client(uri)  # server answers; a new sqlite store created under a file lock
        logger = EpochStepMLFlowLogger(
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=uri,
            artifact_location=artifact_location,
            tags=tags,
            synchronous=synchronous,
        )
        run = cls(logger)
        run.output_dir = flatten(params).get(liveness.OUTPUT_DIR_PARAM)
        store.CURRENT["run_id"] = run.run_id
        with run.guard(finish=False):
            store.mark_training_experiment(run.client, run.experiment_id)
            run.log_params(params)
            run.log_datasets(datasets)
        return run

    @classmethod
    def resume(
        cls,
        uri: str,
        run_id: str,
        synchronous: bool,
        logger_cls: type[EpochStepMLFlowLogger] | None = None,
    ) -> MlflowRun:
        """The existing run `run_id` re-attached (`medpipe.train resume=...`, medpipe.resuming):
        RUNNING again, owned by this process; nothing re-logged (params are immutable).
        `logger_cls`: an EpochStepMLFlowLogger subclass (the resumed one skips logged steps)."""
        store.open_client(uri)
        logger = (logger_cls or EpochStepMLFlowLogger)(
            tracking_uri=uri, run_id=run_id, synchronous=synchronous
        )
        run = cls(logger)
        store.CURRENT["run_id"] = run.run_id
        run.client.update_run(run.run_id, status="RUNNING")
        return run

    @property
    def client(self):
        return self.logger.experiment

    @property
    def run_id(self) -> str:
        return self.logger.run_id

    @property
    def experiment_id(self) -> str:
        return self.logger.experiment_id

    @property
    def uri(self) -> str:
        return self.logger._tracking_uri

    @property
    def url(self) -> str:
        """The run's page in the MLflow UI (`make ui`'s address for a local store)."""
        return store.run_url(self.uri, self.experiment_id, self.run_id)

    def log_datasets(self, datasets: Sequence[DatasetInput], attempts: int = 4) -> None:
        """The data the run used, as MLflow dataset inputs, in one call.

        MLflow's store finds-or-creates each dataset by (experiment, name, digest) without a lock,
        so the parallel jobs of a sweep, logging the same data at the same moment, can collide on
        the unique key; the loser's retry finds the dataset the winner created."""
        if not datasets:
            return
        from mlflow.exceptions import MlflowException

        for attempt in range(attempts):
            try:
                self.client.log_inputs(self.run_id, datasets=list(datasets))
                return
            except MlflowException:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.2)

    # -- a tracking server that goes away mid-run -------------------------------------------------
    # MLflow retries every request to a server (MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7 with
    # backoff 2: about 4 minutes), so a server restarted within that time loses nothing: the
    # epoch metrics wait in MLflow's asynchronous queue. If the server stays away longer, the run
    # goes on locally (checkpoints, metrics.json, history.csv, report in its output folder): later
    # MLflow writes are skipped, and end() says where the results are and what the store holds.
    offline: str | None = None  # why the server is taken to be away, once a write failed on it
    output_dir: str | None = None  # set by create: where the complete results are kept
    _retries_before: str | None = None

    @contextlib.contextmanager
    def _tolerant(self) -> Iterator[None]:
        """Run a write to MLflow; if the server is unreachable, switch the run to offline."""
        try:
            yield
        except Exception as err:
            if not store.is_server(self.uri) or not store.unreachable_error(err):
                raise
            self._go_offline(err)

    def _go_offline(self, err: BaseException) -> None:
        import os
        import sys

        if self.offline:
            return
        self.offline = store.first_line(err)
        # Later requests (queued metrics, the heartbeat, the end) fail at once instead of each
        # waiting out the retries; end() restores the setting (a joblib worker runs more jobs).
        self._retries_before = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        self.logger.log_metrics = lambda *args, **kwargs: None  # the epochs: history.csv has them
        where = f" in {self.output_dir}" if self.output_dir else " in the output folder"
        print(
            f"medpipe: warning: MLflow tracking server {self.uri} went away during run "
            f"{self.run_id} ({self.offline}); training goes on and writes its results{where}",
            file=sys.stderr,
        )

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        if self.offline:
            return
        with self._tolerant():
            self._log_metrics(metrics, step)

    def _log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
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
        if self.offline:
            return
        with self._tolerant():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.offline:
            return
        with self._tolerant():
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, v)

    def log_model(self, model, input_example, pip_requirements: list[str], **options: Any) -> None:
        """`options`: further arguments of mlflow.pytorch.log_model (signature, metadata, ...)."""
        if self.offline:
            return
        with self._tolerant():
            self._log_model(model, input_example, pip_requirements, **options)

    def _log_model(self, model, input_example, pip_requirements: list[str], **options: Any) -> None:
        import mlflow

        with store.keep_uri_env():
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
        if self.offline:
            self._end_offline(status)
            return
        try:
            store.end_run(self.client, self.run_id, status)
        except Exception as err:
            if not store.is_server(self.uri) or not store.unreachable_error(err):
                raise
            self._go_offline(err)
            self._end_offline(status)

    def _end_offline(self, status: str) -> None:
        """The server went away during the run: close the run FAILED if it is back (with a tag
        saying what is missing), else leave it to the next medpipe command on the store, which
        marks it KILLED (its process is gone by then); either way, say where the results are."""
        import os
        import sys

        liveness.stop(self.run_id)
        where = self.output_dir or "the run's output folder"
        note = (
            f"the MLflow server went away during the run ({self.offline}); what was logged after "
            f"that is missing here. The training ended {status}; its complete results are in "
            f"{where} (metrics.json, history.csv, checkpoints/)"
        )
        closed = False
        with contextlib.suppress(Exception):
            store.check_reachable(self.uri)
            self.client.set_tag(self.run_id, "error", note[:5000])
            self.client.set_terminated(self.run_id, "FAILED")
            closed = True
        if self._retries_before is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = self._retries_before
        state = (
            "marked FAILED there, with this note in its tag `error`"
            if closed
            else "left RUNNING there until the next medpipe command on that store (train, compare, "
            "predict) marks it KILLED"
        )
        print(
            f"medpipe: warning: MLflow run {self.run_id} on {self.uri} is incomplete ({state}); "
            f"training ended {status} and its complete results are in {where} "
            "(metrics.json, history.csv, checkpoints/)",
            file=sys.stderr,
        )

    @contextlib.contextmanager
    def guard(self, finish: bool = True) -> Iterator[MlflowRun]:
        """FINISHED if the block completes (left running with `finish=False`), FAILED on an error,
        KILLED on Ctrl-C."""
        try:
            yield self
        except KeyboardInterrupt:
            self.end("KILLED")
            raise
        except BaseException:
            self.end("FAILED")
            raise
        if finish:
            self.end("FINISHED")


class PendingRun:
    """An `MlflowRun` created in a background thread once training has started, so that importing
    MLflow, creating the run and logging its params and dataset inputs (2-4 s on a laptop CPU)
    overlap the first epoch instead of delaying the first step (benchmarks: startup).

    `start()` begins the creation (training.py calls it when the first epoch starts); any use of
    the run's attributes (`run_id`, `log_metrics`, `url`, ...) waits for it and raises what
    creating it raised. The Lightning logger (`logger`) waits for it at the first epoch end, so a
    store that cannot be written stops the training there, with no run left RUNNING, and a run
    killed after its first epoch always has its MLflow run and run.json. A tracking
    server is not deferred (training.py): its address is checked before training starts.
    """

    def __init__(self, create: Callable[[], MlflowRun], then: Callable[[MlflowRun], None]):
        self._create, self._then = create, then
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._run: MlflowRun | None = None
        self._error: BaseException | None = None
        self.logger = _PendingLogger(self)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._make, name="medpipe-mlflow-run", daemon=True
            )
            self._thread.start()

    def _make(self) -> None:
        try:
            self._run = self._create()
            self._then(self._run)
        except BaseException as err:  # noqa: BLE001 - re-raised in the training's thread
            self._error = err
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        return self._done.is_set()

    def result(self) -> MlflowRun:
        self.start()
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._run is not None
        return self._run

    def __getattr__(self, name: str) -> Any:
        return getattr(self.result(), name)

    @contextlib.contextmanager
    def guard(self, finish: bool = True) -> Iterator[PendingRun]:
        """MlflowRun.guard for a run that may not exist yet: an error in the block ends the run
        (once created) FAILED, KILLED on Ctrl-C; one in creating the run is raised here."""
        try:
            yield self
        except BaseException as err:
            self.start()  # a training that failed before its first step is recorded too
            self._done.wait()
            if self._run is not None:
                self._run.end("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
            raise
        if finish:
            self.result().end("FINISHED")


class _PendingLogger(Logger):
    """Lightning's view of a `PendingRun`: epoch metrics go to the run once it exists (waiting for it);
    everything else is the real logger's."""

    def __init__(self, pending: PendingRun):
        super().__init__()
        self._pending = pending

    @property
    def _real(self) -> EpochStepMLFlowLogger:
        return self._pending.result().logger

    @property
    def name(self) -> str:
        return self._real.name

    @property
    def version(self) -> str:
        return self._real.version

    @property
    def experiment(self):
        """A stand-in for the run's MlflowClient: Lightning touches `experiment` when fit sets up
        (to create a lazy logger's run), which must not wait for the run; using it does."""
        return _WhenReady(lambda: self._real.experiment)

    @property
    def run_id(self) -> str:
        return self._real.run_id

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The run's params are logged from the resolved config when it is created."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """At an epoch's end: waits for the run (created since the first step), so that once an
        epoch has ended the run and its run.json exist (what resume= reads after a crash)."""
        self._real.log_metrics(metrics, step)  # raises what creating the run raised

    def finalize(self, status: str = "success") -> None:
        """The run's status is MlflowRun's to set (EpochStepMLFlowLogger.finalize)."""


class StartPendingRun(Callback):
    """Starts a `PendingRun`'s creation once the first training step is done."""

    def __init__(self, pending: PendingRun):
        self.pending = pending

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.pending.start()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.pending.start()


class _WhenReady:
    """An object resolved on first use: attribute access waits for `get()`."""

    def __init__(self, get: Callable[[], Any]):
        self._get = get

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


def mlflow_loggers(loggers: Sequence[Any]) -> list[Any]:
    """The loggers that write to an MLflow run (`experiment`, `run_id`): Lightning's and ours."""
    return [lg for lg in loggers if isinstance(lg, (MLFlowLogger, _PendingLogger))]
