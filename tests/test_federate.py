"""Federated learning (python -m medpipe.federate): partitions, config errors, the Flower
processes medpipe starts and stops, a federation end to end, and a client killed mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from medpipe.errors import ConfigError
from medpipe.federated.partition import describe, partition

from conftest import REPO, TINY, compose_config, evaluate_cli, run_cli

FAST_FL = [*TINY, "fl.connect_timeout=120"]


def mlflow_runs(root: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("medpipe")
    return client, client.search_runs([exp.experiment_id])


def flower_processes() -> list[psutil.Process]:
    """Flower processes started from this checkout's environment (ours, not other users')."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(Path(sys.executable).parent) in cmd and ("flower-" in cmd or "flwr" in cmd):
            found.append(p)
    return found


# -- partitions ------------------------------------------------------------------------------------
def test_iid_partition_is_disjoint_equal_and_covers_everything():
    labels = np.repeat([0, 1, 2], [50, 30, 21])
    parts = partition(labels, 4, "iid", seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(101))
    assert sorted(len(p) for p in parts) == [25, 25, 25, 26]
    again = partition(labels, 4, "iid", seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_dirichlet_partition_is_seeded_skewed_and_leaves_no_client_empty():
    labels = np.repeat([0, 1], [400, 400])
    parts = partition(labels, 4, "dirichlet", alpha=0.1, seed=0, min_size=5)
    assert sorted(np.concatenate(parts).tolist()) == list(range(800))
    assert min(len(p) for p in parts) >= 5
    shares = [d["class_counts"]["0"] / d["size"] for d in describe(parts, labels)]
    assert max(shares) - min(shares) > 0.3  # alpha 0.1: clients far from the 50/50 pool
    iid = [
        d["class_counts"]["0"] / d["size"] for d in describe(partition(labels, 4, "iid"), labels)
    ]
    assert max(iid) - min(iid) < 0.2
    again = partition(labels, 4, "dirichlet", alpha=0.1, seed=0, min_size=5)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_more_clients_than_samples_is_an_error_naming_fl_clients():
    with pytest.raises(ConfigError, match="fl.clients: 5 clients need at least 5"):
        partition(np.zeros(4), 5, "iid")


def test_config_errors_are_one_line_each_naming_the_key(tmp_path):
    out = run_cli(
        "federate",
        "fl.clients=0",
        "fl.partition=bad",
        "fl.strategy=fedsgd",
        f"paths.root_dir={tmp_path}",
        timeout=120,
    )
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("medpipe: error:")]
    assert any(line.startswith("medpipe: error: fl.clients:") for line in lines), out.stderr
    assert any(line.startswith("medpipe: error: fl.partition:") and "iid" in line for line in lines)
    assert any(line.startswith("medpipe: error: fl.strategy:") for line in lines)
    out = run_cli(
        "federate",
        "fl.clients=2",
        "fl.min_available_clients=3",
        "fl.rounds=1",
        f"paths.root_dir={tmp_path}",
        timeout=120,
    )
    assert out.returncode == 2
    assert "fl.min_available_clients: 3 is more than fl.clients=2" in out.stderr
    out = run_cli("federate", "fl.client=2", f"paths.root_dir={tmp_path}", timeout=120)
    assert out.returncode == 2 and "fl.client: unknown key" in out.stderr
    assert not (tmp_path / "logs" / "mlflow").exists()  # nothing tracked, nothing started


def test_the_federate_config_is_the_train_config_plus_fl_and_validates(tmp_path):
    from medpipe.config import validate

    cfg = compose_config(
        tmp_path, ["experiment=pneumonia_cnn", "fl.partition=dirichlet"], "federate"
    )
    c = validate(cfg, "federate")
    assert c["task_name"] == "federate" and c["model"]["name"] == "cnn"  # the train groups
    assert c["fl"]["clients"] == 4 and c["fl"]["partition"] == "dirichlet"
    with pytest.raises(ConfigError, match="cv.folds: cross-validation is not run federated"):
        validate(compose_config(tmp_path, ["cv.folds=3"], "federate"), "federate")


