"""privacy=dp: DP-SGD through Opacus. Layers DP-SGD cannot train are replaced (with a line saying
so) or refused (naming them) before any MLflow run exists; the epsilon spent is logged every epoch
and stays within the target; the checkpoint holds the plain net's names and loads as any other;
recurrent nets train through Opacus' DPLSTM; batches are Poisson samples."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medpipe.config import validate
from medpipe.errors import ConfigError

from conftest import TINY, compose_config

DP = [*TINY, "privacy=dp", "data.batch_size=32"]


def _client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}")


def _runs(root: Path):
    if not (root / "logs" / "mlflow" / "mlflow.db").exists():
        return []
    client = _client(root)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _problems(make_cfg, *overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(*overrides))
    return err.value.lines()


# -- configuration ----------------------------------------------------------------------------
def test_dp_config_composes_with_target_epsilon_8(make_cfg):
    privacy = validate(make_cfg("privacy=dp"))["privacy"]
    assert privacy["dp"] is True and privacy["target_epsilon"] == 8
    assert privacy["noise_multiplier"] is None and privacy["fix_layers"] is True


@pytest.mark.parametrize(
    "overrides, got",
    [
        (["privacy.noise_multiplier=1.0"], "both"),
        (["privacy.target_epsilon=null"], "neither"),
    ],
)
def test_exactly_one_of_target_epsilon_and_noise_multiplier(make_cfg, overrides, got):
    (line,) = _problems(make_cfg, "privacy=dp", *overrides)
    assert "privacy.target_epsilon" in line and "privacy.noise_multiplier" in line
    assert f"got {got}" in line
    ok = validate(
        make_cfg("privacy=dp", "privacy.target_epsilon=null", "privacy.noise_multiplier=1")
    )
    assert ok["privacy"]["noise_multiplier"] == 1.0


def test_what_dp_sgd_cannot_be_combined_with_is_refused_one_line_each(make_cfg):
    lines = _problems(
        make_cfg,
        "privacy=dp",
        "trainer.accumulate_grad_batches=2",
        "trainer.gradient_clip_val=1.0",
        "compile=true",
        "trainer.strategy=ddp",
    )
    keys = sorted(line.split(":", 1)[0] for line in lines)
    assert keys == [
        "compile",
        "trainer.accumulate_grad_batches",
        "trainer.devices",
        "trainer.gradient_clip_val",
    ], lines
    # the same settings without privacy.dp are fine
    validate(make_cfg("trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=1.0"))


def test_default_delta_is_a_tenth_of_one_over_n_rounded_down_to_a_power_of_ten():
    from medpipe.privacy.dp import default_delta

    assert default_delta(4708) == 1e-5  # 1 / 47080 = 2.1e-5
    assert default_delta(256) == 1e-4  # 1 / 2560 = 3.9e-4
    assert default_delta(1000) == 1e-4


# -- the net ----------------------------------------------------------------------------------
def _bn_cnn():
    from medpipe.models.nets import SimpleCNN

    return SimpleCNN(1, 2, (28, 28), channels=[8, 16], hidden=0, batch_norm=True)


def test_batchnorm_is_replaced_by_groupnorm_with_one_line(capsys):
    from medpipe.privacy.dp import private_net

    net = private_net(_bn_cnn(), fix_layers=True, training=True)
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        "privacy: replaced 2 BatchNorm2d layers with GroupNorm (Opacus cannot train BatchNorm "
        "privately)"
    ]
    kinds = [type(m).__name__ for m in net.modules()]
    assert "GroupNorm" in kinds and not any(k.startswith("BatchNorm") for k in kinds)
    # what a DP run's checkpoint is loaded into: the same GroupNorm net, silently
    loaded = private_net(_bn_cnn(), fix_layers=True, training=False)
    assert capsys.readouterr().out == ""
    assert list(loaded.state_dict()) == list(net.state_dict())


def test_fix_layers_false_refuses_naming_the_layers():
    from medpipe.privacy.dp import private_net

    with pytest.raises(ConfigError) as err:
        private_net(_bn_cnn(), fix_layers=False, training=True)
    (line,) = err.value.lines()
    assert "features.1 (BatchNorm2d)" in line and "features.5 (BatchNorm2d)" in line
    assert "privacy.fix_layers=true" in line


def test_lstm_becomes_dplstm_for_training_with_torch_names_in_its_state_dict(capsys):
    from opacus.layers import DPLSTM

    from medpipe.privacy.dp import plain_recurrent, private_net

    net = nn.Sequential(nn.Sequential(nn.LSTM(3, 4, batch_first=True)), nn.Linear(4, 1))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 5, 3)
    expected = net[0][0](x)[0]
    private_net(net, fix_layers=True, training=True)
    assert "1 LSTM layer with DPLSTM" in capsys.readouterr().out
    assert isinstance(net[0][0], DPLSTM)
    assert sorted(net.state_dict()) == sorted(before)  # nn.LSTM's names, nested too
    net.load_state_dict(before)  # and loads them back
    torch.testing.assert_close(net[0][0](x)[0], expected)
    plain_recurrent(net)
    assert type(net[0][0]) is nn.LSTM
    torch.testing.assert_close(net[0][0](x)[0], expected)


def test_a_net_fitted_outside_gradient_steps_is_refused():
    from medpipe.privacy.dp import private_net

    class Fitted(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)

        def fit_features(self, x):
            pass

    with pytest.raises(ConfigError, match="outside DP-SGD"):
        private_net(Fitted(), fix_layers=True, training=True)


# -- Poisson batches --------------------------------------------------------------------------
def test_poisson_batches_vary_in_size_are_seeded_and_may_be_empty():
    from medpipe.data.datamodule import PoissonBatches

    x, y = torch.arange(200).float()[:, None], torch.arange(200)
    epoch = [0]
    batches = PoissonBatches(x, y, 20, shuffle=True, seed=3, epoch_fn=lambda: epoch[0],
                             sample_rate=0.1)  # fmt: skip
    assert len(batches) == 10
    sizes = [len(b[0]) for b in batches]
    assert len(set(sizes)) > 1 and 10 < np.mean(sizes) < 30
    first = [b[1].tolist() for b in batches]
    assert first == [b[1].tolist() for b in batches]  # same epoch: same batches
    for bx, by in batches:
        assert torch.equal(bx[:, 0].long(), by)  # rows stay paired
    epoch[0] = 1
    assert first != [b[1].tolist() for b in batches]
    rare = PoissonBatches(x, y, 20, shuffle=True, seed=3, sample_rate=0.001)
    empty = [b for b in rare if len(b[0]) == 0]
    assert empty and empty[0][0].shape == (0, 1) and empty[0][1].dtype == y.dtype


def test_poisson_sampler_for_the_workers_loader_collates_empty_batches():
    from medpipe.data.datamodule import CollateWithEmpty, PoissonSampler

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 50

        def __getitem__(self, i):
            return torch.full((1, 4), float(i)), torch.tensor(i)

    loader = torch.utils.data.DataLoader(
        Items(),
        batch_sampler=PoissonSampler(50, 0.002, 20, seed=0, epoch_fn=lambda: 0),
        collate_fn=CollateWithEmpty(Items()),
    )
    batches = list(loader)
    assert len(batches) == 20
    assert any(len(b[0]) == 0 for b in batches)
    assert all(b[0].shape[1:] == (1, 4) for b in batches)


# -- training ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    """2 epochs of DP-SGD on 256 synthetic images with a small BatchNorm CNN (GroupNorm then)."""
    import contextlib
    import io

    from medpipe.pipeline import train

    root = tmp_path_factory.mktemp("dp")
    cfg = compose_config(
        root,
        [
            *DP,
            "trainer.max_epochs=2",
            "model.net.batch_norm=true",
            "model.net.channels=[8,16]",
            "model.net.hidden=32",
            "data.loader=memory",
        ],
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train(cfg)
    return root, out.getvalue()


def test_dp_run_says_what_it_replaced_and_what_it_spent(dp_run):
    _, out = dp_run
    assert "privacy: replaced 2 BatchNorm2d layers with GroupNorm" in out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("privacy: epsilon")]
    assert "of target 8 spent at delta 0.0001" in line and "16 DP-SGD steps" in line


def test_dp_run_logs_epsilon_every_epoch_within_the_target(dp_run):
    root, _ = dp_run
    (run,) = _runs(root)
    assert run.info.status == "FINISHED"
    history = _client(root).get_metric_history(run.info.run_id, "privacy/epsilon")
    eps = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1]
    assert 0 < eps[0] < eps[1] <= 8 + 0.05
    assert eps[1] > 7.5  # the noise was calibrated to spend the budget, not far less
    params = run.data.params
    assert float(params["privacy/noise_multiplier"]) > 0
    assert float(params["privacy/sample_rate"]) == 32 / 256
    assert float(params["privacy/delta"]) == 1e-4
    metrics = json.loads(next((root / "out").glob("metrics.json")).read_text())
    assert metrics["privacy/epsilon"] == pytest.approx(eps[1], rel=1e-6)
    assert "privacy/epsilon" in (root / "out" / "history.csv").read_text().splitlines()[0]
    report = (root / "out" / "report.html").read_text()
    assert "DP-SGD" in report and f"epsilon = {eps[1]:.3g}" in report


def test_dp_checkpoint_holds_the_plain_names_and_evaluates(dp_run, tmp_path):
    from medpipe.checkpoints import load_checkpoint
    from medpipe.evaluating import evaluate, trained_task

    root, _ = dp_run
    ckpt_path = root / "out" / "checkpoints" / "best.ckpt"
    ckpt = load_checkpoint(ckpt_path)
    names = list(ckpt["state_dict"])
    assert not any("_module" in k or "grad_sample" in k for k in names)
    task = trained_task(ckpt)  # rebuilt from the run's config: the GroupNorm net
    assert any(isinstance(m, nn.GroupNorm) for m in task.net.modules())
    cfg = compose_config(root, [f"ckpt_path={ckpt_path}", f"output_dir={tmp_path}"], "evaluate")
    metrics = evaluate(validate(cfg, "evaluate"))
    trained = json.loads((root / "out" / "metrics.json").read_text())
    assert metrics["test/auroc"] == pytest.approx(trained["test/auroc"], abs=1e-6)


def test_refused_layer_fails_before_any_mlflow_run(tmp_path):
    from medpipe.pipeline import train

    cfg = compose_config(tmp_path, [*DP, "model.net.batch_norm=true", "privacy.fix_layers=false"])
    with pytest.raises(ConfigError, match=r"features\.1 \(BatchNorm2d\)"):
        train(cfg)
    assert all(r.info.status != "RUNNING" for r in _runs(tmp_path))
    assert _runs(tmp_path) == []


@pytest.mark.slow  # ~10 s each: the default run stays under 10 minutes on 2 cores
def test_lstm_trains_under_dp_on_synthetic_ecg(tmp_path):
    from medpipe.checkpoints import load_checkpoint
    from medpipe.evaluating import trained_task
    from medpipe.pipeline import train

    cfg = compose_config(
        tmp_path,
        [
            *TINY,
            "experiment=ecg_hr_rnn",
            "trainer.gradient_clip_val=null",
            "privacy=dp",
            "privacy.target_epsilon=null",
            "privacy.noise_multiplier=0.8",
            "data.n_train=96",
            "data.n_val=32",
            "data.n_test=32",
            "data.batch_size=16",
            "model.net.frame=50",
            "model.net.hidden_size=8",
            "model.net.num_layers=1",
        ],
    )
    best = train(cfg)
    assert math.isfinite(best)
    (run,) = _runs(tmp_path)
    assert run.info.status == "FINISHED"
    eps = _client(tmp_path).get_metric_history(run.info.run_id, "privacy/epsilon")
    assert len(eps) == 1 and eps[0].value > 0
    ckpt = load_checkpoint(tmp_path / "out" / "checkpoints" / "best.ckpt")
    assert any(k.endswith("weight_ih_l0") for k in ckpt["state_dict"])
    assert not any(".l0.ih." in k for k in ckpt["state_dict"])
    task = trained_task(ckpt)
    assert any(type(m) is nn.LSTM for m in task.net.modules())


def test_gan_and_budget_problems_are_one_line(tmp_path):
    from medpipe.privacy.dp import plan

    c = {
        "privacy": {"target_epsilon": 1e-6, "delta": None, "max_grad_norm": 1.0},
        "data": {"batch_size": 32},
        "trainer": {"max_epochs": 100},
    }
    with pytest.raises(ConfigError, match="privacy.target_epsilon: 1e-06 cannot be met"):
        plan(c, 256)
    with pytest.raises(ConfigError, match="not GANs"):
        plan(c, 256, "gan")


@pytest.mark.slow  # ~10 s each: the default run stays under 10 minutes on 2 cores
def test_empty_poisson_batches_are_noise_only_steps_on_the_workers_loader(tmp_path):
    """Batch size 1 of 256: about a third of the 256 Poisson batches are empty; each is still a
    DP-SGD step (the accountant counts 256) and the epoch's training loss stays finite."""
    from medpipe.pipeline import train

    cfg = compose_config(
        tmp_path,
        [
            *TINY,
            "privacy=dp",
            "privacy.target_epsilon=null",
            "privacy.noise_multiplier=1.0",
            "model=linear",
            "data.batch_size=1",
            "data.loader=workers",
            "log_model=false",
        ],
    )
    train(cfg)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["privacy/steps"] == 256 and metrics["privacy/epsilon"] > 0
    with open(tmp_path / "out" / "history.csv") as f:
        loss = float(next(csv.DictReader(f))["train/loss"])
    assert math.isfinite(loss) and loss > 0


