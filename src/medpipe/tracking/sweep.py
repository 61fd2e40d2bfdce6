"""One MLflow parent run per Hydra multirun: every job's run is nested under it, and at the end it
holds a summary table of its children sorted by the optimised metric (with the `test/*` keys of
the children's main metrics, tag `medpipe.main_metrics`) and the id of the best one.

Registered as a Hydra callback in conf/hydra/default.yaml. Jobs find the parent through the
environment variable MEDPIPE_SWEEP_PARENT_RUN_ID, which local, joblib and SLURM jobs all inherit.
"""

from __future__ import annotations

import atexit
import csv
import io
import math
import os
import sys
import time
from collections import Counter
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# PARENT_ENV lives in the light store module (record_failed_job reads it too).
from medpipe.tracking.store import (
    MAIN_METRICS_TAG,
    PARENT_ENV,
    configured_store,
    end_run,
    experiment_id,
)


def multirun_ddp_problem(trainer: dict[str, Any], launcher_target: str) -> str | None:
    """Why `trainer` cannot run inside this multirun, or None.

    Lightning's `ddp` relaunches the script's command line once per extra device, so inside a
    multirun every rank would run the whole sweep. ddp_spawn, SLURM (submitit: one task per rank)
    and single-device runs are fine.
    """
    strategy = str(trainer.get("strategy", "auto"))
    devices = trainer.get("devices", 1)
    many = (
        (isinstance(devices, int) and devices > 1)
        or isinstance(devices, list)
        and len(devices) > 1
        or devices in ("auto", -1, "-1")
        or int(trainer.get("num_nodes", 1) or 1) > 1
    )
    if (
        strategy.startswith("ddp")
        and "spawn" not in strategy
        and many
        and "submitit" not in launcher_target
    ):
        return (
            "trainer.strategy: 'ddp' on several devices cannot run inside a Hydra multirun "
            "(Lightning relaunches the command once per device, so every rank would run the whole "
            "sweep); use trainer=ddp_spawn, hydra/launcher=slurm (one task per rank), or one "
            "process per job (e.g. dvc exp run --queue)"
        )
    return None


def main_test_metrics(runs: list[Any]) -> list[str]:
    """The `test/*` keys of the runs' main metrics (tag MAIN_METRICS_TAG, set by training for its
    task kind), in order of first appearance; runs without the tag add none. The summary shows
    those that some job logged."""
    keys: dict[str, None] = {}
    for run in runs:
        for key in run.data.tags.get(MAIN_METRICS_TAG, "").split(","):
            if key.strip().startswith("test/"):
                keys.setdefault(key.strip(), None)
    return list(keys)


def from_jobs(value: Any, runs: list[Any], param: str) -> str:
    """A config value, or where it is `auto` (each job resolves it, e.g. the monitor from its task
    kind) the value the jobs logged as `param` (the most common one)."""
    if value is not None and str(value) != "auto":
        return str(value)
    counts = Counter(r.data.params[param] for r in runs if param in r.data.params)
    return counts.most_common(1)[0][0] if counts else str(value)


# Set by a resumed sweep (sweep.resume=<parent run id>) for its jobs: JSON {job key: [run id,
# best value]} of the jobs that FINISHED before; such a job returns that value without training.
DONE_ENV = "MEDPIPE_SWEEP_DONE_JOBS"


def job_key(overrides: list[str]) -> str:
    """A job's identity within its sweep: its overrides, sorted, without sweep.resume."""
    return " ".join(sorted(o for o in overrides if not o.startswith("sweep.resume=")))


def finished_job(overrides: list[str]) -> tuple[str, float] | None:
    """(run id, best value) of this job in the sweep being resumed, if it FINISHED before."""
    import json

    done = json.loads(os.environ.get(DONE_ENV) or "{}")
    hit = done.get(job_key(overrides))
    return (str(hit[0]), float(hit[1])) if hit else None


