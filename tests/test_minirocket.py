"""model=minirocket: sktime's MiniRocket transform fitted on the training split inside a net, a
linear head trained by the usual loop, and its runs tracked and compared beside the deep nets."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch

from test_ecg_data import write_physionet

from conftest import run_cli

KERNELS = 168  # two of MiniRocket's 84-kernel sets: enough to check, fast to fit


def _net(channels: int, length: int, outputs: int = 3):
    from medpipe.models.nets import MiniRocket

    return MiniRocket(channels, outputs, [length], num_kernels=KERNELS, seed=3)


def test_features_are_sktimes_and_travel_in_the_state_dict():
    """Multichannel records: the net's features are exactly sktime's MiniRocketMultivariate with
    the same seed; a fresh net loading the state dict gives the same outputs."""
    from sktime.transformations.rocket import MiniRocketMultivariate

    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 3, 150)).astype(np.float32)
    net = _net(3, 150)
    with pytest.raises(RuntimeError, match="not fitted"):
        net(torch.from_numpy(x))
    before = np.random.get_state()[1].copy()
    net.fit_features(torch.from_numpy(x))
    assert np.array_equal(np.random.get_state()[1], before)  # numpy's global stream untouched
    reference = MiniRocketMultivariate(num_kernels=KERNELS, random_state=3).fit(x).transform(x)
    assert np.allclose(net.transform(x), reference.to_numpy(), atol=1e-6)
    assert net.num_features == reference.shape[1] == KERNELS

    with torch.no_grad():
        net.head.weight.normal_()
        out = net(torch.from_numpy(x))
        fresh = _net(3, 150)
        fresh.load_state_dict(net.state_dict())
        assert torch.equal(fresh(torch.from_numpy(x)), out) and out.shape == (24, 3)


def test_explanations_use_occlusion_and_a_wrong_length_is_refused():
    from types import SimpleNamespace

    from medpipe.evaluation.explain import resolve_method

    task = SimpleNamespace(net=_net(1, 64))
    assert resolve_method(task, "auto") == "occlusion"
    with pytest.raises(ValueError, match="occlusion"):
        resolve_method(task, "integrated_gradients")
    with pytest.raises(ValueError, match="length"):
        _net(1, 64).fit_features(torch.zeros(4, 1, 100))


def _train(root, *args: str):
    out = run_cli(
        "train",
        *args,
        f"paths.root_dir={root}",
        "callbacks.progress_bar=none",
        "evaluation.bootstrap.n=50",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_minirocket_trains_tracks_and_compares_beside_a_deep_run(tmp_path):
    from mlflow import MlflowClient

    data = write_physionet(tmp_path / "pn", n=40)
    _train(
        tmp_path,
        "experiment=ecg_af_minirocket",
        f"data.path={data}",
        f"model.net.num_kernels={KERNELS}",
        "trainer.max_epochs=2",
    )
    _train(  # a tiny deep run of the same experiment
        tmp_path,
        "experiment=ecg_af_crnn",
        f"data.path={data}",
        "model.net.channels=[4]",
        "model.net.rnn.hidden_size=4",
        "trainer.max_epochs=1",
        "evaluation.explain.enabled=false",
    )
    client = MlflowClient(f"sqlite:///{tmp_path / 'logs' / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ecg_af").experiment_id])
    by_model = {r.data.tags["model.name"]: r for r in runs}
    assert set(by_model) == {"minirocket", "crnn1d"}
    rocket = by_model["minirocket"]
    assert rocket.info.status == "FINISHED"
    metrics = rocket.data.metrics
    for key in ("test/f1_score", "test/auroc", "test/f1_n", "test/f1_a", "best/val/f1_score"):
        assert np.isfinite(metrics[key]), key
    assert rocket.data.params["model.net.num_kernels"] == str(KERNELS)
    models = client.search_logged_models([rocket.info.experiment_id])
    assert any(m.source_run_id == rocket.info.run_id for m in models)  # the pickled model

    out = run_cli("compare", "experiment=ecg_af", f"paths.root_dir={tmp_path}", "format=csv")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert {r["run_id"] for r in rows} == {r.info.run_id for r in runs}
    assert {r["run"].split("-")[0] for r in rows} == {"minirocket", "crnn1d"}
    listed = {r["run"].split("-")[0]: float(r["test/f1_score"]) for r in rows}
    assert listed["minirocket"] == pytest.approx(metrics["test/f1_score"])


@pytest.mark.slow
def test_minirocket_regresses_heart_rate_with_cross_validation(tmp_path):
    out = _train(
        tmp_path,
        "data=synthetic_ecg",
        "model=minirocket",
        "model.loss=huber",
        "model.class_weights=null",
        "monitor=val/mae",
        "monitor_mode=min",
        "data.n_train=60",
        "data.n_val=20",
        "data.n_test=20",
        f"model.net.num_kernels={KERNELS}",
        "trainer.max_epochs=2",
        "optimizer.lr=1e-3",
        "cv.folds=2",
        "log_model=false",
        "evaluation.explain.enabled=false",
    )
    assert "cross-validation over 2 folds" in out.stdout and "test/mae" in out.stdout
