"""Every run records the data it used as MLflow dataset inputs (train, validation and test; a
cross-validation parent the pooled data), its experiment is marked as model training for the
MLflow UI, and training prints the run's address in the UI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import TINY, run_cli

SIZES = {"train": 256, "val": 128, "test": 128}
CONTEXTS = {"train": "train", "val": "validation", "test": "test"}


def _client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}")


def _inputs(run) -> dict[str, object]:
    """split -> the run's dataset input of that split, by its `mlflow.data.context` tag."""
    by_context = {}
    for d in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in d.tags}
        by_context[tags["mlflow.data.context"]] = d
    return by_context


def _assert_split_inputs(run, sizes=SIZES) -> None:
    """The three synthetic-data inputs of a training run: named after the data and split, digest
    the processed hash, shapes and source as the data has them."""
    processed = run.data.tags["data.processed_sha256"]
    inputs = _inputs(run)
    assert set(inputs) == {"train", "validation", "test"}
    for split, context in CONTEXTS.items():
        ds = inputs[context].dataset
        assert ds.name == f"synthetic_lesions/{split}"
        assert ds.digest == processed[:36]  # MLflow keeps 36 characters of a digest
        schema = json.loads(ds.schema)["mlflow_tensorspec"]
        features = json.loads(schema["features"])[0]["tensor-spec"]
        targets = json.loads(schema["targets"])[0]["tensor-spec"]
        assert features == {"dtype": "uint8", "shape": [-1, 1, 28, 28]}
        assert targets == {"dtype": "int64", "shape": [-1]}
        profile = json.loads(ds.profile)
        assert profile["num_rows"] == sizes[split]
        assert profile["features_shape"] == [sizes[split], 1, 28, 28]
        assert profile["processed_sha256"] == processed
        assert profile["fingerprint"] == run.data.tags["data.fingerprint"]
        assert ds.source_type == "code"
        source = json.loads(ds.source)["tags"]
        assert source["generator"] == "synthetic_lesions" and source["n_train"] == 256


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    out = run_cli("train", *TINY, f"paths.root_dir={root}", "experiment_name=data")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client = _client(root)
    exp = client.get_experiment_by_name("data")
    (run,) = client.search_runs([exp.experiment_id])
    return root, exp, run, out


def test_a_run_logs_its_train_val_and_test_data_as_dataset_inputs(trained):
    _, _, run, _ = trained
    assert run.info.status == "FINISHED"
    _assert_split_inputs(run)


def test_the_experiment_is_marked_as_model_training(trained):
    _, exp, _, _ = trained
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_training_prints_the_runs_address_in_the_ui(trained):
    root, exp, run, out = trained
    store = f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}"
    expected = (
        f"MLflow run {run.info.run_id}: http://127.0.0.1:5000/#/experiments/"
        f"{exp.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning "
        f"(after `mlflow ui --backend-store-uri {store}`)"
    )
    assert expected in out.stdout.splitlines()


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_sweep_children_log_their_dataset_inputs(tmp_path):
    out = run_cli(
        "train", "-m", "model=cnn,linear", *TINY, f"paths.root_dir={tmp_path}", "experiment_name=sw"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    client = _client(tmp_path)
    exp = client.get_experiment_by_name("sw")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and len(runs) == 3
    for child in children:
        _assert_split_inputs(child)
    # each job prints its run's address, on the same store
    printed = re.findall(r"^MLflow run (\w+): (\S+)", out.stdout, re.M)
    assert sorted(run_id for run_id, _ in printed) == sorted(c.info.run_id for c in children)
    for run_id, url in printed:
        assert url.endswith(
            f"/#/experiments/{exp.experiment_id}/runs/{run_id}?workflowType=machine_learning"
        )


def test_an_existing_experiment_keeps_a_kind_its_user_chose(tmp_path):
    from mlflow import MlflowClient

    from medpipe.tracking.store import experiment_id, mark_training_experiment

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    chosen = client.create_experiment("chosen", tags={"mlflow.experimentKind": "genai_development"})
    plain = client.create_experiment("plain")
    assert experiment_id(client, "chosen", None) == chosen
    assert experiment_id(client, "plain", None) == plain
    new = experiment_id(client, "new", None)
    kind = {
        e: client.get_experiment(e).tags.get("mlflow.experimentKind") for e in (chosen, plain, new)
    }
    assert kind == {
        chosen: "genai_development",
        plain: "custom_model_development",
        new: "custom_model_development",
    }
    mark_training_experiment(client, chosen)
    assert client.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"


def test_ui_address_is_the_tracking_server_or_make_uis():
    from medpipe.tracking.store import run_url, ui_address

    assert ui_address("sqlite:////tmp/x/mlflow.db") == "http://127.0.0.1:5000"
    assert ui_address("http://10.0.0.5:8080/") == "http://10.0.0.5:8080"
    assert run_url("https://mlflow.example.org", "3", "abc") == (
        "https://mlflow.example.org/#/experiments/3/runs/abc?workflowType=machine_learning"
    )


def test_the_printed_address_says_what_serves_the_ui():
    from medpipe.paths import project_root
    from medpipe.training import ui_hint

    project_store = f"sqlite:///{project_root() / 'logs' / 'mlflow' / 'mlflow.db'}"
    assert ui_hint(project_store) == " (after `make ui`)"
    assert ui_hint("sqlite:////tmp/x/mlflow.db") == (
        " (after `mlflow ui --backend-store-uri sqlite:////tmp/x/mlflow.db`)"
    )
    assert ui_hint("http://127.0.0.1:5000") == ""


def test_a_run_whose_datasets_cannot_be_logged_is_failed_not_left_running(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from medpipe.tracking.mlflow_run import MlflowRun

    def broken(self, datasets):
        raise RuntimeError("store refused the inputs")

    monkeypatch.setattr(MlflowRun, "log_datasets", broken)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(RuntimeError, match="refused"):
        MlflowRun.create(uri, "broken", "r", None, {}, {"a": 1}, synchronous=True, datasets=[])
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("broken").experiment_id])
    assert run.info.status == "FAILED"
