"""The user's path end to end: train from the CLI on real data, inspect the MLflow run through
MlflowClient, reload the logged model, and re-evaluate the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medpipe.data.processed import sha256_file

from conftest import PNEUMONIA_NPZ, needs_shared_data, run_cli

pytestmark = needs_shared_data


def _client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}")


def _runs(root: Path):
    client = _client(root)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps) if exps else []


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    out = run_cli(
        "train",
        "experiment=pneumonia_cnn",
        f"data.path={PNEUMONIA_NPZ}",
        f"paths.root_dir={root}",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=6",
        "callbacks.progress_bar=plain",
        "experiment_name=e2e",
        "+tags.purpose=test",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = _runs(root)
    assert len(runs) == 1
    return root, runs[0], out


def test_train_prints_test_metrics_and_one_line_per_epoch(trained):
    _, _, out = trained
    assert "test metrics (best checkpoint, pneumoniamnist, cnn):" in out.stdout
    assert "test/auroc" in out.stdout
    assert out.stdout.count("epoch 1/2 |") == 1 and out.stdout.count("epoch 2/2 |") == 1


def test_run_is_finished_with_metrics_params_and_tags(trained):
    root, run, _ = trained
    assert run.info.status == "FINISHED"
    metrics = set(run.data.metrics)
    for split in ("val", "test"):
        for m in (
            "loss",
            "acc",
            "balanced_acc",
            "precision",
            "recall",
            "specificity",
            "f1",
            "f1_macro",
            "auroc",
            "f1_normal",
            "f1_pneumonia",
        ):
            assert f"{split}/{m}" in metrics, f"{split}/{m}"
    assert {"train/loss", "train/acc"} <= metrics
    history = _client(root).get_metric_history(run.info.run_id, "val/auroc")
    assert [m.step for m in history] == [0, 1], "metrics are stepped by epoch"
    params = run.data.params
    assert params["optimizer.lr"] == "0.001" and params["model.name"] == "cnn"
    assert params["trainer.max_epochs"] == "2" and params["data.path"] == str(PNEUMONIA_NPZ)
    tags = run.data.tags
    assert tags["data.sha256"] == sha256_file(PNEUMONIA_NPZ)
    assert len(tags["git.commit"]) == 40 and tags["git.dirty"] in ("true", "false")
    assert (
        "trainer.max_epochs=2" in tags["hydra.overrides"]
        and "experiment=pneumonia_cnn" in tags["hydra.overrides"]
    )
    assert tags["purpose"] == "test" and tags["mlflow.runName"] == "cnn-pneumoniamnist"


def test_run_logs_the_pneumonia_file_as_its_train_val_and_test_datasets(trained):
    root, run, out = trained
    processed = run.data.tags["data.processed_sha256"]
    inputs = {
        {t.key: t.value for t in d.tags}["mlflow.data.context"]: d.dataset
        for d in run.inputs.dataset_inputs
    }
    sizes = {"train": 4708, "val": 524, "test": 624}
    assert set(inputs) == {"train", "validation", "test"}
    for split, context in (("train", "train"), ("val", "validation"), ("test", "test")):
        ds = inputs[context]
        assert ds.name == f"pneumoniamnist/{split}" and ds.digest == processed[:36]
        assert ds.source_type == "local"
        assert json.loads(ds.source) == {"uri": str(PNEUMONIA_NPZ.resolve())}
        features = json.loads(json.loads(ds.schema)["mlflow_tensorspec"]["features"])
        assert features[0]["tensor-spec"] == {"dtype": "uint8", "shape": [-1, 1, 28, 28]}
        profile = json.loads(ds.profile)
        assert profile["num_rows"] == sizes[split] and profile["classes"] == ["normal", "pneumonia"]
    exp = _client(root).get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    store = f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}"
    assert (
        f"MLflow run {run.info.run_id}: http://127.0.0.1:5000/#/experiments/"
        f"{run.info.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning "
        f"(after `mlflow ui --backend-store-uri {store}`)"
    ) in out.stdout.splitlines()


def test_run_has_the_artifacts(trained):
    root, run, _ = trained
    client = _client(root)

    def walk(path=None):
        for a in client.list_artifacts(run.info.run_id, path):
            yield from walk(a.path) if a.is_dir else [a.path]

    files = set(walk())
    assert {
        "config/config.yaml",
        "config/overrides.yaml",
        "plots/confusion_matrix.png",
        "plots/roc.png",
        "reports/per_class_report.json",
        "reports/per_class_report.txt",
        "checkpoints/best.ckpt",
        "metrics.json",
        "history.csv",
    } <= files
    local = Path(client.download_artifacts(run.info.run_id, "plots/roc.png"))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "reports/per_class_report.json")
        ).read_text()
    )
    assert (
        report["classes"]["normal"]["support"] == 234
        and report["classes"]["pneumonia"]["support"] == 390
    )


def test_logged_model_loads_and_predicts_probabilities(trained):
    import mlflow

    root, run, _ = trained
    mlflow.set_tracking_uri(f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}")
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    assert len(models) == 1 and models[0].source_run_id == run.info.run_id
    model = mlflow.pytorch.load_model(models[0].model_uri)
    import torch

    x = torch.from_numpy(np.load(PNEUMONIA_NPZ)["test_images"][:8, None].astype(np.float32))
    with torch.no_grad():
        probs = model(x)
    assert probs.shape == (8, 2)
    torch.testing.assert_close(probs.sum(1), torch.ones(8))


def test_evaluate_reproduces_the_test_metrics_of_training(trained, tmp_path):
    root, run, _ = trained
    ckpt = next((root / "logs" / "runs").rglob("best.ckpt"))
    out = run_cli(
        "evaluate", f"ckpt_path={ckpt}", f"paths.root_dir={root}", f"output_dir={tmp_path}"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    keys = ("test/", "test_at_0.5/", "threshold", "temperature")  # at the stored operating point
    logged = {k: v for k, v in run.data.metrics.items() if k.startswith(keys)}
    assert set(evaluated) == set(logged)
    assert evaluated["threshold"] == run.data.metrics["threshold"]
    kept = next((root / "logs" / "runs").rglob("predictions/test.csv")).read_text()
    assert (tmp_path / "predictions" / "test.csv").read_text() == kept
    for k, v in logged.items():
        assert abs(evaluated[k] - v) <= 1e-6, (k, evaluated[k], v)
    assert (tmp_path / "plots" / "confusion_matrix.png").exists() and (
        tmp_path / "plots" / "roc.png"
    ).exists()
    trained_metrics = json.loads(next((root / "logs" / "runs").rglob("metrics.json")).read_text())
    assert abs(trained_metrics["test/auroc"] - evaluated["test/auroc"]) <= 1e-6


def test_history_and_metrics_files_for_dvc(trained):
    root, _, _ = trained
    run_dir = next((root / "logs" / "runs").rglob("history.csv")).parent
    lines = (run_dir / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and "val/auroc" in lines[0] and len(lines) == 3
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(isinstance(v, float | int) for v in metrics.values())
    assert {"test/auroc", "val/auroc", "best_epoch"} <= set(metrics)


def test_ending_a_run_writes_nothing_to_the_working_folder(tmp_path, monkeypatch):
    """end_run flushes the run's own store: no ./mlflow.db appears where the command was run."""
    from mlflow import MlflowClient

    from medpipe.tracking.store import end_run

    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "store").mkdir()
    client = MlflowClient(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("e"))
    client.log_metric(run.info.run_id, "m", 1.0, synchronous=False)  # queued, not yet written
    end_run(client, run.info.run_id, "FINISHED")
    done = client.get_run(run.info.run_id)
    assert done.info.status == "FINISHED" and done.data.metrics["m"] == 1.0
    assert list(here.iterdir()) == []
