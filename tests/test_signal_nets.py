"""InceptionTime and ResNet1D: shapes, padded = unpadded records, gradients, options, the model
configs, and one tiny training through the CLI."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pydantic import ValidationError

from medpipe.models.nets import InceptionTime, ResNet1D
from medpipe.models.nets.registry import net_class
from medpipe.paths import conf_dir
from test_sequence_nets import _padded_equals_unpadded

from conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_seeded_thread")  # tiny nets: 1 thread is fastest


# small versions of each net (and option mix): fast, and still every code path
NETS = {
    "inception": lambda c: InceptionTime(c, 4, [101], filters=4, depth=3, bottleneck=4),
    "inception_ensemble": lambda c: InceptionTime(
        c, 4, [101], filters=4, depth=4, kernel_sizes=[9, 4], bottleneck=4, ensemble=2
    ),
    "inception_stem": lambda c: InceptionTime(
        c, 4, [101], filters=4, depth=3, bottleneck=0, residual=False, stem_pool=3
    ),
    "resnet1d": lambda c: ResNet1D(c, 4, [101], channels=[6, 8, 8]),
    "resnet1d_stem": lambda c: ResNet1D(
        c, 4, [101], channels=[6, 6], kernel_sizes=[4, 3], stem_pool=2
    ),
}


def _warm_batch_norm(net, channels):
    """Non-trivial running statistics, so eval mode's BatchNorm shifts the padding too."""
    net.train()
    with torch.no_grad():
        net(torch.randn(4, channels, 101) * 2 + 1)
    return net.eval()


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(name, channels):
    net = NETS[name](channels).eval()
    with torch.no_grad():
        for t in (37, 101):
            for batch in (1, 3):
                x = torch.randn(batch, channels, t)
                assert net(x).shape == (batch, 4)
                assert net(x, lengths=None).shape == (batch, 4)
                lengths = torch.tensor([t, 20, 9][:batch])
                assert net(x, lengths).shape == (batch, 4)


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_padded_equals_unpadded(name, channels):
    """A record padded with junk (normalised padding is not zero) gives the unpadded record's
    output, whatever the junk; in a batch too, next to records of other lengths."""
    net = _warm_batch_norm(NETS[name](channels), channels)
    lengths = [37, 101, 1, 64]
    _padded_equals_unpadded(net, lengths, t=101, channels=channels)
    with torch.no_grad():  # a batch of one, and other junk in its padding
        for n in lengths:
            record = torch.randn(1, channels, n)
            alone = net(record)
            one = torch.cat([record, torch.randn(1, channels, 101 - n) * 10 - 5], -1)
            torch.testing.assert_close(net(one, torch.tensor([n])), alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(NETS))
def test_gradients_reach_every_parameter(name):
    net = NETS[name](2).train()
    x = torch.randn(3, 2, 41)
    net(x, torch.tensor([41, 30, 17])).square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_ensemble_members_differ_and_are_averaged():
    from medpipe.models.nets.inception1d import stem

    net = NETS["inception_ensemble"](1).eval()
    a, b = net.members
    assert not torch.equal(a.out.weight, b.out.weight)  # initialised independently
    x, lengths = torch.randn(2, 1, 50), torch.tensor([50, 33])
    with torch.no_grad():
        x_, lengths_, mask = stem(x, lengths, net.stem_pool)
        expected = (a(x_, lengths_, mask) + b(x_, lengths_, mask)) / 2
        torch.testing.assert_close(net(x, lengths), expected)
        assert not torch.allclose(a(x_, lengths_, mask), b(x_, lengths_, mask))


@pytest.mark.parametrize("name", list(NETS))
def test_explain_layer_gives_feature_maps(name):
    net = NETS[name](1).eval()
    layer = net.get_submodule(type(net).explain_layer)
    assert any(m is layer for m in net.modules())
    seen = []
    layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        net(torch.randn(2, 1, 60))
    assert len(seen) == 1 and len(seen[0]) == 3 and seen[0][0] == 2  # (N, C, T'), once


@pytest.mark.parametrize(
    "cls, options, key",
    [
        (InceptionTime, {"depth": 0}, "depth"),
        (InceptionTime, {"kernel_sizes": []}, "kernel_sizes"),
        (InceptionTime, {"ensemble": 0}, "ensemble"),
        (InceptionTime, {"bottleneck": -1}, "bottleneck"),
        (InceptionTime, {"stem_pool": 0}, "stem_pool"),
        (InceptionTime, {"width": 8}, "width"),
        (ResNet1D, {"kernel_sizes": []}, "kernel_sizes"),
        (ResNet1D, {"channels": [64, 0]}, "channels"),
        (ResNet1D, {"dropout": 1.0}, "dropout"),
    ],
)
def test_options_are_checked(cls, options, key):
    with pytest.raises(ValidationError, match=key):
        cls.Options.model_validate(options)
    with pytest.raises(ValueError, match=key):  # the constructor reads the same model
        cls(1, 2, [64], **options)


def test_wrong_layout_is_refused():
    for cls in (InceptionTime, ResNet1D):
        with pytest.raises(ValueError, match="signals"):
            cls(1, 2, [28, 28])
        with pytest.raises(ValueError, match="stem_pool"):
            cls(1, 2, [5], stem_pool=8)


@pytest.mark.parametrize("name", ["inception1d", "resnet1d"])
def test_model_configs_validate_and_build(name):
    cfg = OmegaConf.load(conf_dir() / "model" / f"{name}.yaml")
    assert cfg.name == name and list(cfg.accepts) == ["signal"]
    net_cfg = OmegaConf.to_container(cfg.net)
    cls, problem = net_class(net_cfg.pop("_target_"))
    assert problem is None
    # the file states every option, at its default
    assert cls.Options.model_validate(net_cfg) == cls.Options()
    assert set(net_cfg) == set(cls.Options.model_fields)
    net = instantiate(cfg.net, in_channels=1, num_outputs=2, spatial_shape=[3000], _convert_="all")
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 37)).shape == (1, 2)


@pytest.mark.slow
def test_tiny_training_through_the_cli(tmp_path):
    out = run_cli(
        "train",
        "experiment=ecg_hr_rnn",
        "model=inception1d",
        "~model.net.frame",  # the experiment's RNN option
        "model.net.filters=4",
        "model.net.depth=3",
        "model.net.stem_pool=2",
        "debug=smoke",
        "data.n_train=96",
        "data.n_val=48",
        "data.n_test=48",
        "data.batch_size=32",
        "callbacks.progress_bar=none",
        "log_model=false",
        "evaluation.explain.enabled=false",
        f"paths.root_dir={tmp_path}",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "test/mae" in out.stdout
