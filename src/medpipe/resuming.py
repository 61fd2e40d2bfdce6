"""Continue a run after a crash: `python -m medpipe.train resume=<run id | output folder | last>`.

Every training writes `<output_dir>/checkpoints/last.ckpt` at each epoch boundary (`LastCheckpoint`,
atomically through `AtomicCheckpointIO`), with everything the rest of the run depends on: weights,
optimizer and scheduler, Lightning's loops, the best-checkpoint choice, the history rows, and the
random streams (python, numpy, torch and the on-device augmentation's). A resumed run reads its
saved `config.yaml`, refuses overrides that would change the experiment, re-attaches to the same
MLflow run and trains the remaining epochs; it ends as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from medpipe.errors import ConfigError, MedpipeError

LAST = Path("checkpoints") / "last.ckpt"
OUTPUT_DIR_TAG = "medpipe.output_dir"
OUTPUT_DIR_PARAM = "paths.output_dir"
RESUMED_TAG = "medpipe.resumed"  # how many times the run was resumed
# What a resume may change: how long it trains and where (equality with the uninterrupted run
# holds for the same device and precision), and how progress is shown or logged.
ALLOWED = (
    "trainer.max_epochs",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.strategy",
    "trainer.num_nodes",
    "trainer.precision",
    "callbacks.progress_bar",
    "logger.mlflow.synchronous",
    "data.pin_memory",
)


class CheckpointWriteError(MedpipeError):
    """A checkpoint could not be written (read-only folder, disk full); the previous one is kept."""


# -- writing checkpoints -----------------------------------------------------------------------
def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, flushed to disk, then renamed over
    `path`: a kill or a full disk leaves the previous file intact and no partial one."""
    import io

    import torch

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    buffer = io.BytesIO()  # serialised first: torch's zip writer reports write errors vaguely
    torch.save(obj, buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # the rename itself, durable
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        why = errno.errorcode.get(err.errno or 0, "") if err.errno else ""
        what = err.strerror or str(err)
        raise CheckpointWriteError(
            f"cannot write checkpoint {path}: {what}{f' ({why})' if why else ''}; "
            "nothing half-written is left, the previous checkpoint is kept"
        ) from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's TorchCheckpointIO writing atomically (every checkpoint: best and last);
    reading stays Lightning's (weights-only, as medpipe.training asks)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        atomic_torch_save(checkpoint, path)


def checkpoint_io():
    """Atomic checkpoint writes in a background thread (Lightning's AsyncCheckpointIO): each
    checkpoint's tensors are copied at once, then serialised, written and synced while training
    goes on; the end of fit waits for the last write, and a failed write is raised at the next
    save or there (benchmarks: overhead, the full epoch)."""
    from lightning.pytorch.plugins.io import AsyncCheckpointIO

    return AsyncCheckpointIO(AtomicCheckpointIO())


def check_writable(out_dir: Path) -> None:
    """One line now, rather than a traceback later, for an output folder that cannot be written."""
    try:
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = out_dir / "checkpoints" / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise CheckpointWriteError(
            f"paths.output_dir: cannot write to {out_dir}: {err.strerror or err}"
        ) from None


# -- random streams ------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Python's, numpy's and torch's global random states as plain values and tensors (what
    weights-only loading reads)."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):  # another device count: its streams start afresh
            torch.cuda.set_rng_state_all(state["cuda"])


def augment_state(augment: Any) -> dict[str, Any] | None:
    """The on-device augmentation's stream (medpipe.data.batch_augment.BatchAugment): its
    generator, the block of parameters drawn and how far the batches have read into it."""
    if augment is None or augment._generator is None or augment._drawn_for is None:
        return None
    key = next(k for k, plan in augment._plans.items() if plan is augment._drawn_for)
    return {
        "seed": augment.seed,
        "size": [key[0], key[1]],
        "generator": augment._generator.get_state(),
        "drawn": [d.cpu() for d in augment._drawn],
        "next": augment._next,
    }