def latest_attempts(children: list[Any]) -> list[Any]:
    """One run per job (its overrides): a FINISHED one if any, else the latest attempt; runs
    left by jobs that an interrupted sweep re-ran are not counted twice."""
    best: dict[str, Any] = {}
    for r in children:
        key = job_key(r.data.tags.get("hydra.overrides", "").split())
        old = best.get(key)
        rank = (r.info.status == "FINISHED", r.info.start_time or 0)
        if old is None or rank > (old.info.status == "FINISHED", old.info.start_time or 0):
            best[key] = r
    return list(best.values())


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self.parent: str | None = None
        self.client = None

    # -- start -----------------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        trainer = OmegaConf.to_container(config.get("trainer") or {}, resolve=False)
        if problem := multirun_ddp_problem(trainer, launcher):  # type: ignore[arg-type]
            print(f"medpipe: error: {problem}", file=sys.stderr)
            sys.exit(2)
        if str(OmegaConf.select(config, "hydra.sweeper.direction", default="")) == "auto":
            print(  # before the parent run exists: a search that cannot start leaves no run
                "medpipe: error: hydra.sweeper.direction: 'auto' (monitor_mode=auto): an Optuna "
                "search needs its direction before the first trial; set monitor and monitor_mode "
                "(e.g. monitor=val/mae monitor_mode=min)",
                file=sys.stderr,
            )
            sys.exit(2)
        tracking = configured_store(config)
        if tracking is None:
            return
        from mlflow import MlflowClient

        from medpipe.paths import project_root
        from medpipe.tracking.provenance import git_info

        uri, artifact_location = tracking
        from medpipe.tracking.store import open_client

        open_client(uri)  # a server that answers (else one line, exit 2); a new store made safely
        self.client = MlflowClient(uri)
        name = str(config.experiment_name)
        exp_id = experiment_id(self.client, name, artifact_location)
        overrides = list(OmegaConf.select(config, "hydra.overrides.task") or [])
        resume = OmegaConf.select(config, "sweep.resume")
        if resume:  # an interrupted sweep: the same parent, only the jobs that did not finish
            self._resume(str(resume), exp_id, name)
            return
        tags = {
            "medpipe.sweep": "true",
            "sweep.overrides": " ".join(overrides) or "(none)",
            "sweep.sweeper": str(OmegaConf.select(config, "hydra.sweeper._target_") or ""),
            "sweep.launcher": launcher,
            "sweep.monitor": str(config.monitor),
            **git_info(project_root()),
        }
        run = self.client.create_run(
            exp_id, run_name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags
        )
        self.parent = run.info.run_id
        self.experiment_id = exp_id
        from medpipe.tracking import liveness

        liveness.start(self.client, self.parent)  # host, pid, heartbeat: never marked stale alive
        os.environ[PARENT_ENV] = self.parent
        atexit.register(self._abandon)
        print(f"MLflow sweep parent run {self.parent} in experiment '{name}'")

    def _resume(self, parent: str, exp_id: str, name: str) -> None:
        """Re-open sweep parent `parent`: RUNNING again, and the FINISHED jobs under it published
        to the jobs (DONE_ENV: their overrides and best value), which skip them."""
        import json

        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(parent)
        except MlflowException:
            print(f"medpipe: error: sweep.resume: no run {parent} in this store", file=sys.stderr)
            sys.exit(2)
        if run.data.tags.get("medpipe.sweep") != "true" or run.info.experiment_id != exp_id:
            print(
                f"medpipe: error: sweep.resume: run {parent} is not a sweep parent of experiment "
                f"'{name}'",
                file=sys.stderr,
            )
            sys.exit(2)
        children = self.client.search_runs(
            [exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", max_results=10000
        )
        monitor = from_jobs(None, children, "monitor")
        done = {
            job_key(r.data.tags.get("hydra.overrides", "").split()): [
                r.info.run_id,
                r.data.metrics.get(f"best/{monitor}", math.nan),
            ]
            for r in children
            if r.info.status == "FINISHED"
        }
        self.client.update_run(parent, status="RUNNING")
        self.parent, self.experiment_id = parent, exp_id
        from medpipe.tracking import liveness

        liveness.start(self.client, parent)
        os.environ[PARENT_ENV] = parent
        os.environ[DONE_ENV] = json.dumps(done)
        atexit.register(self._abandon)
        print(
            f"MLflow sweep parent run {parent} in experiment '{name}' resumed: "
            f"{len(done)} finished jobs kept"
        )

    def _abandon(self) -> None:
        """Interrupted before on_multirun_end: never leave the parent RUNNING."""
        if self.parent and self.client is not None:
            end_run(self.client, self.parent, "KILLED")
            self.parent = None

    # -- end ---------------------------------------------------------------------------------------
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.parent or self.client is None:
            return
        parent, client = self.parent, self.client
        children = latest_attempts(
            client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
                max_results=10000,
            )
        )
        os.environ.pop(DONE_ENV, None)
        monitor = from_jobs(config.get("monitor"), children, "monitor")
        mode = from_jobs(config.get("monitor_mode"), children, "monitor_mode")
        best_key = f"best/{monitor}"

        def score(run) -> float:
            v = run.data.metrics.get(best_key, math.nan)
            return v if run.info.status == "FINISHED" else math.nan

        ok = [r for r in children if not math.isnan(score(r))]

        def job(run) -> int:
            try:
                return int(run.data.tags.get("sweep.job_num", ""))
            except ValueError:
                return 1 << 30

        # Best first; ties go to the earliest job, as Optuna's best_trial does.
        sign = -1.0 if mode == "max" else 1.0
        ok.sort(key=lambda r: (sign * score(r), job(r)))
        failed = [r for r in children if r not in ok]
        split = {r.info.run_id: r.data.tags.get("hydra.overrides", "").split() for r in children}
        common = set.intersection(*(set(v) for v in split.values())) if split else set()
        tested = [
            m for m in main_test_metrics(ok + failed) if any(m in r.data.metrics for r in children)
        ]
        rows = []
        for rank, r in enumerate(ok + failed, 1):
            rows.append(
                {
                    "rank": rank if r in ok else "",
                    "run_id": r.info.run_id,
                    "run_name": r.info.run_name,
                    "status": r.info.status,
                    "overrides": " ".join(o for o in split[r.info.run_id] if o not in common),
                    best_key: r.data.metrics.get(best_key, ""),
                    **{m: r.data.metrics.get(m, "") for m in tested},
                    "error": r.data.tags.get("error", ""),
                }
            )
        client.log_text(parent, _markdown(rows), "sweep_summary.md")
        client.log_text(parent, _csv(rows), "sweep_summary.csv")
        client.set_tag(parent, "sweep.monitor", monitor)  # resolved, where the config said auto
        client.set_tag(parent, "sweep.n_jobs", str(len(children)))
        client.set_tag(parent, "sweep.n_failed", str(len(failed)))
        if ok:
            best = ok[0]
            client.set_tag(parent, "sweep.best_run_id", best.info.run_id)
            client.log_metric(parent, best_key, score(best))
            client.set_tag(best.info.run_id, "sweep.best", "true")
        end_run(client, parent, "FINISHED" if ok else "FAILED")
        self.parent = None
        os.environ.pop(PARENT_ENV, None)
        print(_markdown(rows), end="")
        if ok:
            print(
                f"best: {ok[0].info.run_name} ({ok[0].info.run_id}) {best_key} = {score(ok[0]):.4f}"
            )
        if failed:
            print(
                f"medpipe: error: sweep: {len(failed)} of {len(children)} jobs failed "
                f"(parent run {parent})",
                file=sys.stderr,
            )
            sys.exit(1)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no runs)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]).replace("|", "/") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()