def test_help_says_what_it_does_lists_the_fl_keys_and_examples():
    out = run_cli("federate", "--help", timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("medpipe.federate: federated training with Flower")
    assert "Usage: python -m medpipe.federate" in out.stdout
    assert "fl.clients=4 fl.rounds=10 fl.local_epochs=1" in out.stdout  # the defaults, resolved
    examples = lines.index("== Examples ==")
    assert lines[examples + 1].startswith("  python -m medpipe.federate")
    assert "--hydra-help" in lines[-1] or "--hydra-help" in lines[-2]
    assert set(re.findall(r"\$[A-Z_]+", out.stdout)) <= {"$MLFLOW_TRACKING_URI"}


# -- the processes ---------------------------------------------------------------------------------
def test_the_generated_flower_app_is_valid_and_names_medpipes_apps(tmp_path):
    from flwr.cli.config_utils import load_and_validate

    from medpipe.federated.processes import app_pyproject

    (tmp_path / "pyproject.toml").write_text(app_pyproject(tmp_path / "job.json"))
    config, _ = load_and_validate(tmp_path / "pyproject.toml", check_module=False)
    components = config["tool"]["flwr"]["app"]["components"]
    assert components == {
        "serverapp": "medpipe.federated.server_app:app",
        "clientapp": "medpipe.federated.client_app:app",
    }
    assert config["tool"]["flwr"]["app"]["config"]["job"] == str(tmp_path / "job.json")


def test_federation_processes_start_and_all_stop_even_on_an_error(tmp_path):
    """A SuperLink and two SuperNodes start and connect; leaving the block on an error stops
    every one of them and everything Flower started below them (no orphans)."""
    from medpipe.federated.processes import PROCESSES_FILE, Federation

    before = {p.pid for p in flower_processes()}
    pids: list[int] = []
    with (
        pytest.raises(RuntimeError, match="boom"),
        Federation(tmp_path / "flower", tmp_path / "job.json", clients=2) as fed,
    ):
        state = json.loads((fed.dir / PROCESSES_FILE).read_text())
        assert set(state["supernodes"]) == {"0", "1"} and state["superlink"]
        deadline = time.monotonic() + 60
        while "SuperNode" not in (fed.dir / "supernode1.log").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.5)
        time.sleep(2)  # their SuperExec children are up too
        pids = [p.pid for p in flower_processes() if p.pid not in before]
        assert len(pids) >= 3
        raise RuntimeError("boom")
    assert pids
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not (tmp_path / "flower" / PROCESSES_FILE).exists()


# -- end to end -------------------------------------------------------------------------------------
@pytest.mark.slow  # about 2 minutes on 2 shared cores: 3 Flower processes, 4 client trainings
def test_two_clients_two_rounds_one_parent_run_and_a_child_run_per_client(tmp_path):
    before = {p.pid for p in flower_processes()}
    out = run_cli(
        "federate",
        *FAST_FL,
        "fl.clients=2",
        "fl.rounds=2",
        f"paths.root_dir={tmp_path}",
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "medpipe: round 2/2: 2/2 clients answered" in out.stdout
    client, runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["medpipe.federated"] == "true"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["fl.client"] for r in children) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in children)
    for key in ("val/auroc", "val/acc", "fl/clients_replied"):
        assert [m.step for m in client.get_metric_history(parent.info.run_id, key)] == [1, 2]
    assert "test/auroc_ci_low" in parent.data.metrics and "test/acc" in parent.data.metrics
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        assert steps == [1, 2]
    assert parent.data.tags["fl.lost_clients"] == "none"
    out_dir = Path(out.stdout.split("outputs: ")[-1].split()[0])
    shards = json.loads((out_dir / "partition.json").read_text())["clients"]
    assert sum(s["size"] for s in shards) == 256
    assert (out_dir / "checkpoints" / "final.ckpt").is_file()
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"partition.json", "history.csv", "metrics.json", "checkpoints"} <= artifacts
    # the final global model is a medpipe checkpoint: medpipe.evaluate reads it, same numbers
    again = evaluate_cli(out_dir / "checkpoints" / "final.ckpt", tmp_path)
    assert again["test/auroc"] == pytest.approx(parent.data.metrics["test/auroc"], abs=1e-6)
    assert not [p for p in flower_processes() if p.pid not in before]  # every process stopped


