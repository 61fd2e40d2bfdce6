"""Which RUNNING runs are really running: every training run (and sweep parent) records the host
and process that own it and a heartbeat; a run whose process is gone is marked KILLED, with the
reason and its last epoch, the next time medpipe opens the store (`mark_stale_runs`).

A run on this machine is judged by its process: the pid must exist and have started when the run's
process did (pids are reused). A run on another machine (or in another container) is judged only by
its heartbeat: it is stale after MEDPIPE_STALE_AFTER_S seconds without one (default 600), which is
far longer than the heartbeat period MEDPIPE_HEARTBEAT_S (default 30). Runs without these tags
(created before medpipe recorded them, or by other tools) are never touched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HOST_TAG = "medpipe.host"
PID_TAG = "medpipe.pid"
PROCESS_STARTED_TAG = "medpipe.process_started"  # the process's start time, epoch seconds
MACHINE_TAG = "medpipe.machine"  # kernel boot id and pid namespace: the same host, same pids
HEARTBEAT_TAG = "medpipe.heartbeat"  # UTC, ISO 8601, refreshed every HEARTBEAT_S
KILLED_REASON_TAG = "medpipe.killed_reason"
LAST_EPOCH_TAG = "medpipe.last_epoch"  # the step (epoch) of the last logged epoch metric
OUTPUT_DIR_PARAM = "paths.output_dir"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"

HEARTBEAT_ENV = "MEDPIPE_HEARTBEAT_S"
STALE_AFTER_ENV = "MEDPIPE_STALE_AFTER_S"
DEFAULT_HEARTBEAT_S = 30.0
DEFAULT_STALE_AFTER_S = 600.0


def _seconds(env: str, default: float) -> float:
    try:
        value = float(os.environ.get(env, default))
    except ValueError:
        return default
    return value if value > 0 else default


def heartbeat_s() -> float:
    return _seconds(HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S)


def stale_after_s() -> float:
    return _seconds(STALE_AFTER_ENV, DEFAULT_STALE_AFTER_S)


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_utc(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return (
            dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=dt.timezone.utc)
            .timestamp()
        )
    except ValueError:
        return None


def _machine() -> str:
    """This kernel's boot id and this process's pid namespace: equal on both sides means a pid
    seen here is the same pid the run recorded (a reboot or another container changes it)."""
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    ns = ""
    with contextlib.suppress(OSError):
        ns = str(os.stat("/proc/self/ns/pid").st_ino)
    return f"{boot}/{ns}"


def _started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError, ValueError):
        return None


def process_tags() -> dict[str, str]:
    """The tags that name this process as the owner of a run, with a first heartbeat."""
    pid = os.getpid()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        PROCESS_STARTED_TAG: f"{_started(pid) or 0.0:.2f}",
        MACHINE_TAG: _machine(),
        HEARTBEAT_TAG: utc_now(),
    }


# -- the heartbeat ---------------------------------------------------------------------------------
class Heartbeat:
    """A daemon thread refreshing a run's heartbeat tag every `period` seconds. Failures (a server
    away, a locked database) are ignored: the next beat tries again; training never waits for it."""

    def __init__(self, client: Any, run_id: str, period: float | None = None):
        self.client, self.run_id = client, run_id
        self.period = period or heartbeat_s()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"medpipe-heartbeat-{run_id[:8]}", daemon=True
        )

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.client.set_tag(self.run_id, HEARTBEAT_TAG, utc_now())
            except Exception as err:  # noqa: BLE001 - a missed beat is harmless
                log.debug("heartbeat of run %s not recorded: %s", self.run_id, err)

    def stop(self) -> None:
        self._stop.set()


_BEATING: dict[str, Heartbeat] = {}
_LOCK = threading.Lock()


def start(client: Any, run_id: str) -> None:
    """Record this process as the owner of `run_id` and keep its heartbeat until `stop(run_id)`
    (store.end_run calls it). Never raises: a run without these tags is only never marked stale."""
    try:
        tags = process_tags()
        from mlflow.entities import RunTag

        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    except Exception as err:  # noqa: BLE001
        log.warning("could not record the owner of run %s: %s", run_id, err)
        return
    with _LOCK:
        if run_id in _BEATING:
            _BEATING.pop(run_id).stop()
        _BEATING[run_id] = Heartbeat(client, run_id).start()


def stop(run_id: str) -> None:
    with _LOCK:
        beat = _BEATING.pop(run_id, None)
    if beat is not None:
        beat.stop()


# -- stale runs ------------------------------------------------------------------------------------
def gone_reason(
    tags: dict[str, str], start_ms: int | None = None, now: float | None = None
) -> str | None:
    """Why the process owning a RUNNING run with these tags is gone, or None if it may be alive
    (or the run has no owner tags)."""
    host, pid_text = tags.get(HOST_TAG), tags.get(PID_TAG)
    if not host or not pid_text:
        return None
    try:
        pid = int(pid_text)
    except ValueError:
        return None
    if host == socket.gethostname() and tags.get(MACHINE_TAG) == _machine():
        started = _started(pid)
        try:
            recorded = float(tags.get(PROCESS_STARTED_TAG) or "nan")
        except ValueError:
            recorded = float("nan")
        if started is not None and not abs(started - recorded) > 1.0:
            return None  # the same process (a NaN record counts as the same: never guess)
        return f"process {pid} on host {host} is gone"
    now = time.time() if now is None else now
    beat = _parse_utc(tags.get(HEARTBEAT_TAG))
    if beat is None and start_ms:
        beat = start_ms / 1000
    if beat is None:
        return None
    age = now - beat
    if age <= stale_after_s():
        return None
    return (
        f"process {pid} on host {host} sent no heartbeat for {age / 60:.0f} min "
        f"(last {tags.get(HEARTBEAT_TAG) or 'never'}; limit {stale_after_s() / 60:.0f} min)"
    )


def last_epoch(client: Any, run: Any) -> int | None:
    """The step of the last epoch the run logged (steps are epochs): its monitor's history, else
    that of its first val/ or train/ metric."""
    metrics = run.data.metrics
    monitor = run.data.params.get("monitor")
    keys = [monitor] if monitor in metrics else []
    keys += sorted(k for k in metrics if k.startswith(("val/", "train/")))
    for key in keys:
        history = client.get_metric_history(run.info.run_id, key)
        if history:
            return max(int(m.step) for m in history)
    return None


def epoch_text(step: int | None, max_epochs: str | None) -> str:
    if step is None:
        return "no epoch logged"
    total = f" of {max_epochs}" if max_epochs not in (None, "", "None") else ""
    return f"last epoch {step + 1}{total} (metric step {step})"


def mark_stale_runs(client: Any) -> list[str]:
    """Mark KILLED every RUNNING run whose owning process is gone (`gone_reason`), with tags
    medpipe.killed_reason and medpipe.last_epoch, ended at its last heartbeat. Returns their ids.
    Never raises: a store that cannot be searched is only not cleaned up."""
    marked: list[str] = []
    try:
        exp_ids = [e.experiment_id for e in client.search_experiments(max_results=50000)]
        runs: list[Any] = []
        for i in range(0, len(exp_ids), 100):
            token = None
            while True:
                page = client.search_runs(
                    exp_ids[i : i + 100],
                    filter_string="attributes.status = 'RUNNING'",
                    max_results=1000,
                    page_token=token,
                )
                runs.extend(page)
                token = page.token
                if not token:
                    break
    except Exception as err:  # noqa: BLE001
        log.debug("stale runs not checked: %s", err)
        return marked
    for run in runs:
        try:
            reason = gone_reason(run.data.tags, run.info.start_time)
            if reason is None:
                continue
            step = last_epoch(client, run)
            reason = f"{reason}; {epoch_text(step, run.data.params.get('trainer.max_epochs'))}"
            from mlflow.entities import RunTag

            tags = [RunTag(KILLED_REASON_TAG, reason)]
            if step is not None:
                tags.append(RunTag(LAST_EPOCH_TAG, str(step)))
            client.log_batch(run.info.run_id, tags=tags)
            beat = _parse_utc(run.data.tags.get(HEARTBEAT_TAG))
            end_ms = int((beat or time.time()) * 1000)
            client.set_terminated(run.info.run_id, "KILLED", end_time=end_ms)
            marked.append(run.info.run_id)
            print(
                f"medpipe: note: MLflow run {run.info.run_id} marked KILLED: {reason}",
                file=sys.stderr,
            )
        except Exception as err:  # noqa: BLE001
            log.debug("run %s not marked: %s", run.info.run_id, err)
    return marked


def resumable(run: Any) -> bool:
    """A KILLED run whose output folder still holds the last checkpoint."""
    if run.info.status != "KILLED":
        return False
    folder = run.data.tags.get("medpipe.output_dir") or run.data.params.get(OUTPUT_DIR_PARAM)
    if not folder:
        return False
    folder = Path(folder)  # a cross-validation's parent: the fold it died in
    return (folder / LAST_CHECKPOINT).is_file() or any(folder.glob(f"fold*/{LAST_CHECKPOINT}"))


def status_text(run: Any) -> str:
    """A run's status for listings: KILLED runs that can be continued say so."""
    status = run.info.status
    return f"{status} (resumable)" if resumable(run) else status


def killed_note(run: Any) -> str | None:
    """For a KILLED run: why (medpipe.killed_reason) and, if resumable, the command."""
    if run.info.status != "KILLED":
        return None
    why = run.data.tags.get(KILLED_REASON_TAG)
    text = f"run {run.info.run_id[:8]} ({run.info.run_name}) KILLED"
    if why:
        text += f": {why}"
    if resumable(run):
        text += f"; resume: python -m medpipe.train resume={run.info.run_id}"
    return text
