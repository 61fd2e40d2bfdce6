"""Sequence networks: shapes, padded = unpadded records, gradients to every parameter, the model
configs, and a tiny check that an RNN learns order."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from medpipe.models.nets import (
    CRNN1D,
    CRNN2D,
    RNN,
    LinearClassifier,
    ResNet,
    RNNHead,
    SimpleCNN,
    SliceCNN,
)
from medpipe.models.nets.crnn import conv_out_length
from medpipe.models.nets.registry import net_class
from medpipe.models.nets.rnn import length_mask
from medpipe.paths import conf_dir

pytestmark = pytest.mark.usefixtures("one_seeded_thread")  # tiny nets: 1 thread is fastest


def _small_rnn(**kw):
    return {"hidden_size": 8, "num_layers": 2, **kw}


# -- shapes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 3])
def test_signal_nets_shapes(batch):
    t = 37
    x = torch.randn(batch, 2, t)
    lengths = torch.tensor([t, 20, 9][:batch])
    nets = [
        RNN(2, 5, [t], hidden_size=8, pooling="mean"),
        RNN(2, 5, [t], cell="gru", hidden_size=8, input_proj=4, bidirectional=False),
        CRNN1D(2, 5, [t], channels=[4, 6], kernel_size=5, pool=[2, 3], rnn=_small_rnn()),
    ]
    for net in nets:
        net.eval()
        assert net(x).shape == (batch, 5)
        assert net(x, lengths).shape == (batch, 5)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_volume_nets_shapes(axis):
    x = torch.randn(2, 1, 27, 27, 27)
    for net in [
        CRNN2D(1, 3, [27, 27, 27], channels=[4, 8, 8], axis=axis, rnn=_small_rnn()),
        SliceCNN(1, 3, [27, 27, 27], channels=[4, 8, 8], feature_dim=6, axis=axis),
    ]:
        assert net(x).shape == (2, 3)
        net.eval()
        assert net(x[:1]).shape == (1, 3)


def test_frame_nets_shapes():
    x = torch.randn(1, 1, 5, 31, 29)  # one sequence of 5 frames of 31 x 29
    for net in [
        CRNN2D(1, 2, [5, 31, 29], channels=[4, 8, 8], feature_dim=6, rnn=_small_rnn()),
        SliceCNN(1, 2, [5, 31, 29], channels=[4, 8, 8]),
    ]:
        net.eval()
        assert net(x).shape == (1, 2)
        assert net(x, torch.tensor([3])).shape == (1, 2)


def test_existing_nets_accept_lengths_none():
    image, volume = torch.randn(1, 1, 27, 29), torch.randn(1, 1, 9, 11, 13)
    for net, x in [
        (SimpleCNN(1, 3, [27, 29], channels=[4, 8], hidden=8), image),
        (LinearClassifier(1, 3, [27, 29]), image),
        (ResNet(1, 3, [9, 11, 13], depth=10), volume),
    ]:
        net.eval()
        assert net(x, None).shape == (1, 3)
        assert net(x, lengths=None).shape == (1, 3)


def test_wrong_layout_is_refused():
    with pytest.raises(ValueError, match="signals"):
        RNN(1, 2, [28, 28])
    with pytest.raises(ValueError, match="volumes"):
        CRNN2D(1, 2, [28, 28])
    with pytest.raises(ValueError, match="axis"):
        SliceCNN(1, 2, [8, 8, 8], axis=3)
    with pytest.raises(ValueError, match="pool"):
        CRNN1D(1, 2, [7], pool=2, channels=[4, 4, 4])
    with pytest.raises(ValueError, match="pooling"):
        RNN(1, 2, [7], pooling="max")


# -- padding ---------------------------------------------------------------------------------------
def _padded_equals_unpadded(net, lengths, t=41, channels=2):
    """A batch padded to t with junk (normalised padding is not zero) vs each record alone."""
    net.eval()
    records = [torch.randn(1, channels, n) for n in lengths]
    batch = torch.randn(len(lengths), channels, t) * 3 + 1
    for i, r in enumerate(records):
        batch[i, :, : r.shape[-1]] = r[0]
    with torch.no_grad():
        padded = net(batch, torch.tensor(lengths))
        for i, r in enumerate(records):
            alone = net(r)
            alone_with_length = net(r, torch.tensor([r.shape[-1]]))
            torch.testing.assert_close(padded[i], alone[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(alone_with_length, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_rnn_padded_equals_unpadded(cell, bidirectional, pooling):
    net = RNN(2, 3, [41], cell=cell, hidden_size=8, bidirectional=bidirectional, pooling=pooling)
    _padded_equals_unpadded(net, [41, 17, 1, 30])


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_rnn_reading_several_samples_per_step_padded_equals_unpadded(pooling):
    """frame=5: lengths that are not multiples of 5 end in a partial step, which must not see
    the (junk) padding."""
    net = RNN(2, 3, [41], hidden_size=8, pooling=pooling, frame=5)
    _padded_equals_unpadded(net, [41, 17, 1, 30, 23])
    assert net(torch.randn(1, 2, 13)).shape == (1, 3)
    assert net.head.layers[0][0].input_size == 2 * 5  # one step reads 5 samples of 2 channels


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrence_matches_packed_torch_rnn(cell):
    """The per-layer, per-direction stack is nn.LSTM/GRU(num_layers=2, bidirectional) on a packed
    sequence, weights copied."""
    head = RNNHead(3, 2, {"cell": cell, "hidden_size": 5, "num_layers": 2, "pooling": "mean"})
    head.eval()
    ref = getattr(torch.nn, cell.upper())(3, 5, 2, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for i, directions in enumerate(head.layers):
            for d, rnn in enumerate(directions):
                for name, p in rnn.named_parameters():
                    getattr(ref, name.replace("_l0", f"_l{i}" + ("_reverse" if d else ""))).copy_(p)
        x, lengths = torch.randn(3, 15, 3), torch.tensor([15, 4, 9])
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        expected, _ = pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=15)
        mask = length_mask(lengths, 15)[..., None]
        got = head._recur(x, lengths).masked_fill(~mask, 0.0)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(head._recur(x, None), ref(x)[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_crnn1d_padded_equals_unpadded(pooling):
    # strides 2 * 3 * 2 = 12; lengths not multiples of any of them
    net = CRNN1D(
        2,
        3,
        [41],
        channels=[4, 6, 5],
        kernel_size=5,
        pool=[2, 3, 2],
        rnn=_small_rnn(pooling=pooling),
    )
    # give BatchNorm non-trivial running statistics (eval mode uses them)
    net.train()
    net(torch.randn(4, 2, 41))
    _padded_equals_unpadded(net, [41, 13, 25, 35, 12])


def test_pool_lengths_follow_the_layers():
    lengths = torch.tensor([1, 2, 7, 12, 13])
    assert conv_out_length(lengths, 2, 2).tolist() == [1, 1, 3, 6, 6]
    assert conv_out_length(lengths, 5, 1, padding=2).tolist() == lengths.tolist()
    assert (
        torch.nn.MaxPool1d(3)(torch.zeros(1, 1, 13)).shape[-1]
        == conv_out_length(torch.tensor([13]), 3, 3).item()
    )


def test_slice_lengths_average_only_valid_slices():
    net = SliceCNN(1, 2, [6, 9, 9], channels=[4]).eval()
    x = torch.randn(2, 1, 6, 9, 9)
    with torch.no_grad():
        masked = net(x, torch.tensor([6, 4]))
        torch.testing.assert_close(masked[1], net(x[1:, :, :4])[0])
        torch.testing.assert_close(masked[0], net(x[:1])[0])


# -- gradients -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: RNN(2, 3, [23], pooling="attention", input_proj=4, hidden_size=8), (3, 2, 23)),
        (lambda: RNN(2, 3, [23], cell="gru", pooling="last", hidden_size=8), (3, 2, 23)),
        (lambda: RNN(2, 3, [23], pooling="mean", hidden_size=8), (3, 2, 23)),
        (lambda: CRNN1D(2, 3, [23], channels=[4, 4], rnn=_small_rnn()), (3, 2, 23)),
        (lambda: CRNN2D(1, 3, [5, 11, 9], channels=[4, 8], feature_dim=6), (2, 1, 5, 11, 9)),
        (lambda: SliceCNN(1, 3, [5, 11, 9], channels=[4, 8], feature_dim=6), (2, 1, 5, 11, 9)),
    ],
)
def test_gradients_reach_every_parameter(make, shape):
    net = make().train()
    x = torch.randn(*shape)
    lengths = torch.tensor([shape[2], max(1, shape[2] - 3)] + [shape[2]] * (shape[0] - 2))
    net(x, lengths).square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


# -- configs ---------------------------------------------------------------------------------------
CONFIGS = {
    "rnn": [3000],
    "gru": [3000],
    "crnn1d": [3000],
    "crnn2d": [28, 28, 28],
    "cnn2p5d": [28, 28, 28],
    "resnet3d": [28, 28, 28],
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_model_configs_validate_and_build(name):
    cfg = OmegaConf.load(conf_dir() / "model" / f"{name}.yaml")
    assert cfg.name == name
    net_cfg = OmegaConf.to_container(cfg.net)
    cls, problem = net_class(net_cfg.pop("_target_"))
    assert problem is None
    cls.Options.model_validate(net_cfg)
    shape = CONFIGS[name]
    assert ("signal" in cfg.accepts) == (len(shape) == 1)
    if name == "resnet3d":
        return  # built in test_existing_nets_accept_lengths_none; 33M parameters
    net = instantiate(
        cfg.net, in_channels=1, num_outputs=2, spatial_shape=shape, _convert_="all"
    ).eval()
    with torch.no_grad():
        small = [37] if len(shape) == 1 else [5, 9, 7]
        assert net(torch.randn(1, 1, *small)).shape == (1, 2)


def test_net_options_are_checked():
    from medpipe.models.nets import CRNN1D, CRNN2D

    with pytest.raises(ValueError, match="pool"):
        CRNN1D.Options.model_validate({"channels": [4, 4], "pool": [2]})
    with pytest.raises(ValueError, match="cell"):
        CRNN2D.Options.model_validate({"rnn": {"cell": "rnn"}})
    with pytest.raises(ValueError, match="pool"):  # the constructor reads the same model
        CRNN1D(1, 2, [64], channels=[4, 4], pool=[2])


# -- learning --------------------------------------------------------------------------------------
def test_rnn_learns_order():
    """sign(x[0] - x[-1]): not a function of the sequence's mean, easy for a GRU reading in order."""
    g = torch.Generator().manual_seed(0)
    x, x_new = torch.randn(256, 1, 20, generator=g), torch.randn(512, 1, 20, generator=g)
    y, y_new = (x[:, 0, 0] > x[:, 0, -1]).long(), (x_new[:, 0, 0] > x_new[:, 0, -1]).long()
    torch.manual_seed(0)
    net = RNN(1, 2, [20], cell="gru", hidden_size=16, num_layers=1, pooling="last")
    mean_net = torch.nn.Linear(1, 2)  # logistic regression on the mean
    opt = torch.optim.Adam([*net.parameters(), *mean_net.parameters()], lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss = loss + torch.nn.functional.cross_entropy(mean_net(x.mean(-1)), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (net(x_new).argmax(1) == y_new).float().mean().item()
        mean_acc = (mean_net(x_new.mean(-1)).argmax(1) == y_new).float().mean().item()
    assert acc > 0.85 and mean_acc < 0.65  # held-out; about 0.9 and 0.5 with seeds 0-3


def test_slice_context_reads_neighbouring_slices_as_channels():
    from medpipe.models.nets.crnn import SliceEncoder, encode_slices

    x = torch.arange(2 * 1 * 5 * 3 * 3, dtype=torch.float32).view(2, 1, 5, 3, 3)
    seen = []

    class Record(torch.nn.Module):
        def forward(self, batch):
            seen.append(batch)
            return batch.flatten(1)

    encode_slices(Record(), x, axis=0, context=1)
    slices = seen[0].view(2, 5, 3, 3, 3)  # (N, S, 2k+1, H, W)
    assert torch.equal(slices[0, 2, 0], x[0, 0, 1]) and torch.equal(slices[0, 2, 2], x[0, 0, 3])
    assert torch.equal(slices[1, 0, 1], x[1, 0, 0]) and not slices[1, 0, 0].any()  # zero padding
    for cls in (CRNN2D, SliceCNN):
        net = cls(1, 2, (7, 9, 11), channels=[4], context=2, axis=1)
        assert isinstance(net.slices.encoder, SliceEncoder)
        assert net(torch.randn(1, 1, 7, 9, 11)).shape == (1, 2)


def test_every_registered_explain_layer_is_a_module_with_spatial_maps():
    """(N, C, *spatial) maps with the input's spatial rank; a net folding slices into the batch
    (`slice_axis`) gives (N * S, C, h, w) (the contract in models/nets/registry.py)."""
    from medpipe.models.nets import NETS

    shapes = {1: (64,), 2: (28, 28), 3: (8, 16, 16)}
    checked = set()
    for name, cls in NETS.items():
        if cls.explain_layer is None or not name.startswith("medpipe."):
            continue
        for dims in (1, 2, 3):  # every spatial rank the net is built for
            try:
                net = cls(1, 2, shapes[dims]).eval()
            except ValueError:
                continue
            seen: dict = {}
            net.get_submodule(cls.explain_layer).register_forward_hook(
                lambda m, i, o, seen=seen: seen.update(shape=o.shape)
            )
            with torch.no_grad():
                net(torch.zeros(2, 1, *shapes[dims]))
            axis = getattr(net, "slice_axis", None)
            if axis is None:  # (N, C, *spatial): maps to explain
                assert len(seen["shape"]) == 2 + dims and seen["shape"][0] == 2, name
            else:  # slices folded into the batch: (N * S, C, h, w)
                assert len(seen["shape"]) == 1 + dims, name
                assert seen["shape"][0] == 2 * shapes[dims][axis], name
            checked.add(name.rsplit(".", 1)[-1])
    assert {"SimpleCNN", "ResNet", "CRNN1D", "CRNN2D", "SliceCNN"} <= checked