def set_augment_state(augment: Any, state: dict[str, Any] | None, device: Any) -> None:
    import torch

    if augment is None or state is None:
        return
    augment.seed = int(state["seed"])  # a fresh stream, then its saved position
    generator = torch.Generator(device=device)
    generator.set_state(state["generator"])
    augment._generator = generator
    augment._drawn = [d.to(device) for d in state["drawn"]]
    augment._drawn_for = augment._plan(int(state["size"][0]), int(state["size"][1]), device)
    augment._next = int(state["next"])


def _compose_of(transform: Any) -> Any:
    """The albumentations Compose inside medpipe's per-sample transform (a closure), if any."""
    for cell in getattr(transform, "__closure__", None) or ():
        obj = cell.cell_contents
        if hasattr(obj, "random_generator") and hasattr(obj, "py_random"):
            return obj
    return None


def transform_state(transform: Any) -> dict[str, Any] | None:
    """The stream of the per-sample transform the DataLoader path applies in this process
    (data.num_workers=0): albumentations' generators, or MonaiTransform's."""
    if transform is None:
        return None
    if hasattr(transform, "_rng"):  # medpipe.data.transforms.MonaiTransform
        rng = transform._rng
        return {"key": transform._key, "numpy": None if rng is None else rng.bit_generator.state}
    compose = _compose_of(transform)
    if compose is None:
        return None
    return {
        "albumentations": [
            [t.random_generator.bit_generator.state, t.py_random.getstate()]
            for t in _seeded(compose)
        ]
    }


def _seeded(compose: Any) -> list[Any]:
    """A Compose and every transform inside it: each holds generators of its own."""
    out = [compose]
    for t in getattr(compose, "transforms", []):
        out += _seeded(t) if hasattr(t, "transforms") else [t]
    return [t for t in out if hasattr(t, "random_generator") and hasattr(t, "py_random")]


def set_transform_state(transform: Any, state: dict[str, Any] | None) -> None:
    import numpy as np

    if transform is None or state is None:
        return
    if hasattr(transform, "_rng"):
        transform._key = state["key"]
        transform._rng = None
        if state["numpy"] is not None:
            transform._rng = np.random.default_rng()
            transform._rng.bit_generator.state = state["numpy"]
        return
    compose = _compose_of(transform)
    if compose is not None:
        for t, (numpy_state, (version, internal, gauss)) in zip(
            _seeded(compose), state["albumentations"], strict=True
        ):
            t.random_generator.bit_generator.state = numpy_state
            t.py_random.setstate((version, tuple(internal), gauss))


def _train_loader(trainer: Any) -> Any:
    loader = getattr(trainer.fit_loop, "_combined_loader", None)
    flat = loader.flattened if loader is not None else []
    return flat[0] if len(flat) == 1 else None


