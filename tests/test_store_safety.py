"""Runs that are never lost or lie: stale RUNNING runs of dead processes are marked KILLED (and
live ones, here or on another host, are not), a new sqlite store survives writers that start
together, an MLflow server that does not answer is one clear line, and parallel jobs against a
server all land."""

from __future__ import annotations

import calendar
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY, free_port, run_cli


def _client(uri: str):
    """A plain MlflowClient, made under medpipe's store lock: opened while a training creates the
    store, MLflow would run the schema migration a second time."""
    from mlflow import MlflowClient

    from medpipe.tracking.store import store_lock

    with store_lock(uri):
        return MlflowClient(uri)


def _store(root: Path) -> str:
    return f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"NO_ALBUMENTATIONS_UPDATE": "1", **extra})
    return env


def _train(*args: str, env: dict[str, str] | None = None, log: Path | None = None):
    out = log.open("w") if log else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "medpipe.train", *args],
        cwd=REPO,
        env=env or _env(),
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def _runs(uri: str, experiment: str) -> list:
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


# -- stale runs ------------------------------------------------------------------------------------
@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_a_training_killed_mid_run_is_marked_killed_and_resumable_when_compare_opens_the_store(
    tmp_path,
):
    uri = _store(tmp_path)
    proc = _train(
        *TINY,
        "trainer.max_epochs=40",
        "callbacks.model_checkpoint.save_last=true",  # checkpoints/last.ckpt: resumable
        f"paths.root_dir={tmp_path}",
        "experiment_name=stale",
        env=_env(MEDPIPE_HEARTBEAT_S="1"),
        log=tmp_path / "train.log",
    )
    run = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if not Path(uri.removeprefix("sqlite:///")).exists():
                continue
            runs = _runs(uri, "stale")
            if (
                runs
                and runs[0].data.metrics.get("epoch", 0) >= 0
                and any(
                    m.step >= 1
                    for m in _client(uri).get_metric_history(runs[0].info.run_id, "val/loss")
                )
            ):
                run = runs[0]
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert run is not None, (tmp_path / "train.log").read_text()[-3000:]
    assert _client(uri).get_run(run.info.run_id).info.status == "RUNNING"  # the lie, before

    out = run_cli("compare", "experiment=stale", f"paths.root_dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    after = _client(uri).get_run(run.info.run_id)
    assert after.info.status == "KILLED"
    reason = after.data.tags["medpipe.killed_reason"]
    assert f"process {proc.pid} on host" in reason and "is gone" in reason
    step = int(after.data.tags["medpipe.last_epoch"])
    assert step >= 1 and f"last epoch {step + 1} of 40" in reason
    beat = after.data.tags["medpipe.heartbeat"]  # refreshed while it trained; its end time
    beat_s = calendar.timegm(time.strptime(beat, "%Y-%m-%dT%H:%M:%SZ"))
    assert beat_s >= after.info.start_time // 1000  # beats from the start on (1-s resolution)
    assert after.info.end_time == int(beat_s * 1000)
    assert "KILLED (resumable)" in out.stdout
    assert f"resume: python -m medpipe.train resume={run.info.run_id}" in out.stdout


def _fake_run(client, exp_id: str, name: str, tags: dict[str, str]) -> str:
    run = client.create_run(exp_id, run_name=name, tags=tags)
    client.log_metric(run.info.run_id, "val/loss", 0.5, step=0)
    client.log_metric(run.info.run_id, "val/loss", 0.4, step=1)
    return run.info.run_id


def test_only_runs_whose_process_is_gone_are_marked_killed(tmp_path):
    import psutil

    from medpipe.tracking import liveness, store

    uri = _store(tmp_path)
    client = store.open_client(uri)
    exp_id = store.experiment_id(client, "owners", None)
    mine = liveness.process_tags()  # this test process: alive, on this host
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    elsewhere = {**mine, "medpipe.host": "gpu-node-7", "medpipe.machine": "other/1"}
    runs = {
        "alive here": _fake_run(client, exp_id, "alive", mine),
        "sweep parent alive here": _fake_run(
            client, exp_id, "sweep", {**mine, "medpipe.sweep": "true"}
        ),
        "dead here": _fake_run(client, exp_id, "dead", {**mine, "medpipe.pid": str(dead.pid)}),
        "pid reused": _fake_run(  # this pid is alive, but started later than the run's process
            client,
            exp_id,
            "reused",
            {**mine, "medpipe.process_started": f"{psutil.Process().create_time() - 500:.2f}"},
        ),
        "other host, fresh heartbeat": _fake_run(client, exp_id, "fresh", elsewhere),
        "other host, old heartbeat": _fake_run(
            client, exp_id, "old", {**elsewhere, "medpipe.heartbeat": old}
        ),
        "no owner recorded": _fake_run(client, exp_id, "legacy", {}),
    }
    client.set_terminated(runs["no owner recorded"], "RUNNING")

    out = run_cli("compare", "experiment=owners", "sort=val/loss", f"paths.root_dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    status = {what: client.get_run(rid).info.status for what, rid in runs.items()}
    assert status == {
        "alive here": "RUNNING",
        "sweep parent alive here": "RUNNING",
        "dead here": "KILLED",
        "pid reused": "KILLED",
        "other host, fresh heartbeat": "RUNNING",
        "other host, old heartbeat": "KILLED",
        "no owner recorded": "RUNNING",
    }
    old_reason = client.get_run(runs["other host, old heartbeat"]).data.tags
    assert "on host gpu-node-7 sent no heartbeat for 60 min" in old_reason["medpipe.killed_reason"]
    assert "last epoch 2" in old_reason["medpipe.killed_reason"]
    assert old_reason["medpipe.last_epoch"] == "1"
    assert "KILLED" in out.stdout and "(resumable)" not in out.stdout  # no checkpoint kept


# -- many writers ----------------------------------------------------------------------------------
WRITER = """
import sys
from medpipe.tracking import store
client = store.open_client(sys.argv[1])
exp_id = store.experiment_id(client, "together", None)
run = client.create_run(exp_id, run_name=f"writer-{sys.argv[2]}")
for step in range(20):
    client.log_metric(run.info.run_id, "val/loss", 1.0 / (step + 1), step=step)
store.end_run(client, run.info.run_id, "FINISHED")
"""


def test_processes_opening_a_new_sqlite_store_at_once_all_write_their_runs(tmp_path):
    """MLflow alone, three clients creating the same new store at once, corrupts it (its schema
    migration races); medpipe opens it under a file lock."""
    uri = _store(tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, uri, str(i)],
            cwd=REPO,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(3)
    ]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(o[-2000:] for o in outs)
    runs = _runs(uri, "together")
    assert sorted(r.info.run_name for r in runs) == ["writer-0", "writer-1", "writer-2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    client = _client(uri)
    assert all(len(client.get_metric_history(r.info.run_id, "val/loss")) == 20 for r in runs)


@pytest.mark.slow
def test_three_trainings_started_together_on_a_new_sqlite_store_all_finish(tmp_path):
    uri = _store(tmp_path / "shared")
    procs = [
        _train(
            *TINY,
            f"paths.root_dir={tmp_path / f'p{i}'}",
            f"logger.mlflow.tracking_uri={uri}",
            f"logger.mlflow.artifact_location={(tmp_path / 'shared' / 'artifacts').as_uri()}",
            f"seed={i}",
            "experiment_name=together",
            log=tmp_path / f"train{i}.log",
        )
        for i in range(3)
    ]
    codes = [p.wait(timeout=300) for p in procs]
    logs = [(tmp_path / f"train{i}.log").read_text() for i in range(3)]
    assert codes == [0, 0, 0], "\n".join(log[-2000:] for log in logs)
    assert not any("Traceback" in log for log in logs)
    runs = _runs(uri, "together")  # the store opens
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.slow
def test_eight_parallel_jobs_against_a_server_all_finish_under_one_parent(tmp_path, mlflow_server):
    started = time.monotonic()
    out = run_cli(
        "train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=8",
        "seed=0,1,2,3,4,5,6,7",
        *TINY,
        f"paths.root_dir={tmp_path}",
        "experiment_name=load",
        env={"MLFLOW_TRACKING_URI": mlflow_server},
        timeout=900,
    )
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr[-3000:]
    runs = _runs(mlflow_server, "load")
    parents = [r for r in runs if r.data.tags.get("medpipe.sweep") == "true"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(runs) == 9, [r.info.run_name for r in runs]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert sorted(int(c.data.params["seed"]) for c in children) == list(range(8))
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all("test/auroc" in c.data.metrics for c in children)
    print(f"8 jobs against a server: {took:.0f} s")


# -- server faults ---------------------------------------------------------------------------------
def test_an_unreachable_server_at_start_is_one_line_and_nothing_is_prepared(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    out = run_cli(
        "train", *TINY, f"paths.root_dir={tmp_path}", env={"MLFLOW_TRACKING_URI": url}, timeout=120
    )
    took = time.monotonic() - started
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert errors == [
        f"medpipe: error: MLflow tracking server {url} is not reachable ([Errno 111] Connection "
        "refused); start it (make mlflow-server) or unset MLFLOW_TRACKING_URI to use the local "
        "store"
    ], out.stderr
    assert took < 30
    assert not (tmp_path / "data").exists() and not list(tmp_path.rglob("*.ckpt"))
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("*.npy"))


# -- the server going away mid-run ---------------------------------------------------------------
def _start_server(root: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on `port` with its store in `root` (restartable on the same port)."""
    from conftest import start_mlflow_server

    return start_mlflow_server(root, port, "server-artifacts")


def _kill_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _train_until_first_epoch(url: str, tmp_path: Path, env: dict[str, str]):
    """A 3-epoch training logging to `url`; returns (process, run id) once epoch 1 is logged."""
    proc = _train(
        *TINY,
        "trainer.max_epochs=3",
        "data.n_train=1024",
        f"paths.root_dir={tmp_path}",
        "experiment_name=outage",
        env=_env(MLFLOW_TRACKING_URI=url, **env),
        log=tmp_path / "train.log",
    )
    client = _client(url)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        runs = _runs(url, "outage")
        if runs and "val/loss" in runs[0].data.metrics:
            return proc, runs[0].info.run_id, client
        time.sleep(0.5)
    proc.kill()
    pytest.fail("no epoch logged:\n" + (tmp_path / "train.log").read_text()[-3000:])


@pytest.mark.slow
def test_a_server_restarted_mid_run_receives_every_epoch_and_the_run_finishes(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port)
    proc, run_id, client = _train_until_first_epoch(url, tmp_path, {})
    _kill_server(server)
    time.sleep(5)
    server = _start_server(tmp_path, port)  # MLflow's retries wait for it
    try:
        assert proc.wait(timeout=600) == 0
        log = (tmp_path / "train.log").read_text()
        assert "Traceback" not in log and "went away" not in log, log[-3000:]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run_id, "val/loss")] == [0, 1, 2]
        assert "test/auroc" in run.data.metrics
    finally:
        _kill_server(server)


@pytest.mark.slow
def test_a_server_gone_for_good_mid_run_leaves_complete_local_results_and_a_run_marked_later(
    tmp_path,
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port)
    # MLflow's retries shortened so that "for good" comes within the test's patience
    proc, run_id, client = _train_until_first_epoch(
        url, tmp_path, {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    )
    _kill_server(server)
    assert proc.wait(timeout=600) == 0
    log = (tmp_path / "train.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    warnings = [line for line in log.splitlines() if line.startswith("medpipe: warning: MLflow")]
    assert len(warnings) == 2, log[-3000:]
    assert f"MLflow tracking server {url} went away during run {run_id}" in warnings[0]
    assert "is incomplete (left RUNNING there until the next medpipe command" in warnings[1]
    metrics = list(tmp_path.rglob("metrics.json"))
    assert len(metrics) == 1 and (metrics[0].parent / "history.csv").is_file()
    assert (metrics[0].parent / "checkpoints" / "best.ckpt").is_file()

    server = _start_server(tmp_path, port)
    try:
        assert client.get_run(run_id).info.status == "RUNNING"  # as the server last knew it
        out = run_cli("compare", "experiment=outage", env={"MLFLOW_TRACKING_URI": url})
        assert out.returncode == 0, out.stderr[-2000:]
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert "is gone" in run.data.tags["medpipe.killed_reason"]
    finally:
        _kill_server(server)
