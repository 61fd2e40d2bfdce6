"""Light tracking helpers (no torch, no Lightning): where the store is, and job bookkeeping."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MAX_PARAM_LEN = 6000
CURRENT: dict[str, str | None] = {"run_id": None}  # the MLflow run created by the current job
# Set by the sweep callback (tracking/sweep.py) in the multirun's process: every job's run is
# nested under this parent run. Local, joblib and SLURM jobs all inherit it.
PARENT_ENV = "MEDPIPE_SWEEP_PARENT_RUN_ID"
# Set by training on every run (read by the sweep summary and by `medpipe.compare`): the
# comma-separated metric keys its task kind considers its main ones, in display order.
MAIN_METRICS_TAG = "medpipe.main_metrics"
WARNINGS_TAG = "medpipe.warnings"  # what a reader of the run's results must know, " | "-joined
# MLflow 3's experiment kind (the UI's kind selector; `genai_development` marks GenAI ones): medpipe
# sets "custom_model_development" ("Machine learning" in the UI) on the experiments it creates or
# uses, unless the experiment already has a kind. MLflow 3.17's UI picks its view from its sidebar
# switch rather than from this tag, hence UI_TRAINING_VIEW in the addresses medpipe prints.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_EXPERIMENT_KIND = "custom_model_development"
# `make ui` and `make mlflow-server` serve the embedded store here (Makefile HOST and PORT).
UI_ADDRESS = "http://127.0.0.1:5000"
# The UI's own query parameter for its sidebar switch (GenAI / Machine learning): without it
# MLflow 3.17 opens an experiment in the GenAI view (traces) in a browser that never chose.
UI_TRAINING_VIEW = "workflowType=machine_learning"


@contextlib.contextmanager
def keep_uri_env() -> Iterator[None]:
    """`mlflow.set_tracking_uri` (which Lightning's MLFlowLogger calls when it opens its run, and
    the model logging) also sets $MLFLOW_TRACKING_URI for the whole process; left so, the next run
    of the process (a test, an in-process caller) would go to this run's store instead of its
    own. The variable is put back as it was."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


def tracking_uri(cfg_uri: str | None, mlflow_dir: str) -> str:
    """Config value > $MLFLOW_TRACKING_URI > the embedded sqlite store under paths.mlflow_dir."""
    if cfg_uri:
        return cfg_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    # the folder is created when the store is first opened (open_client), not here: a config
    # that is refused leaves nothing behind
    return f"sqlite:///{Path(mlflow_dir).resolve() / 'mlflow.db'}"


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


def end_run(client: Any, run_id: str, status: str) -> None:
    """The one way a run ends: pending asynchronous writes flushed, then its final status
    (FINISHED, FAILED or KILLED). Training runs reach it through MlflowRun.guard, sweep parents
    through the sweep callback, jobs that failed before their run existed through
    record_failed_job.

    The flush is the client's own store's: `mlflow.flush_async_logging()` flushes the default
    store instead, and with no tracking URI set it creates ./mlflow.db in the working folder."""
    from medpipe.tracking import liveness

    liveness.stop(run_id)  # the heartbeat of a run this process owns
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is not None:
        store.flush_async_logging()
    client.set_terminated(run_id, status)


def configured_store(cfg: Any) -> tuple[str, str | None] | None:
    """(tracking URI, artifact location) for a config with `logger.mlflow`; None without MLflow."""
    logger = cfg.get("logger") or {}
    if "mlflow" not in logger:
        return None
    mcfg = logger.get("mlflow") or {}
    mlflow_dir = str(cfg["paths"]["mlflow_dir"])
    uri = tracking_uri(mcfg.get("tracking_uri"), mlflow_dir)
    return uri, default_artifact_location(uri, mcfg.get("artifact_location"), mlflow_dir)


def experiment_id(client: Any, name: str, artifact_location: str | None) -> str:
    """The id of experiment `name`, created (with its artifact location) if missing; either way
    marked as a model-training experiment for the MLflow UI (`mark_training_experiment`)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        kind = {EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT_KIND}
        return client.create_experiment(name, artifact_location, tags=kind)
    mark_training_experiment(client, exp.experiment_id, exp.tags)
    return exp.experiment_id


def mark_training_experiment(
    client: Any, exp_id: str, tags: Mapping[str, str] | None = None
) -> None:
    """Tag experiment `exp_id` `mlflow.experimentKind=custom_model_development` unless it has a
    kind already (one a user chose in the UI is kept). `tags`: its tags, if already fetched."""
    if tags is None:
        tags = client.get_experiment(exp_id).tags
    if not tags.get(EXPERIMENT_KIND_TAG):
        client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT_KIND)


def ui_address(uri: str) -> str:
    """Where the MLflow UI of tracking URI `uri` is: the server itself for an http(s) tracking
    server, else the address `make ui` serves the local store on."""
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return UI_ADDRESS


def run_url(uri: str, exp_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI (the route of MLflow 3.17's UI), in its Machine learning
    (training runs) view."""
    return f"{ui_address(uri)}/#/experiments/{exp_id}/runs/{run_id}?{UI_TRAINING_VIEW}"