class LastCheckpoint(Callback):
    """Writes last.ckpt when an epoch has completely ended (at the next epoch's start, after
    the epoch's scheduler step and every end-of-epoch hook) and when fitting ends, whatever
    the monitored checkpoint does. Its state holds the random streams, restored at the first
    epoch start after a resume (after Lightning's own re-seeding)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._restore: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "medpipe.LastCheckpoint"

    def __getstate__(self) -> dict[str, Any]:  # ddp_spawn pickles callbacks: not the trainer
        return {k: v for k, v in self.__dict__.items() if k not in ("_trainer", "_datamodule")}

    def state_dict(self) -> dict[str, Any]:
        dm = getattr(self, "_datamodule", None)
        trainer = getattr(self, "_trainer", None)
        loader = _train_loader(trainer) if trainer is not None else None
        generator = getattr(loader, "generator", None)
        return {
            "rng": rng_state(),
            "augment": augment_state(getattr(dm, "batch_augment", None)),
            # the DataLoader path: its shuffling generator, and the per-sample transform's
            # stream when it runs in this process (with worker processes it does not)
            "loader": None if generator is None else generator.get_state(),
            "transform": transform_state(getattr(dm, "train_transform", None))
            if getattr(loader, "num_workers", 1) == 0
            else None,
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        from lightning.pytorch.trainer.states import TrainerFn

        state = (checkpoint.get("callbacks") or {}).get(self.state_key)
        if trainer.state.fn == TrainerFn.FITTING and isinstance(state, dict):
            self._restore = state  # applied at the next epoch start (a test restores none)
            dm = trainer.datamodule
            set_transform_state(getattr(dm, "train_transform", None), state.get("transform"))
            if state.get("loader") is not None and dm is not None:
                # the train DataLoader is made (and its first iterator drawn) before the
                # first epoch starts: its generator gets the saved state as it is made
                make = dm.train_dataloader

                def train_dataloader():
                    loader = make()
                    if getattr(loader, "generator", None) is not None:
                        loader.generator.set_state(state["loader"])
                    dm.train_dataloader = make
                    return loader

                dm.train_dataloader = train_dataloader

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._datamodule, self._trainer = trainer.datamodule, trainer

    def _save(self, trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        self._saving = True
        try:
            trainer.save_checkpoint(self.path)
        finally:
            self._saving = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """At an epoch's start Lightning has already counted the epoch as ready; saved as
        is, a resume would take it for an epoch that ended and skip its batches. Saved here
        as the state after the previous epoch (what a checkpoint at the end of fit holds)."""
        if not getattr(self, "_saving", False):
            return
        fit = checkpoint.get("loops", {}).get("fit_loop", {})
        for part in ("total", "current"):
            progress = fit.get("epoch_progress", {}).get(part)
            if progress:
                progress["ready"] = progress["started"]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._restore is not None:  # resumed: this epoch starts where the saved one did
            set_rng_state(self._restore["rng"])
            dm = trainer.datamodule
            set_augment_state(
                getattr(dm, "batch_augment", None),
                self._restore.get("augment"),
                trainer.strategy.root_device,
            )
            self._restore = None
            return
        if trainer.current_epoch > 0:
            self._save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer)


def last_checkpoint_callback(out_dir: Path) -> LastCheckpoint:
    """The callback writing <out_dir>/checkpoints/last.ckpt at every epoch boundary."""
    return LastCheckpoint(out_dir / LAST)


# -- finding the run to resume -------------------------------------------------------------------
@dataclass
class Resume:
    """What `resume=` resolved to: the run's output folder, its last checkpoint and MLflow run."""

    out_dir: Path
    run_id: str | None = None
    uri: str | None = None
    changed: dict[str, Any] = field(default_factory=dict)  # the accepted overrides that changed

    @property
    def ckpt(self) -> Path:
        return self.out_dir / LAST


def _get(d: Any, dotted: str) -> tuple[bool, Any]:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return False, None
        d = d[part]
    return True, d


