"""Resume after a crash: `python -m medpipe.train resume=<run id | output folder | last>`
continues a run from its last checkpoint into the same MLflow run and ends as if never
interrupted; what a resume may not change is refused; a checkpoint that cannot be written fails
the run cleanly."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from medpipe.config import validate
from medpipe.errors import ConfigError
from medpipe.resuming import (
    ALLOWED,
    CheckpointWriteError,
    atomic_torch_save,
    refused_overrides,
    resume_config,
)

from conftest import REPO, SMALL_SYNTHETIC, run_cli

TESTS = Path(__file__).resolve().parent
TINY_DATA = ["data.n_train=128", "data.n_val=64", "data.n_test=64", "data.batch_size=64"]
FAST = ["evaluation.explain.enabled=false", "callbacks.progress_bar=none", "log_model=false"]


def _client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}")


def _runs(root: Path):
    client = _client(root)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _steps(root: Path, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in _client(root).get_metric_history(run_id, key))


def _fake_run_folder(folder: Path, make_cfg, last: bool = True) -> Path:
    """An output folder as training leaves it (config.yaml, checkpoints/last.ckpt), untracked."""
    c = validate(make_cfg(*SMALL_SYNTHETIC, "logger=none"))
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(c, sort_keys=False))
    if last:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"")
    return folder


# -- what a resume may change ------------------------------------------------------------------
def test_overrides_that_change_the_experiment_are_refused_naming_the_keys():
    saved = {"optimizer": {"lr": 0.001}, "trainer": {"max_epochs": 6}, "model": {"name": "cnn"}}
    composed = {"optimizer": {"lr": 0.01}, "trainer": {"max_epochs": 9}, "model": {"name": "cnn"}}
    overrides = ["optimizer.lr=0.01", "trainer.max_epochs=9", "model=cnn", "resume=last"]
    assert refused_overrides(overrides, composed, saved, []) == ["optimizer.lr"]
    # the original command's own overrides, repeated, change nothing
    assert refused_overrides(overrides, composed, saved, ["optimizer.lr=0.01"]) == []
    assert "trainer.max_epochs" in ALLOWED and "trainer.accelerator" in ALLOWED


def test_cli_refuses_changing_overrides_in_one_line_with_exit_2(tmp_path, make_cfg):
    folder = _fake_run_folder(tmp_path / "run", make_cfg)
    out = run_cli(
        "train",
        f"paths.root_dir={tmp_path}",
        f"resume={folder}",
        "optimizer.lr=0.5",
        "data.n_train=999",
        "trainer.max_epochs=3",
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "optimizer.lr, data.n_train: would change the experiment" in lines[0]
    assert "trainer.max_epochs" not in lines[0].split(":")[1]  # allowed: not among the refused


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_cli_resume_of_an_unknown_run_or_a_folder_without_last_checkpoint(tmp_path, make_cfg):
    out = run_cli("train", f"paths.root_dir={tmp_path}", "resume=" + "0" * 32)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"medpipe: error: resume: '{'0' * 32}' is not an output folder, and there is no MLflow "
        f"store at {tmp_path / 'logs' / 'mlflow' / 'mlflow.db'}"
    ]
    folder = _fake_run_folder(tmp_path / "run", make_cfg, last=False)
    out = run_cli("train", f"paths.root_dir={tmp_path}", f"resume={folder}")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert "checkpoints/last.ckpt does not exist" in line


# -- resume from a folder, in-process ----------------------------------------------------------
def test_resume_from_a_folder_continues_the_same_run_and_history(tmp_path, make_cfg):
    from medpipe.pipeline import train

    cfg = make_cfg(*TINY_DATA, *FAST, "trainer.max_epochs=2", "test_after_fit=false")
    train(cfg)
    out = tmp_path / "out"
    (run,) = _runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((out / "run.json").read_text())["run_id"] == run.info.run_id

    # a run the store does not hold: one line
    c = validate(make_cfg(*TINY_DATA, "resume=" + "f" * 32))
    with pytest.raises(ConfigError, match="is neither an output folder nor a run in sqlite"):
        resume_config(c, [])
    # a FINISHED run goes on only when asked for more epochs
    c = validate(make_cfg(*TINY_DATA, f"resume={out}"))
    with pytest.raises(ConfigError, match="FINISHED its 2 epochs"):
        resume_config(c, [f"resume={out}"])
    # resume=last: only runs that did not finish
    c = validate(make_cfg(*TINY_DATA, "resume=last"))
    with pytest.raises(ConfigError, match="no unfinished run with a last checkpoint"):
        resume_config(c, ["resume=last"])
    _client(tmp_path).set_terminated(run.info.run_id, "KILLED")
    assert resume_config(c, ["resume=last"])[1].run_id == run.info.run_id

    c = validate(make_cfg(*TINY_DATA, f"resume={out}", "trainer.max_epochs=3"))
    c, resume = resume_config(c, [f"resume={out}", "trainer.max_epochs=3"])
    assert resume.run_id == run.info.run_id and resume.changed == {"trainer.max_epochs": 3}
    train(c, resume=resume)

    (again,) = _runs(tmp_path)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert _steps(tmp_path, run.info.run_id, "val/loss") == [0, 1, 2]
    assert again.data.params["trainer.max_epochs"] == "2"  # params are immutable
    assert again.data.tags["resume.trainer.max_epochs"] == "3"
    assert again.data.tags["medpipe.resumed"] == "1"
    rows = (out / "history.csv").read_text().strip().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2", "3"]


# -- checkpoints are written whole or not at all -----------------------------------------------
def test_a_failed_checkpoint_write_keeps_the_previous_file_and_leaves_no_partial(
    tmp_path, monkeypatch
):
    import builtins

    import torch

    path = tmp_path / "last.ckpt"
    atomic_torch_save({"epoch": 1}, path)
    real_open = builtins.open

    class FullDisk:  # writes half, then the disk is full
        def __init__(self, *args, **kwargs):
            self.f = real_open(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(bytes(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(builtins, "open", FullDisk)
    with pytest.raises(CheckpointWriteError, match=r"No space left on device \(ENOSPC\)"):
        atomic_torch_save({"epoch": 2, "weights": torch.zeros(10000)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_disk_full_while_writing_a_checkpoint_fails_the_run_in_one_line(tmp_path):
    """A file-size limit below the checkpoint's size (EFBIG, as a full disk gives ENOSPC): one
    line, exit non-zero, no checkpoint file at all, the MLflow run FAILED."""
    root = tmp_path
    # the store and the data first, within the limit
    prep = run_cli("prepare", f"paths.root_dir={root}", *SMALL_SYNTHETIC)
    assert prep.returncode == 0, prep.stderr
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    out = subprocess.run(
        [sys.executable, "-m", "medpipe.train", f"paths.root_dir={root}", *SMALL_SYNTHETIC]
        + [*FAST, "trainer.max_epochs=2", "data.n_train=256", f"paths.output_dir={root / 'o'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        preexec_fn=_limit_file_size(3_000_000),  # the CNN's checkpoint: about 8 MB
    )
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("medpipe: error")]
    assert len(errors) == 1, out.stderr[-3000:]
    assert "cannot write checkpoint" in errors[0] and "File too large" in errors[0]
    assert "Traceback" not in out.stderr
    assert not list((root / "o" / "checkpoints").glob("*"))
    (run,) = _runs(root)
    assert run.info.status == "FAILED"


# -- the whole story: SIGKILL mid-epoch, resume, equal to uninterrupted ------------------------
def _train_cmd(root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "medpipe.train",
        f"paths.root_dir={root}",
        "data.n_train=512",
        "data.n_val=128",
        "data.n_test=128",
        "data.batch_size=64",
        "trainer.max_epochs=6",
        "evaluation.bootstrap.n=0",
        *FAST,
        "allowed_targets=[resume_probe]",
        "+callbacks.pause._target_=resume_probe.PauseMidEpoch",
        "+callbacks.pause.epoch=3",
        *(arg for group in extra for arg in group.split()),
    ]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(TESTS), **extra)
    return env


def _metrics(root: Path) -> tuple[Path, dict[str, float]]:
    (folder,) = [p.parent for p in root.glob("logs/runs/train/*/*/metrics.json")]
    return folder, json.loads((folder / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    "aug",
    [
        "augmentation=none",
        "augmentation=light",  # on the device, in whole batches (data.loader=auto: memory)
        "augmentation=light data.loader=workers",  # per sample, albumentations, in this process
    ],
)
def test_killed_mid_epoch_and_resumed_equals_the_uninterrupted_run(tmp_path, aug):
    ref = subprocess.run(
        _train_cmd(tmp_path / "ref", aug), cwd=REPO, env=_env(), capture_output=True, text=True
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    _, expected = _metrics(tmp_path / "ref")

    root, marker = tmp_path / "killed", tmp_path / "paused"
    proc = subprocess.Popen(
        _train_cmd(root, aug),
        cwd=REPO,
        env=_env(RESUME_PROBE_MARKER=str(marker)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the probe never paused the training"
    (folder,) = root.glob("logs/runs/train/*/*")
    history = (folder / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 3  # three epochs done, the fourth in progress
    os.kill(proc.pid, signal.SIGKILL)  # in epoch 4, between two batches
    proc.wait()
    run_id = json.loads((folder / "run.json").read_text())["run_id"]

    out = subprocess.run(
        [*_train_cmd(root, aug), f"resume={run_id}"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    resumed_folder, got = _metrics(root)
    assert resumed_folder == folder

    (run,) = _runs(root)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    for key in ("val/loss", "val/auroc", "train/loss"):
        assert _steps(root, run_id, key) == [0, 1, 2, 3, 4, 5], key
    rows = (folder / "history.csv").read_text().strip().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    tested = [k for k in expected if k.startswith("test/")]
    assert tested
    worst = max(abs(got[k] - expected[k]) for k in tested)
    assert worst <= 1e-6, {k: (got[k], expected[k]) for k in tested}


# -- cross-validation resumes at the fold it died in -------------------------------------------
@pytest.mark.slow
def test_cross_validation_resumes_at_the_fold_it_died_in(tmp_path, make_cfg):
    from medpipe.pipeline import train

    args = [*TINY_DATA, *FAST, "cv.folds=2", "trainer.max_epochs=2", "evaluation.bootstrap.n=0"]
    probe = [
        "allowed_targets=[resume_probe]",
        "+callbacks.keep._target_=resume_probe.KeepLastCheckpoint",
    ]
    train(make_cfg(*args, *probe))
    out = tmp_path / "out"
    expected = json.loads((out / "metrics.json").read_text())
    runs = {r.info.run_id: r for r in _runs(tmp_path)}
    assert len(runs) == 3
    parent_id = json.loads((out / "run.json").read_text())["run_id"]
    fold0_id = json.loads((out / "fold0" / "run.json").read_text())["run_id"]
    fold1_id = json.loads((out / "fold1" / "run.json").read_text())["run_id"]

    # stage a crash in fold 1's second epoch: its checkpoint from that epoch's start, no
    # results of fold 1 or the parent, both runs KILLED
    client = _client(tmp_path)
    ckpts = out / "fold1" / "checkpoints"
    (ckpts / "last.ckpt.keep").replace(ckpts / "last.ckpt")
    for name in ("fold1/metrics.json", "metrics.json", "cv_summary.csv", "cv_summary.md"):
        (out / name).unlink()
    client.set_terminated(fold1_id, "KILLED")
    client.set_terminated(parent_id, "KILLED")
    fold0_end = runs[fold0_id].info.end_time

    c = validate(make_cfg(*args, *probe, f"resume={parent_id}"))
    c, resume = resume_config(c, [f"resume={parent_id}"])
    train(c, resume=resume)

    after = {r.info.run_id: r for r in _runs(tmp_path)}
    assert set(after) == set(runs)  # no new run
    assert {r.info.status for r in after.values()} == {"FINISHED"}
    assert after[fold0_id].info.end_time == fold0_end  # the finished fold was not run again
    assert _steps(tmp_path, fold1_id, "val/loss") == [0, 1]
    got = json.loads((out / "metrics.json").read_text())
    tested = [k for k in expected if k.startswith("test/") and isinstance(expected[k], float)]
    assert max(abs(got[k] - expected[k]) for k in tested) <= 1e-6


# -- an interrupted sweep re-runs only the jobs that did not finish ----------------------------
@pytest.mark.slow
def test_resumed_sweep_reruns_only_unfinished_jobs_under_the_same_parent(tmp_path):
    from conftest import TINY

    sweep = ["-m", "optimizer.lr=1e-3,3e-4", *TINY, f"paths.root_dir={tmp_path}"]
    first = run_cli("train", *sweep, "experiment_name=grid")
    assert first.returncode == 0, first.stderr[-3000:]
    client = _client(tmp_path)
    runs = _runs(tmp_path)
    (parent,) = [r for r in runs if r.data.tags.get("medpipe.sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    # stage an interrupted sweep: the second job and the parent killed
    killed = next(c for c in children if c.data.params["optimizer.lr"] == "0.0003")
    kept = next(c for c in children if c is not killed)
    client.set_terminated(killed.info.run_id, "KILLED")
    client.set_terminated(parent.info.run_id, "KILLED")

    again = run_cli("train", *sweep, "experiment_name=grid", f"sweep.resume={parent.info.run_id}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped") == 1
    runs = _runs(tmp_path)
    assert [r for r in runs if r.data.tags.get("medpipe.sweep") == "true"] == [
        r for r in runs if r.info.run_id == parent.info.run_id
    ]
    after = client.get_run(parent.info.run_id)
    assert after.info.status == "FINISHED" and after.data.tags["sweep.n_failed"] == "0"
    assert after.data.tags["sweep.n_jobs"] == "2"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3  # the killed attempt stays, recorded as such
    assert client.get_run(kept.info.run_id).info.end_time == kept.info.end_time
    summary = client.download_artifacts(parent.info.run_id, "sweep_summary.md")
    rows = [r for r in Path(summary).read_text().splitlines() if r.startswith("| ")][1:]
    assert len(rows) == 2 and all("FINISHED" in r for r in rows)
