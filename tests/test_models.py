"""Nets produce the right shapes; one fast_dev_run step per model, per data path and per task."""

from __future__ import annotations

import pytest
import torch

from medpipe.models.nets import LinearClassifier, ResNet, SimpleCNN
from medpipe.pipeline import train

from conftest import SMALL_SYNTHETIC, write_medmnist_npz


@pytest.mark.parametrize(
    "net, x_shape, width",
    [
        (lambda: SimpleCNN(1, 2, (28, 28)), (1, 1, 28, 28), 2),
        (lambda: SimpleCNN(3, 7, (64, 64), channels=[8, 16], hidden=0), (5, 3, 64, 64), 7),
        (lambda: ResNet(1, 2, (28, 28)), (1, 1, 28, 28), 2),
        (lambda: ResNet(3, 9, (33, 31), stem="imagenet", depth=10), (2, 3, 33, 31), 9),
        (lambda: ResNet(1, 2, (28, 28, 28), depth=10), (2, 1, 28, 28, 28), 2),
        (lambda: LinearClassifier(1, 4, (28, 28)), (3, 1, 28, 28), 4),
    ],
)
def test_net_output_shapes(net, x_shape, width):
    out = net().eval()(torch.zeros(x_shape))
    assert out.shape == (x_shape[0], width)  # one row per sample, `num_outputs` columns


@pytest.mark.parametrize(
    "labels, n_classes, overrides, width",
    [
        ("n1", 4, [], 4),  # multiclass: one logit per class
        ("multilabel", 3, [], 3),  # multilabel: one logit per label
        ("n1", 2, [], 2),  # binary with cross-entropy: two logits
        ("n1", 2, ["model.loss=bce"], 1),  # binary with BCE: one logit
    ],
)
def test_built_task_has_one_output_per_class_of_the_data(
    make_cfg, tmp_path, labels, n_classes, overrides, width
):
    """The width comes from the prepared data, not from the config; the exported model too."""
    from medpipe.config import validate
    from medpipe.data.prepare import prepare_from_config
    from medpipe.data.processed import read_meta
    from medpipe.pipeline import build_task

    path = write_medmnist_npz(tmp_path / "d.npz", labels=labels, n_classes=n_classes)
    c = validate(
        make_cfg("data=medmnist", "data.flag=custom", f"data.path={path}", "model=cnn", *overrides)
    )
    meta = read_meta(prepare_from_config(c))
    assert len(meta.classes) == n_classes
    task = build_task(c, meta).eval()
    x = torch.randint(0, 256, (5, *meta.sample_shape), dtype=torch.uint8)
    with torch.no_grad():
        assert task(x).shape == (5, width)
        probs = task.inference_model()(x.float())
    assert probs.shape == (5, width)  # probabilities, one column per output


def test_class_weights_change_the_loss_as_weighted_cross_entropy(make_cfg, tmp_path):
    from medpipe.config import validate
    from medpipe.data.prepare import prepare_from_config
    from medpipe.data.processed import read_meta
    from medpipe.pipeline import build_task

    logits = torch.tensor([[2.0, -1.0], [0.5, 0.2], [-1.0, 1.5], [0.1, 0.3]])
    y = torch.tensor([0, 1, 1, 0])
    c = validate(make_cfg(*SMALL_SYNTHETIC))
    meta = read_meta(prepare_from_config(c))
    plain = build_task(c, meta).loss(logits, y)
    c["model"]["class_weights"] = [1.0, 3.0]
    weighted = build_task(c, meta).loss(logits, y)
    expected = torch.nn.functional.cross_entropy(logits, y, weight=torch.tensor([1.0, 3.0]))
    assert not torch.isclose(weighted, plain)
    torch.testing.assert_close(weighted, expected)
    c["model"]["class_weights"] = "balanced"  # n / (k * count) over the training split
    counts = torch.tensor(meta.class_counts["train"], dtype=torch.float32)
    balanced = build_task(c, meta).loss(logits, y)
    w = counts.sum() / (2 * counts)
    torch.testing.assert_close(balanced, torch.nn.functional.cross_entropy(logits, y, weight=w))


def test_resnet18_small_stem_keeps_28px_resolution():
    net = ResNet(1, 2, (28, 28)).net
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    seen = {}
    net.layer1.register_forward_hook(lambda m, i, o: seen.update(layer1=o.shape))
    net(torch.zeros(1, 1, 28, 28))
    assert seen["layer1"][-2:] == (28, 28), "the stem must not downsample at 28 px"
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(11.17e6, rel=0.01)


def _fdr(make_cfg, *overrides, synthetic=True):
    cfg = make_cfg(
        *(SMALL_SYNTHETIC if synthetic else []),
        "debug=fdr",
        "logger=none",
        "callbacks.progress_bar=none",
        *overrides,
    )
    return train(cfg)