def _set(d: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        d = d.setdefault(part, {})
    d[last] = value


def refused_overrides(
    overrides: list[str], composed: dict[str, Any], saved: dict[str, Any], original: list[str]
) -> list[str]:
    """The keys of `overrides` that would change the saved experiment: not in ALLOWED, not given
    to the original run, and with a value (composed) other than the saved one."""
    refused = []
    for arg in overrides:
        key = arg.split("=", 1)[0].lstrip("+~")
        if key == "resume" or key.startswith("hydra.") or key == "hydra":
            continue
        if key in ALLOWED or arg in original:
            continue
        here, new = _get(composed, key)
        there, old = _get(saved, key)
        if here and there and new == old:
            continue
        refused.append(key)
    return list(dict.fromkeys(refused))


def _client(c: dict[str, Any]):
    from medpipe.tracking.store import configured_store

    store = configured_store(c)
    if store is None:
        return None, None
    try:
        from medpipe.tracking.store import open_client
    except ImportError:  # pragma: no cover - older store module
        from mlflow import MlflowClient as open_client
    return open_client(store[0]), store[0]


def _folder_of(run: Any) -> Path | None:
    folder = run.data.tags.get(OUTPUT_DIR_TAG) or run.data.params.get(OUTPUT_DIR_PARAM)
    return Path(folder) if folder else None


def _has_last(folder: Path) -> bool:
    return (folder / LAST).is_file() or any(folder.glob(f"fold*/{LAST}"))


def _still_running(run: Any) -> str | None:
    """Why `run` must not be resumed now (its process still runs), or None."""
    if run.info.status != "RUNNING":
        return None
    try:
        from medpipe.tracking.liveness import gone_reason
    except ImportError:  # pragma: no cover
        return None
    if run.data.tags.get("medpipe.pid") and gone_reason(run.data.tags, run.info.start_time) is None:
        return (
            f"resume: run {run.info.run_id} is still RUNNING in process "
            f"{run.data.tags.get('medpipe.pid')} on {run.data.tags.get('medpipe.host')}"
        )
    return None


def find_target(c: dict[str, Any], target: str) -> tuple[Path, str | None, str | None, bool]:
    """(output folder, run id or None, tracking URI or None, finished) of `resume=<target>`.

    A folder: the folder itself (its run id from run.json when it was tracked). A run id: its
    output folder (param paths.output_dir). `last`: the most recently started run of
    `experiment_name` that did not finish (KILLED, FAILED, or RUNNING with its process gone), is
    not one fold of a cross-validation, and whose output folder still holds a last checkpoint."""
    import json

    path = Path(target).expanduser()
    if target != "last" and path.is_dir():
        info = path / "run.json"
        run_id = uri = None
        if info.is_file():
            saved = json.loads(info.read_text())
            run_id, uri = saved.get("run_id"), saved.get("tracking_uri")
        finished = (path / "metrics.json").is_file()
        if run_id and uri:
            with contextlib.suppress(Exception):
                from mlflow import MlflowClient

                finished = MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
        return path.resolve(), run_id, uri, finished
    from medpipe.tracking.store import configured_store

    store = configured_store(c)
    if store is not None and store[0].startswith("sqlite:///"):
        db = Path(store[0].removeprefix("sqlite:///"))
        if not db.is_file():  # no store, no run: say so without creating one
            raise ConfigError(
                f"resume: {target!r} is not an output folder, and there is no MLflow store at {db}"
            )
    client, uri = _client(c)
    if client is None:
        raise ConfigError(
            f"resume: {target!r} is not an output folder, and without MLflow (logger) "
            "runs can only be resumed by folder"
        )
    from mlflow.exceptions import MlflowException

    if target == "last":
        exp = client.get_experiment_by_name(str(c["experiment_name"]))
        runs = []
        if exp is not None:
            runs = client.search_runs(
                [exp.experiment_id],
                filter_string="attributes.status != 'FINISHED'",
                order_by=["attributes.start_time DESC"],
                max_results=200,
            )
        for run in runs:
            folder = _folder_of(run)
            if (
                "cv.fold" in run.data.tags
                or run.data.tags.get("medpipe.sweep")
                or folder is None
                or not _has_last(folder)
                or _still_running(run)
            ):
                continue
            return folder, run.info.run_id, uri, False
        raise ConfigError(
            f"resume=last: no unfinished run with a last checkpoint in experiment "
            f"'{c['experiment_name']}' of {uri}"
        )
    try:
        run = client.get_run(target)
    except MlflowException:
        raise ConfigError(
            f"resume: {target!r} is neither an output folder nor a run in {uri}"
        ) from None
    if problem := _still_running(run):
        raise ConfigError(problem)
    folder = _folder_of(run)
    if folder is None:
        raise ConfigError(f"resume: run {target} records no output folder (not a medpipe training)")
    return folder, run.info.run_id, uri, run.info.status == "FINISHED"


def resume_config(c: dict[str, Any], overrides: list[str]) -> tuple[dict[str, Any], Resume]:
    """The saved config of the run `c["resume"]` names, with the allowed overrides of this
    command applied, and where to resume it. ConfigError (one line) for a run or folder that
    cannot be resumed, or overrides that would change the experiment."""
    import yaml

    folder, run_id, uri, finished = find_target(c, str(c["resume"]))
    config_file = folder / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"resume: {folder} has no config.yaml (not a medpipe output folder)")
    saved = yaml.safe_load(config_file.read_text())
    if "fold" in (saved.get("cv") or {}):
        raise ConfigError(
            f"resume: {run_id or folder} is fold {saved['cv']['fold']} of a cross-validation; "
            f"resume the whole cross-validation: resume={folder.parent}"
        )
    cv = int((saved.get("cv") or {}).get("folds") or 0) >= 2
    if not cv and not (folder / LAST).is_file():
        raise ConfigError(
            f"resume: {folder / LAST} does not exist (the run ended before its first epoch did, "
            "or the file was deleted); start the run again"
        )
    original: list[str] = []
    with contextlib.suppress(Exception):
        original = list(yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()) or [])
    if refused := refused_overrides(overrides, c, saved, original):
        raise ConfigError(
            f"resume: {', '.join(refused)}: would change the experiment of the resumed run "
            f"(it keeps its saved {config_file}); a resume may change only {', '.join(ALLOWED)}"
        )
    changed = {}
    for arg in overrides:
        key = arg.split("=", 1)[0].lstrip("+~")
        if key in ALLOWED:
            found, value = _get(c, key)
            if found and _get(saved, key) != (True, value):
                _set(saved, key, value)
                changed[key] = value
    if finished and "trainer.max_epochs" not in changed:
        raise ConfigError(
            f"resume: {run_id or folder} has FINISHED its {saved['trainer']['max_epochs']} "
            "epochs; to train on, raise trainer.max_epochs"
        )
    data = saved.get("data") or {}
    if (saved.get("augmentation") or {}).get("train") and int(data.get("num_workers") or 0) > 0:
        print(  # their streams live in the worker processes, which died with the run
            "note: resume: data.num_workers > 0: the augmentation of the remaining epochs will "
            "differ from an uninterrupted run's (use data.num_workers=0 for an exact repeat)"
        )
    saved.pop("resume", None)
    return saved, Resume(folder, run_id, uri, changed)