@pytest.mark.slow  # about 3-4 minutes: round 2 waits for Flower to declare the dead node gone
def test_a_killed_client_does_not_stop_the_federation_and_is_recorded(tmp_path):
    """Three clients; after round 1 the test kills client 2's SuperNode (and what runs below it)
    with SIGKILL, as a machine that dies. The federation finishes every round with the two
    others; client 2's run ends FAILED and says so; the parent records who answered."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medpipe.federate",
            *FAST_FL,
            "fl.clients=3",
            "fl.rounds=3",
            f"paths.root_dir={tmp_path}",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    killed = False
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Flower SuperLink on"):
                state_file = Path(line.split("logs in ")[-1].strip()) / "processes.json"
            if line.startswith("medpipe: round 1/3") and not killed:
                pid = json.loads(state_file.read_text())["supernodes"]["2"]
                node = psutil.Process(pid)
                for p in [node, *node.children(recursive=True)]:
                    p.send_signal(signal.SIGKILL)
                killed = True
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines)
    assert killed, text[-3000:]
    assert proc.returncode == 0, text[-3000:]
    assert "medpipe: round 3/3: 2/3 clients answered (no answer from client 2)" in text
    assert "clients that stopped answering: client 2" in text
    client, runs = mlflow_runs(tmp_path)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FINISHED"
    replied = client.get_metric_history(parent.info.run_id, "fl/clients_replied")
    assert [(m.step, m.value) for m in replied] == [(1, 3.0), (2, 2.0), (3, 2.0)]
    assert parent.data.tags["fl.lost_clients"] == "2"
    children = {r.data.tags["fl.client"]: r for r in runs if "fl.client" in r.data.tags}
    assert children["2"].info.status == "FAILED"
    assert "no answer after round 1 of 3" in children["2"].data.tags["fl.client_state"]
    assert children["0"].info.status == children["1"].info.status == "FINISHED"
    dead = client.get_metric_history(children["2"].info.run_id, "fl/replied")
    assert [(m.step, m.value) for m in dead] == [(1, 1.0), (2, 0.0), (3, 0.0)]


@pytest.mark.slow  # about 1 minute: one round, then Ctrl-C
@pytest.mark.xfail(
    strict=False,
    reason="known bug, open: in one slow-suite run on a loaded 2-core machine the SIGINT sent after "
    "round 1 did not stop the federation (all 5 rounds ran); passes alone",
)
def test_ctrl_c_stops_every_flower_process_and_ends_the_runs_killed(tmp_path):
    before = {p.pid for p in flower_processes()}
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medpipe.federate",
            *FAST_FL,
            "fl.clients=2",
            "fl.rounds=5",
            f"paths.root_dir={tmp_path}",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("medpipe: round 1/5"):
                proc.send_signal(signal.SIGINT)  # what Ctrl-C on the terminal sends it
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines)
    # stopped early (a round already under way may still report, on a loaded machine)
    assert proc.returncode != 0 and "medpipe: round 5/5" not in text, text[-3000:]
    left = [p for p in flower_processes() if p.pid not in before]
    deadline = time.monotonic() + 15  # processes being reaped as the command exits
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [p for p in flower_processes() if p.pid not in before]
    assert not left, [p.info["cmdline"] for p in left]  # nothing left behind
    _, runs = mlflow_runs(tmp_path)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"KILLED"}