def record_failed_job(cfg, err: BaseException) -> str | None:
    """A sweep job that failed before its run existed still gets a FAILED run, with the error."""
    from omegaconf import OmegaConf

    try:
        store = configured_store(cfg)
        if store is None:
            return None
        uri, artifact_location = store
        client = open_client(uri)
        exp_id = experiment_id(client, str(cfg.experiment_name), artifact_location)
        from medpipe.tracking.provenance import hydra_overrides

        tags = {
            "error": str(err).splitlines()[0][:5000] if str(err) else type(err).__name__,
            "hydra.overrides": " ".join(hydra_overrides()) or "(none)",
        }
        if os.environ.get(PARENT_ENV):
            tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
        run = client.create_run(exp_id, run_name=f"failed-{cfg.model.name}", tags=tags)
        try:
            params = flatten(OmegaConf.to_container(cfg, resolve=True))
            client.log_batch(
                run.info.run_id,
                params=[
                    __import__("mlflow").entities.Param(k, str(v)[:MAX_PARAM_LEN])
                    for k, v in params.items()
                ][:100],
            )
        except Exception:  # noqa: BLE001 - the config itself may be what failed
            pass
        end_run(client, run.info.run_id, "FAILED")
        return run.info.run_id
    except Exception as tracking_err:  # noqa: BLE001 - never hide the job's own error
        log.warning("could not record the failed job in MLflow: %s", tracking_err)
        return None


# -- opening a store safely ------------------------------------------------------------------------
# An unreachable server fails in seconds at start (`check_reachable`); during a run MLflow's own
# retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7 with backoff 2: several minutes) ride out a
# server restart. MLflow's default request timeout is 120 s; a live server answers in far less.
REACHABLE_TIMEOUT_S = 3.0
STORE_LOCK_TIMEOUT_S = 300.0  # another process migrating a new store: minutes at most
_OPENED: dict[str, Any] = {}  # uri -> MlflowClient, one safe opening per process


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for other stores and in-memory ones)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_reachable(uri: str, from_env: bool | None = None) -> None:
    """Raise TrackingError (one line) if the MLflow tracking server at `uri` does not answer within
    REACHABLE_TIMEOUT_S. Any HTTP answer, even an error status, counts as reachable."""
    import ssl
    import urllib.error
    import urllib.request

    from medpipe.errors import TrackingError

    if not is_server(uri):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=REACHABLE_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except (OSError, ValueError) as err:
        why = getattr(err, "reason", None) or err
        if isinstance(why, ssl.SSLError):
            return  # it answered, over TLS this check does not verify (MLflow's own settings do)
        if from_env is None:
            from_env = os.environ.get("MLFLOW_TRACKING_URI", "").rstrip("/") == uri.rstrip("/")
        where = (
            "unset MLFLOW_TRACKING_URI"
            if from_env
            else "set logger.mlflow.tracking_uri=null (tracking_uri=null)"
        )
        raise TrackingError(
            f"MLflow tracking server {uri} is not reachable ({why}); start it "
            f"(make mlflow-server) or {where} to use the local store"
        ) from None


def first_line(err: BaseException) -> str:
    """The gist of an error for one line: for a failed connection its reason ("[Errno 111]
    Connection refused", "Read timed out"), else its first line, cut short."""
    import re

    text = str(err).strip()
    if m := re.search(r"\[Errno -?\d+\][^\"')]*|Read timed out|RemoteDisconnected", text):
        return m.group(0).strip().rstrip(".")
    return text.splitlines()[0][:200] if text else type(err).__name__


def unreachable_error(err: BaseException) -> bool:
    """An error of a request that never reached the server (refused, reset, timed out), as MLflow
    raises it after its retries, rather than one the server answered."""
    text = str(err)
    markers = (
        "Max retries exceeded",
        "Connection refused",
        "Connection aborted",
        "Connection reset",
        "RemoteDisconnected",
        "timeout exception",
        "Read timed out",
        "Failed to establish a new connection",
    )
    if any(m in text for m in markers):
        return True
    try:
        import requests
    except ImportError:
        return False
    return isinstance(err, requests.exceptions.ConnectionError | requests.exceptions.Timeout)


def check_tracking(cfg: Any) -> None:
    """Before a training prepares anything: its MLflow server, if it logs to one, answers."""
    if (cfg.get("trainer") or {}).get("fast_dev_run"):
        return
    store = configured_store(cfg)
    if store is not None:
        check_reachable(store[0])


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Held while a sqlite store is first opened in this process: MLflow creates and migrates its
    schema on first open without a lock, and processes doing it at once corrupt the store
    (`table _alembic_tmp_... already exists`). A no-op for other stores."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=STORE_LOCK_TIMEOUT_S):
        yield


def open_client(uri: str, mark_stale: bool = True) -> Any:
    """An MlflowClient on `uri`, opened safely: a server must answer (TrackingError otherwise); a
    sqlite store is created or migrated under `store_lock`; then runs left RUNNING by processes
    that are gone are marked KILLED (liveness.mark_stale_runs). Once per process and store; MLflow
    caches the store itself, so clients made later (Lightning's logger) share the opened one."""
    from mlflow import MlflowClient

    if uri in _OPENED:
        return _OPENED[uri]
    check_reachable(uri)
    with store_lock(uri):
        client = MlflowClient(uri)
        client._tracking_client.store  # noqa: B018 - builds (creates, migrates) the store
    if mark_stale:
        from medpipe.tracking import liveness

        liveness.mark_stale_runs(client)
    _OPENED[uri] = client
    return client
