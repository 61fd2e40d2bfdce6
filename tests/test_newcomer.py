"""What a newcomer meets first: each command's --help says what it is and what to type, `compare`
says which epoch its validation columns come from, and the logged model says what it takes and
returns (its MLflow signature, metadata and description) and works as the README shows."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest

from medpipe.data.processed import DatasetMeta
from medpipe.outputs import describe_model, model_description, model_signature

from conftest import SMALL_SYNTHETIC, run_cli

COMMANDS = {
    "train": "medpipe.train: train a model",
    "evaluate": "medpipe.evaluate: test a checkpoint",
    "prepare": "medpipe.prepare: turn a dataset into medpipe's processed format",
    "compare": "medpipe.compare: list the MLflow runs of an experiment",
    "export": "medpipe.export: export a checkpoint written by medpipe.train to ONNX",
    "predict": "medpipe.predict: apply a trained model to your own files",
    "privacy": "medpipe.privacy: look for patient identifiers",
    "deidentify": "medpipe.deidentify: write de-identified copies of DICOM files",
}


# -- --help --------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_names_the_command_says_what_it_does_and_shows_examples(command):
    out = run_cli(command, "--help", timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(COMMANDS[command]), lines[0]
    assert "powered by Hydra" not in out.stdout
    assert f"Usage: python -m medpipe.{command}" in out.stdout
    examples = lines.index("== Examples ==")
    assert lines[examples + 1].startswith(f"  python -m medpipe.{command}")
    assert "--hydra-help" in lines[-1] or "--hydra-help" in lines[-2]
    # no template field left unfilled ($CONFIG, $APP_CONFIG_GROUPS); $MLFLOW_TRACKING_URI is text
    assert set(re.findall(r"\$[A-Z_]+", out.stdout)) <= {"$MLFLOW_TRACKING_URI"}


def test_train_help_lists_the_groups_and_where_runs_go():
    out = run_cli("train", "--help", timeout=120).stdout
    assert "== Config groups (group=option) ==" in out
    assert (
        "model: cnn, cnn2p5d, crnn1d, crnn2d, gan, gru, inception1d, linear, minirocket, resnet18, "
        "resnet1d, resnet3d, rnn" in out
    )
    assert "experiment: " in out and "data: " in out
    assert "python -m medpipe.train -m model=cnn,linear" in out  # a sweep among the examples
    where = out[out.index("== Where runs go ==") :]
    assert "/logs/runs/train/<date>/<time>/" in where and "checkpoints/best.ckpt" in where
    assert "$MLFLOW_TRACKING_URI" in where and "/logs/mlflow/mlflow.db" in where
    assert "make ui" in where


def test_help_follows_the_paths_and_hydra_help_stays_hydras(tmp_path):
    out = run_cli("compare", "--help", f"paths.root_dir={tmp_path}", timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"{tmp_path}/logs/mlflow/mlflow.db" in out.stdout
    assert "ignore_params:" in out.stdout  # the command's own config keys
    out = run_cli("train", "--hydra-help", timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("Hydra (1.3")


# -- the logged model: signature, metadata, description ------------------------------------------
def _meta(**kw) -> DatasetMeta:
    base = dict(
        name="x",
        task="binary",
        kind="image",
        classes=["normal", "pneumonia"],
        channels=1,
        sample_shape=[1, 28, 28],
        sizes={},
        class_counts={},
        mean=[0.5],
        std=[0.2],
        scale=255.0,
        fingerprint="f",
    )
    return DatasetMeta(**{**base, **kw})


def test_the_model_card_for_images_signals_volumes_and_regression():
    card = describe_model(_meta(), np.dtype(np.uint8), (2,), False)
    assert card["input"] == (
        "image intensities (batch, C=1, H=28, W=28), stored scale 0-255 (the uint8 values as "
        "float32)"
    )
    assert card["output"] == "probabilities (batch, 2) of classes: normal, pneumonia"
    signature = model_signature(card)
    assert signature.inputs.inputs[0].shape == (-1, 1, 28, 28)
    assert signature.outputs.inputs[0].shape == (-1, 2)
    assert signature.outputs.input_names() == [card["output"]]

    one_logit = describe_model(_meta(), np.dtype(np.uint8), (1,), False)
    assert one_logit["output"] == "probability (batch, 1) of class pneumonia (1 - it: normal)"

    signal = _meta(
        task="multiclass",
        kind="signal",
        classes=["N", "A", "O", "~"],
        sample_shape=[1, 3000],
        scale=1.0,
    )
    card = describe_model(signal, np.dtype(np.float32), (4,), True)
    assert card["input_shape"] == [1, -1] and card["stored_shape"] == [1, 3000]
    assert card["input"].startswith(
        "signal samples (batch, C=1, T), float32 values as stored in the processed data; "
        "T = 3000 in the training data"
    )
    assert model_signature(card).inputs.inputs[0].shape == (-1, 1, -1)
    text = model_description(card, "RUN", "medpipe crnn1d on physionet2017 (multiclass)")
    assert 'mlflow.pytorch.load_model("runs:/RUN/model")' in text
    assert "probs = model(torch.zeros(4, 1, 3000))" in text
    assert "lengths=torch.tensor" in text and "data.preprocess" in text

    volume = _meta(kind="volume", sample_shape=[1, 28, 28, 28], classes=["a", "b", "c"])
    card = describe_model(volume, np.dtype(np.uint8), (3,), False)
    assert card["input"].startswith("volume intensities (batch, C=1, D=28, H=28, W=28)")

    frames = _meta(kind="frames", sample_shape=[1, 8, 32, 32])
    card = describe_model(frames, np.dtype(np.uint8), (2,), False)
    assert card["input"].startswith("frame intensities (batch, C=1, T=8, H=32, W=32)")

    hr = _meta(task="regression", kind="signal", classes=["heart_rate_bpm"], sample_shape=[1, 1000])
    card = describe_model(hr, np.dtype(np.float32), (), True)
    assert card["output"] == "heart_rate_bpm (batch,), in the target's units"
    assert model_signature(card).outputs.inputs[0].shape == (-1,)
    assert "values = model(" in model_description(card, "RUN", "t")

    labels = _meta(task="multilabel", classes=["a", "b", "c"])
    card = describe_model(labels, np.dtype(np.uint8), (3,), False)
    assert card["output"] == "probabilities (batch, 3), one per label, independent: a, b, c"
    assert "sums to 1" not in model_description(card, "RUN", "t")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    """A 2-epoch run of the default experiment on small synthetic data, through the CLI."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("newcomer")
    out = run_cli(
        "train",
        *SMALL_SYNTHETIC,
        "trainer.max_epochs=2",
        f"paths.root_dir={root}",
        "experiment_name=newcomer",
        "callbacks.progress_bar=plain",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("newcomer").experiment_id])
    return root, run.info.run_id