# -- the MLflow side ---------------------------------------------------------------------------
def logged_steps(client: Any, run_id: str) -> dict[str, set[int]]:
    """The steps each metric of the run was logged at (what a resumed run must not log again)."""
    run = client.get_run(run_id)
    return {
        key: {int(m.step) for m in client.get_metric_history(run_id, key)}
        for key in run.data.metrics
    }


def reattach(resume: Resume, synchronous: bool):
    """The run `resume.run_id`, RUNNING again, whose logger and metrics skip (key, step) pairs
    logged before the crash: the resumed epochs repeat them exactly, so history stays one value
    per epoch."""
    from medpipe.tracking.mlflow_run import EpochStepMLFlowLogger, MlflowRun

    class ResumedLogger(EpochStepMLFlowLogger):
        skip: dict[str, set[int]] = {}

        def log_metrics(self, metrics, step=None):
            metrics = dict(metrics)
            epoch = metrics.get("epoch")
            at = int(epoch) if epoch is not None else step
            kept = {
                k: v for k, v in metrics.items() if k == "epoch" or at not in self.skip.get(k, ())
            }
            if any(k != "epoch" for k in kept):
                super().log_metrics(kept, step)

    class ResumedRun(MlflowRun):
        def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
            skip = self.logger.skip
            kept = {k: v for k, v in metrics.items() if step not in skip.get(k, ())}
            if kept:
                super().log_metrics(kept, step)

    run = ResumedRun.resume(resume.uri, resume.run_id, synchronous, logger_cls=ResumedLogger)
    run.logger.skip = logged_steps(run.client, run.run_id)
    previous = run.client.get_run(run.run_id).data.tags.get(RESUMED_TAG, "0")
    tags = {RESUMED_TAG: str(int(previous) + 1 if previous.isdigit() else 1)}
    tags.update({f"resume.{k}": str(v) for k, v in resume.changed.items()})
    run.set_tags(tags)
    return run


def fill_gaps(run: Any, rows: list[dict[str, float]]) -> None:
    """Epoch metrics the crash kept from MLflow (asynchronous logging not yet delivered), logged
    from the history rows the checkpoint carried (`rows`; row epoch e is step e - 1)."""
    import time

    from mlflow.entities import Metric

    skip = run.logger.skip
    stamp = int(time.time() * 1000)
    items = [
        Metric(k, float(v), stamp, int(row["epoch"]) - 1)
        for row in rows
        for k, v in row.items()
        if k in skip and int(row["epoch"]) - 1 not in skip[k]
    ]
    for i in range(0, len(items), 1000):
        run.client.log_batch(run.run_id, metrics=items[i : i + 1000])
