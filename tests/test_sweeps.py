"""Sweeps nest their jobs under one MLflow parent run; Optuna searches; DDP on CPU processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY, run_cli


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def _store(root: Path) -> str:
    return f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}"


def _family(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("medpipe.sweep") == "true"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_sweep_nests_four_jobs_under_one_parent_with_a_ranked_summary(tmp_path):
    out = run_cli(
        "train",
        "-m",
        "model=cnn,linear",
        "optimizer.lr=1e-3,3e-4",
        *TINY,
        f"paths.root_dir={tmp_path}",
        "experiment_name=grid",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    client = _client(_store(tmp_path))
    parents, children = _family(client, "grid")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" for c in children)
    combos = {(c.data.params["model.name"], c.data.params["optimizer.lr"]) for c in children}
    assert combos == {
        ("cnn", "0.001"),
        ("cnn", "0.0003"),
        ("linear", "0.001"),
        ("linear", "0.0003"),
    }
    assert "model=cnn,linear" in parent.data.tags["sweep.overrides"]
    top = max(c.data.metrics["best/val/auroc"] for c in children)
    tied = sorted(
        (c for c in children if c.data.metrics["best/val/auroc"] == top),
        key=lambda c: int(c.data.tags["sweep.job_num"]),
    )
    best = tied[0]  # ties go to the earliest job
    assert parent.data.tags["sweep.best_run_id"] == best.info.run_id
    assert [c.info.run_id for c in children if c.data.tags.get("sweep.best") == "true"] == [
        best.info.run_id
    ]
    assert parent.data.metrics["best/val/auroc"] == pytest.approx(top)
    summary = Path(client.download_artifacts(parent.info.run_id, "sweep_summary.md")).read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "run_id" not in line]
    assert len(rows) == 4 and best.info.run_id in rows[0]
    values = [float(r.split("|")[6]) for r in rows]
    assert values == sorted(values, reverse=True)


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_a_failed_job_is_recorded_failed_and_the_sweep_goes_on(tmp_path):
    out = run_cli(
        "train",
        "-m",
        "optimizer.lr=-1,1e-3",
        *TINY,
        f"paths.root_dir={tmp_path}",
        "experiment_name=partly",
    )
    assert out.returncode == 1
    assert "optimizer.lr: Input should be greater than 0 (got -1)" in out.stderr
    assert "sweep: 1 of 2 jobs failed" in out.stderr
    parents, children = _family(_client(_store(tmp_path)), "partly")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    status = {
        c.data.params.get("optimizer.lr", c.data.tags.get("hydra.overrides")): c.info.status
        for c in children
    }
    assert sorted(status.values()) == ["FAILED", "FINISHED"]
    failed = next(c for c in children if c.info.status == "FAILED")
    assert "greater than 0" in failed.data.tags["error"]


REGRESSION_MAIN = "val/mae,val/rmse,val/r2,test/mae,test/rmse,test/r2"


def _summarise(tmp_path: Path, monkeypatch, monitor: str, mode: str, jobs: list[dict]):
    """The sweep callback around child runs made directly with MlflowClient (as training makes
    them: nested under the parent, with a job number); returns (parent run, summary csv rows)."""
    import csv
    import io

    from mlflow.entities import Metric, Param, RunTag
    from omegaconf import OmegaConf

    from medpipe.tracking.store import PARENT_ENV
    from medpipe.tracking.sweep import MlflowSweepCallback

    monkeypatch.delenv(PARENT_ENV, raising=False)  # set by the callback; restored afterwards
    config = OmegaConf.create(
        {
            "experiment_name": "summary",
            "monitor": monitor,
            "monitor_mode": mode,
            "trainer": {"devices": 1},
            "logger": {"mlflow": {"tracking_uri": None, "artifact_location": None}},
            "paths": {"mlflow_dir": str(tmp_path / "logs" / "mlflow")},
            "hydra": {
                "launcher": {"_target_": "hydra._internal.core_plugins.basic_launcher"},
                "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper"},
                "overrides": {"task": ["optimizer.lr=1e-3,3e-4"]},
            },
        }
    )
    callback = MlflowSweepCallback()
    callback.on_multirun_start(config)
    client, parent = callback.client, callback.parent
    for num, job in enumerate(jobs):
        tags = {
            "mlflow.parentRunId": parent,
            "sweep.job_num": str(num),
            "hydra.overrides": f"optimizer.lr={job['lr']}",
        }
        if job.get("main"):
            tags["medpipe.main_metrics"] = job["main"]
        run = client.create_run(callback.experiment_id, run_name=f"job-{num}", tags=tags)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, 0, 0) for k, v in job["metrics"].items()],
            # the resolved objective, as every job logs its whole config
            params=[Param("monitor", job["monitor"]), Param("monitor_mode", job["mode"])],
            tags=[RunTag("model.name", "cnn")],
        )
        client.set_terminated(run.info.run_id, "FINISHED")
    callback.on_multirun_end(config)
    run = client.get_run(parent)
    text = Path(client.download_artifacts(parent, "sweep_summary.csv")).read_text()
    return run, list(csv.DictReader(io.StringIO(text)))


def test_summary_of_regression_jobs_shows_their_main_test_metrics(tmp_path, monkeypatch):
    jobs = [
        {
            "lr": lr,
            "main": REGRESSION_MAIN + ",test/never_logged",  # no job has it: no column
            "monitor": "val/mae",
            "mode": "min",
            "metrics": {
                "best/val/mae": mae,
                "test/mae": mae + 0.1,
                "test/rmse": 2 * mae,
                "test/r2": r2,
            },
        }
        for lr, mae, r2 in (("0.001", 0.5, 0.7), ("0.0003", 0.3, 0.8))
    ]
    # monitor: auto (the default): each job resolved it from its task kind, and logged it
    parent, rows = _summarise(tmp_path, monkeypatch, "auto", "auto", jobs)
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.monitor"] == "val/mae"
    assert list(rows[0]) == [
        "rank",
        "run_id",
        "run_name",
        "status",
        "overrides",
        "best/val/mae",
        "test/mae",
        "test/rmse",
        "test/r2",
        "error",
    ]
    # best (lowest val/mae) first, with its own test metrics
    assert [r["overrides"] for r in rows] == ["optimizer.lr=0.0003", "optimizer.lr=0.001"]
    assert [float(r["test/mae"]) for r in rows] == pytest.approx([0.4, 0.6])
    assert [float(r["test/r2"]) for r in rows] == pytest.approx([0.8, 0.7])
    assert parent.data.metrics["best/val/mae"] == pytest.approx(0.3)
    summary = Path(
        _client(_store(tmp_path)).download_artifacts(parent.info.run_id, "sweep_summary.md")
    ).read_text()
    assert summary.splitlines()[0].startswith("| rank |") and "| test/rmse |" in summary


def test_summary_of_jobs_without_main_metrics_has_no_test_columns(tmp_path, monkeypatch):
    jobs = [
        {"lr": lr, "monitor": "val/auroc", "mode": "max", "metrics": metrics}
        for lr, metrics in (
            ("0.001", {"best/val/auroc": 0.7, "test/auroc": 0.6}),
            ("0.0003", {"best/val/auroc": 0.9, "test/auroc": 0.8}),
        )
    ]
    _, rows = _summarise(tmp_path, monkeypatch, "val/auroc", "max", jobs)
    assert list(rows[0]) == [
        "rank",
        "run_id",
        "run_name",
        "status",
        "overrides",
        "best/val/auroc",
        "error",
    ]
    assert [r["overrides"] for r in rows] == ["optimizer.lr=0.0003", "optimizer.lr=0.001"]


def test_multirun_with_ddp_on_several_devices_is_refused(tmp_path):
    out = run_cli(
        "train", "-m", "trainer=ddp", "optimizer.lr=1e-3,3e-4", f"paths.root_dir={tmp_path}"
    )
    assert out.returncode == 2
    lines = [x for x in out.stderr.splitlines() if x.startswith("medpipe: error:")]
    assert (
        len(lines) == 1 and "trainer=ddp_spawn" in lines[0] and "hydra/launcher=slurm" in lines[0]
    )
    assert not (tmp_path / "logs" / "mlflow").exists()


def test_optuna_search_space_follows_the_hydra_sweeper_syntax():
    import optuna
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.medpipe_optuna_sweeper.optuna_sweeper import Dimension

    parser = OverridesParser.create()
    dims = [
        Dimension(o)
        for o in parser.parse_overrides(
            [
                "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
                "data.batch_size=choice(32, 64)",
                "model.net.hidden=range(128, 513, 128)",
                "augmentation=none,light",
            ]
        )
    ]
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    trial = study.ask()
    values = {d.key: d.suggest(trial) for d in dims}
    assert 1e-4 <= values["optimizer.lr"] <= 1e-2 and dims[0].log
    assert values["data.batch_size"] in (32, 64) and isinstance(values["data.batch_size"], int)
    assert values["model.net.hidden"] in (128, 256, 384, 512)
    assert values["augmentation"] in ("none", "light")


@pytest.mark.slow
def test_optuna_search_of_eight_trials_tags_its_best_trial(tmp_path):
    out = run_cli(
        "train",
        "hparams_search=synthetic_tpe",
        "trainer.max_epochs=2",
        "data.n_train=512",
        "data.n_val=256",
        "data.n_test=256",
        "callbacks.progress_bar=none",
        "log_model=false",
        f"paths.root_dir={tmp_path}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "optuna: 8/8 trials complete" in out.stdout
    parents, children = _family(_client(_store(tmp_path)), "synthetic_tpe")
    assert len(parents) == 1 and len(children) == 8
    assert sorted(int(c.data.tags["optuna.trial"]) for c in children) == list(range(8))
    best = [c for c in children if c.data.tags.get("sweep.best") == "true"]
    assert len(best) == 1 and parents[0].data.tags["sweep.best_run_id"] == best[0].info.run_id
    lrs = {c.data.params["optimizer.lr"] for c in children}
    assert len(lrs) == 8, "each trial samples its own learning rate"
    results = next((tmp_path / "logs" / "multiruns").rglob("optimization_results.yaml")).read_text()
    assert f"best_trial: {best[0].data.tags['optuna.trial']}" in results


@pytest.mark.slow
def test_an_optuna_search_with_storage_resumes_its_study(tmp_path):
    """The same command with a study storage continues the study: a trial left RUNNING by a
    sweep that died is told FAIL, the finished ones are kept, and only the missing trials run."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = [
        "hparams_search=synthetic_tpe",
        *TINY,
        f"hydra.sweeper.storage={storage}",
        f"paths.root_dir={tmp_path}",
    ]
    out = run_cli("train", *args, "hydra.sweeper.n_trials=2")
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="medpipe", storage=storage)
    study.ask()  # a trial a dead sweep left running
    out = run_cli("train", *args, "hydra.sweeper.n_trials=4")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming study medpipe" in out.stdout and "3 trials done" in out.stdout
    states = [t.state.name for t in optuna.load_study(study_name="medpipe", storage=storage).trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert "optuna: 3/4 trials complete" in out.stdout


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process_with_the_same_global_batch(tmp_path):
    common = [
        "data.n_train=256",
        "data.n_val=128",
        "data.n_test=128",
        "model.net.dropout=0",
        "optimizer.lr=3e-3",
        "trainer.max_epochs=3",
        "callbacks.progress_bar=none",
        "log_model=false",
        f"paths.root_dir={tmp_path}",
    ]
    single = run_cli(
        "train",
        *common,
        "data.batch_size=64",
        f"paths.output_dir={tmp_path}/single",
        "experiment_name=single",
    )
    ddp = run_cli(
        "train",
        *common,
        "trainer=ddp",
        "trainer.devices=2",
        "data.batch_size=32",
        f"paths.output_dir={tmp_path}/ddp",
        "experiment_name=ddp",
    )
    assert single.returncode == 0 and ddp.returncode == 0, ddp.stderr[-3000:]
    a = json.loads((tmp_path / "single" / "metrics.json").read_text())
    b = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    history = (tmp_path / "ddp" / "history.csv").read_text().splitlines()
    assert len(history) == 4
    assert history[1].split(",")[1] != history[3].split(",")[1], "training must move the model"
    for key in [k for k in a if k.startswith("val/")]:
        assert b[key] == pytest.approx(a[key], abs=1e-5), key
    # the ranks' test outputs are gathered back into row order: the same kept predictions,
    # operating point and test metrics as one process
    kept = [
        (tmp_path / run / "predictions" / "test.csv").read_text().splitlines()
        for run in ("single", "ddp")
    ]
    assert [line.split(",")[0] for line in kept[1][1:]] == [str(i) for i in range(128)]
    assert [line.split(",")[1] for line in kept[1]] == [line.split(",")[1] for line in kept[0]]
    for key in ("test/auroc", "test/acc", "threshold", "temperature"):
        assert b[key] == pytest.approx(a[key], abs=1e-4), key
    client = _client(_store(tmp_path))
    exp = client.get_experiment_by_name("ddp")
    assert len(client.search_runs([exp.experiment_id])) == 1, "rank zero alone tracks the run"


@pytest.mark.slow
def test_parallel_joblib_jobs_against_a_local_mlflow_server(tmp_path, mlflow_server):
    out = run_cli(
        "train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "optimizer.lr=1e-3,3e-4",
        *TINY,
        f"paths.root_dir={tmp_path}",
        "experiment_name=parallel",
        env={"MLFLOW_TRACKING_URI": mlflow_server},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    parents, children = _family(_client(mlflow_server), "parallel")
    assert len(parents) == 1 and len(children) == 2
    assert all(c.info.status == "FINISHED" for c in children)


def test_an_optuna_search_with_monitor_mode_auto_is_one_error_before_any_run(tmp_path):
    out = run_cli(
        "train", "hparams_search=synthetic_tpe", "monitor_mode=auto", f"paths.root_dir={tmp_path}"
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "medpipe: error: hydra.sweeper.direction: 'auto' (monitor_mode=auto): an Optuna search "
        "needs its direction before the first trial; set monitor and monitor_mode (e.g. "
        "monitor=val/mae monitor_mode=min)"
    ]
    assert not (tmp_path / "logs" / "mlflow").exists()