@pytest.mark.slow  # ~10 s each: the default run stays under 10 minutes on 2 cores
def test_without_noise_and_clipping_dp_sgd_takes_the_plain_optimizer_steps(tmp_path):
    """The wiring, not Opacus: per-sample gradients summed and divided by the expected batch
    size equal the plain mean gradient when nothing is clipped and (almost) no noise is added
    (fixed-size batches: poisson_sampling=false draws the plain run's batches)."""
    import contextlib
    import io

    from medpipe.pipeline import train

    common = [
        *TINY,
        "trainer.max_epochs=2",
        "data.batch_size=32",
        "optimizer=sgd",
        "optimizer.lr=0.01",
        "model.net.dropout=0",
        "model.net.channels=[8,16]",
        "model.net.hidden=32",
    ]
    quiet = [
        "privacy=dp",
        "privacy.target_epsilon=null",
        "privacy.noise_multiplier=1e-8",
        "privacy.accountant=rdp",
        "privacy.max_grad_norm=1000",
        "privacy.poisson_sampling=false",
    ]
    histories = []
    for name, extra in (("plain", []), ("dp", quiet)):
        with contextlib.redirect_stdout(io.StringIO()):
            train(compose_config(tmp_path / name, [*common, *extra]))
        with open(tmp_path / name / "out" / "history.csv") as f:
            histories.append(list(csv.DictReader(f)))
    for plain, dp in zip(*histories, strict=True):
        for key in ("train/loss", "val/loss", "val/auroc"):
            assert float(dp[key]) == pytest.approx(float(plain[key]), abs=1e-5), key