def test_the_logged_model_says_what_it_takes_and_returns(trained):
    import mlflow
    from mlflow import MlflowClient

    root, run_id = trained
    mlflow.set_tracking_uri(f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}")
    info = mlflow.models.get_model_info(f"runs:/{run_id}/model")
    (inp,) = info.signature.inputs.inputs
    (out,) = info.signature.outputs.inputs
    assert inp.shape == (-1, 1, 28, 28) and inp.type == np.dtype(np.float32)
    assert out.shape == (-1, 2)
    assert out.name == "probabilities (batch, 2) of classes: no lesion, lesion"
    card = info.metadata["medpipe"]
    assert card["input"].startswith(
        "image intensities (batch, C=1, H=28, W=28), stored scale 0-255"
    )
    assert card["classes"] == ["no lesion", "lesion"]
    description = MlflowClient().get_logged_model(info.model_id).tags["mlflow.note.content"]
    assert f'mlflow.pytorch.load_model("runs:/{run_id}/model")' in description
    assert "probs = model(torch.zeros(4, 1, 28, 28))" in description
    assert "each row sums to 1" in description


def test_the_readme_snippet_loads_and_calls_the_model(trained):
    import mlflow
    import torch

    root, run_id = trained
    mlflow.set_tracking_uri(f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}")
    (folder,) = (root / "data" / "processed").glob("synthetic_lesions-*")
    # the README's three lines, with this run's id and processed folder
    model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    x = torch.from_numpy(np.load(folder / "test_x.npy")[:8]).float()
    probs = model(x)
    assert probs.shape == (8, 2)
    torch.testing.assert_close(probs.sum(1), torch.ones(8))
    # pyfunc (and so `mlflow models serve`) takes the same input as a numpy array
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    np.testing.assert_allclose(pyfunc.predict(x.numpy()), probs.detach().numpy(), atol=1e-6)


def test_compare_shows_the_runs_best_epoch(trained):
    """The run logs its best epoch's validation metrics; compare shows those and the epoch."""
    from mlflow import MlflowClient

    root, run_id = trained
    client = MlflowClient(f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}")
    metrics = client.get_run(run_id).data.metrics
    best_epoch = int(metrics["best_epoch"])
    assert best_epoch in (1, 2)
    history = client.get_metric_history(run_id, "val/acc")
    at_best = next(m.value for m in history if m.step == best_epoch - 1)

    out = run_cli("compare", "experiment=newcomer", f"paths.root_dir={root}", "format=csv")
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = csv.DictReader(io.StringIO(out.stdout))
    assert row["best_epoch"] == str(best_epoch) and row["val_last_epoch"] == ""
    assert float(row["val/auroc"]) == pytest.approx(metrics["best/val/auroc"])
    assert float(row["val/acc"]) == pytest.approx(at_best)

    out = run_cli("compare", "experiment=newcomer", f"paths.root_dir={root}")
    lines = out.stdout.splitlines()
    assert "best epoch" in lines[1] and lines[-1].startswith("val/*: each run's best epoch")
