"""Sequences end to end: padded records travel with their lengths through both loading paths, the
regression task trains, tracks and exports, and a task/loss/monitor mismatch is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medpipe.data.datamodule import MedDataModule
from medpipe.data.prepare import prepare_dataset
from medpipe.data.processed import read_split
from test_ecg_data import physionet_cfg, write_physionet

from conftest import evaluate_cli, run_cli

SMALL_ECG = ["data.n_train=96", "data.n_val=48", "data.n_test=48", "data.batch_size=32"]


@pytest.mark.parametrize("loader", ["memory", "workers"])
def test_batches_carry_the_true_lengths_of_padded_records(tmp_path, loader):
    folder = prepare_dataset(
        physionet_cfg(write_physionet(tmp_path / "pn", n=16)),
        str(tmp_path / "processed"),
        str(tmp_path / "raw"),
    )
    stored = read_split(folder, "train")
    assert stored.lengths is not None and (stored.lengths < stored.x.shape[-1]).any()
    dm = MedDataModule(folder, batch_size=4, loader=loader)
    dm.setup("fit")
    x, y, lengths = next(iter(dm.val_dataloader()))  # unshuffled: rows in stored order
    val = read_split(folder, "val")
    n = len(x)
    assert torch.equal(lengths, torch.as_tensor(val.lengths[:n]))
    assert np.array_equal(x.numpy(), val.x[:n]) and np.array_equal(y.numpy(), val.y[:n])
    seen = sum(len(b[2]) for b in dm.train_dataloader())
    assert seen == len(stored.x)


def test_padded_and_unpadded_record_get_the_same_prediction_from_a_task(tmp_path, make_cfg):
    """The task (normalisation + net + lengths), not only the bare net."""
    from omegaconf import OmegaConf

    from medpipe.data.processed import read_meta
    from medpipe.pipeline import build_task

    folder = prepare_dataset(
        physionet_cfg(write_physionet(tmp_path / "pn", n=16)),
        str(tmp_path / "processed"),
        str(tmp_path / "raw"),
    )
    meta = read_meta(folder)
    for model in ("rnn", "crnn1d"):
        cfg = OmegaConf.to_container(
            make_cfg("data=physionet2017", f"data.path={tmp_path / 'pn'}", f"model={model}"),
            resolve=True,
        )
        torch.manual_seed(0)
        task = build_task(cfg, meta).eval()
        split = read_split(folder, "test")
        i = int(np.argmin(split.lengths))
        n = int(split.lengths[i])
        padded = torch.from_numpy(np.array(split.x[i : i + 1]))
        with torch.no_grad():
            a = task(padded, torch.tensor([n]))
            b = task(padded[..., :n], torch.tensor([n]))
            c = task(padded[..., :n])  # no lengths at all: the record is whole
        assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5), model


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_regression_trains_tracks_and_exports(tmp_path):
    out = run_cli(
        "train",
        "data=synthetic_ecg",
        "model=crnn1d",
        "model.loss=huber",
        "monitor=val/mae",
        "monitor_mode=min",
        *SMALL_ECG,
        "trainer.max_epochs=2",
        "callbacks.progress_bar=plain",
        f"paths.root_dir={tmp_path}",
        "experiment_name=hr",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "val/mae" in out.stdout and "test/r2" in out.stdout
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'logs' / 'mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("hr").experiment_id])
    assert run.info.status == "FINISHED"
    assert {"train/loss", "train/mae", "val/mae", "val/rmse", "val/r2", "test/mae"} <= set(
        run.data.metrics
    )
    assert run.data.metrics["best/val/mae"] == pytest.approx(
        min(m.value for m in client.get_metric_history(run.info.run_id, "val/mae"))
    )
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    reports = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert "plots/pred_vs_true.png" in plots and "reports/regression_report.json" in reports

    out_dir = Path(out.stdout.split("outputs: ")[-1].split()[0])
    report = json.loads((out_dir / "regression_report.json").read_text())
    assert report["mae"] == pytest.approx(run.data.metrics["test/mae"], rel=1e-4)
    assert report["n"] == 48

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'logs' / 'mlflow' / 'mlflow.db'}")
    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    test = read_split(next((tmp_path / "data" / "processed").glob("synthetic_ecg-*")), "test")
    pred = model(torch.from_numpy(np.array(test.x[:8]))).detach().numpy()
    assert pred.shape == (8,)
    assert 20 < pred.mean() < 160  # bpm, not z-scores

    again = evaluate_cli(out_dir / "checkpoints" / "best.ckpt", tmp_path)
    assert again["test/mae"] == pytest.approx(run.data.metrics["test/mae"], abs=1e-4)


def test_classification_settings_on_regression_data_are_one_clear_error(tmp_path):
    out = run_cli(
        "train", "data=synthetic_ecg", "model=rnn", *SMALL_ECG, f"paths.root_dir={tmp_path}",
        "monitor=val/auroc", "monitor_mode=max",
    )  # fmt: skip
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.startswith("medpipe: error:")]
    assert errors[0] == (
        "medpipe: error: model.loss: 'cross_entropy' is not a loss of task kind regression "
        "(synthetic_ecg is regression data, learnt by task kind regression); use mse, mae, huber"
    )
    assert errors[1].startswith("medpipe: error: monitor: 'val/auroc' is not a metric of task kind")
    assert len(errors) == 2
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "logs" / "mlflow").exists()  # no run for a config that cannot train


def test_channel_statistics_of_padded_records_ignore_the_padding():
    from medpipe.data.processed import channel_stats

    x = np.zeros((2, 1, 6), np.float32)
    x[0, 0, :4] = [1, 2, 3, 4]  # length 4, then padding
    x[1, 0, :] = [5, 5, 5, 5, 5, 5]
    mean, std = channel_stats(x, 1.0, np.array([4, 6]))
    valid = np.array([1, 2, 3, 4, 5, 5, 5, 5, 5, 5], np.float64)
    assert mean == pytest.approx([valid.mean()]) and std == pytest.approx([valid.std()])
    assert channel_stats(x, 1.0)[0] != pytest.approx(mean)  # padding counted without lengths


def test_challenge_f1_is_the_mean_f1_of_the_score_classes():
    from medpipe.evaluation.metrics import ClassificationMetrics

    metrics = ClassificationMetrics("multiclass", ["N", "A", "O", "noisy"], ["N", "A", "O"])
    target = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    pred = torch.tensor([0, 1, 1, 1, 2, 0, 3, 2])
    metrics.update(torch.nn.functional.one_hot(pred, 4).float(), target)
    values = metrics.compute()
    per_class = [float(values[f"f1_{k}"]) for k in ("n", "a", "o")]
    assert float(values["f1_score"]) == pytest.approx(np.mean(per_class))
    assert float(values["f1_score"]) != pytest.approx(float(values["f1_macro"]))  # noisy left out


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["monitor=val/mae", "monitor_mode=min"],
            "monitor: 'val/mae' is not a metric of task kind classification",
        ),
        (["model.loss=mse"], "model.loss: 'mse' is not a loss of task kind classification"),
    ],
)
def test_regression_settings_on_classification_data_are_one_clear_error(
    tmp_path, overrides, expected
):
    out = run_cli("train", *overrides, f"paths.root_dir={tmp_path}", "data.n_train=64")
    assert out.returncode == 2 and f"medpipe: error: {expected}" in out.stderr, out.stderr
    assert not (tmp_path / "logs" / "mlflow").exists()


def test_a_monitor_with_the_wrong_direction_is_refused_and_auto_follows_the_task_kind(make_cfg):
    from medpipe.checks import check_run
    from medpipe.config import validate
    from medpipe.data.prepare import prepare_from_config
    from medpipe.data.processed import read_meta
    from medpipe.errors import ConfigError

    args = ("data=synthetic_ecg", "model=rnn", "model.loss=mse", *SMALL_ECG)
    c = validate(make_cfg(*args, "monitor=val/mae", "monitor_mode=max"))
    meta = read_meta(prepare_from_config(c))
    with pytest.raises(ConfigError, match="monitor_mode: 'max' with monitor 'val/mae'"):
        check_run(c, meta)
    c, kind = check_run(validate(make_cfg(*args)), meta)  # monitor=auto, monitor_mode=auto
    assert kind.name == "regression"
    assert (c["monitor"], c["monitor_mode"]) == ("val/mae", "min")
    checkpoint = c["callbacks"]["model_checkpoint"]
    assert (checkpoint["monitor"], checkpoint["mode"]) == ("val/mae", "min")


def test_an_augmentation_that_does_not_fit_the_data_is_one_error_before_the_run(tmp_path):
    """A MONAI flip along a third spatial axis, on signals (C, T): tried on the data's sample
    shape when the pipeline is built, so it fails naming the entry, not inside a worker."""
    out = run_cli(
        "train",
        "data=synthetic_ecg",
        "model=crnn1d",
        "model.loss=mse",
        "monitor=val/mae",
        "monitor_mode=min",
        *SMALL_ECG,
        "augmentation=signal_light",
        "augmentation.train=[{_target_:monai.transforms.RandFlip,spatial_axis:2,prob:1.0}]",
        f"paths.root_dir={tmp_path}",
    )
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("medpipe: error:")]
    assert len(errors) == 1 and "augmentation.train[0]" in errors[0], out.stderr
    assert "Traceback" not in out.stderr