@pytest.mark.parametrize(
    "model", ["cnn", pytest.param("resnet18", marks=pytest.mark.slow), "linear"]
)
def test_fast_dev_run_for_each_model(make_cfg, model, tmp_path):
    _fdr(make_cfg, f"model={model}")
    assert (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.loader=memory"],
        ["data.loader=workers"],
        ["augmentation=light"],  # auto: batched on the device
        ["augmentation=strong", "data.loader=memory"],
        ["augmentation=light", "data.loader=workers"],  # albumentations per sample
        ["augmentation=strong", "data.loader=workers", "data.num_workers=1"],
    ],
)
def test_fast_dev_run_for_each_data_path(make_cfg, overrides, tmp_path):
    _fdr(make_cfg, *overrides)
    assert (tmp_path / "out" / "plots" / "roc.png").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.loss=bce", "model.class_weights=balanced"],
        [
            "model.class_weights=[1.0,3.0]",
            "model.label_smoothing=0.1",
            "optimizer=sgd",
            "scheduler=cosine",
        ],
        ["optimizer=adamw", "scheduler=step", "data.normalize=unit"],
    ],
)
def test_fast_dev_run_for_losses_and_optimisers(make_cfg, overrides):
    _fdr(make_cfg, *overrides)


@pytest.mark.parametrize(
    "labels, n_classes, task", [("n1", 4, "multiclass"), ("multilabel", 3, "multilabel")]
)
def test_multiclass_and_multilabel_data_train_and_report(
    make_cfg, tmp_path, labels, n_classes, task
):
    path = write_medmnist_npz(tmp_path / "d.npz", labels=labels, n_classes=n_classes)
    _fdr(
        make_cfg,
        "data=medmnist",
        "data.flag=custom",
        f"data.path={path}",
        "data.batch_size=16",
        synthetic=False,
    )
    import json

    report = json.loads((tmp_path / "out" / "per_class_report.json").read_text())
    assert report["task"] == task and len(report["classes"]) == n_classes
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {"test/auroc", "test/f1_macro", "test/balanced_acc", "test/f1_0"} <= set(metrics)


# -- speed options -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, layout",
    [
        ([*SMALL_SYNTHETIC, "model=resnet18", "model.net.depth=10"], torch.channels_last),
        (
            ["data=medmnist", "data.flag=mine3d", "data.kind=volume", "data.path={npz3d}"]
            + ["model=resnet3d"],
            torch.channels_last_3d,
        ),
    ],
)
def test_channels_last_changes_the_layout_not_the_result(make_cfg, tmp_path, overrides, layout):
    from medpipe.config import validate
    from medpipe.data.prepare import prepare_dataset
    from medpipe.data.processed import read_meta
    from medpipe.pipeline import build_task

    npz3d = write_medmnist_npz(tmp_path / "adrenal.npz", shape=(28, 28, 28), n_classes=2)
    overrides = [o.format(npz3d=npz3d) for o in overrides]
    plain = make_cfg(*overrides)
    folder = prepare_dataset(plain.data, plain.paths.processed_dir, plain.paths.raw_dir)
    meta = read_meta(folder)
    a = build_task(validate(plain), meta).eval()
    b = build_task(validate(make_cfg(*overrides, "channels_last=true")), meta).eval()
    b.load_state_dict(a.state_dict())
    convs = [m.weight for m in b.net.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    assert convs and all(w.is_contiguous(memory_format=layout) for w in convs)
    x = torch.randint(0, 256, (3, *meta.sample_shape), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), atol=1e-4, rtol=1e-4)


def test_channels_last_on_signals_is_refused(make_cfg):
    from medpipe.config import validate
    from medpipe.errors import ConfigError

    cfg = make_cfg("experiment=ecg_hr_rnn", "channels_last=true")
    with pytest.raises(ConfigError, match=r"channels_last: a memory format for 2D images"):
        validate(cfg, "train")
    with pytest.raises(ConfigError, match=r"compile: "):
        validate(make_cfg("compile=fastest"), "train")


@pytest.mark.slow
def test_compiled_training_checkpoints_the_plain_net(tmp_path):
    """compile=true trains through torch.compile (inductor's C++ backend on a CPU); the checkpoint
    has the plain net's parameter names, so evaluate (which does not compile) reproduces it."""
    import json

    from conftest import evaluate_cli, run_cli

    out = run_cli(
        "train",
        *SMALL_SYNTHETIC,
        "trainer.max_epochs=2",
        "compile=true",
        "channels_last=true",
        "logger=none",
        "log_model=false",
        f"paths.root_dir={tmp_path}",
        f"paths.output_dir={tmp_path / 'out'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = tmp_path / "out" / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert not any("_orig_mod" in k for k in state) and any(k.startswith("net.") for k in state)
    trained = json.loads((tmp_path / "out" / "metrics.json").read_text())
    evaluated = evaluate_cli(ckpt, tmp_path)
    assert evaluated["test/auroc"] == pytest.approx(trained["test/auroc"], abs=1e-3)
