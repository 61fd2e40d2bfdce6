"""Nets produce the right shapes; one fast_dev_run step per model, per data path and per task."""

from __future__ import annotations

import pytest
import torch

from medpipe.models.nets import LinearClassifier, ResNet, SimpleCNN
from medpipe.pipeline import train

from conftest import SMALL_SYNTHETIC, write_medmnist_npz


@pytest.mark.parametrize(
    "net, x_shape",
    [
        (lambda: SimpleCNN(1, 2, (28, 28)), (1, 1, 28, 28)),
        (lambda: SimpleCNN(3, 7, (64, 64), channels=(8, 16), hidden=0), (5, 3, 64, 64)),
        (lambda: ResNet(1, 2, (28, 28)), (1, 1, 28, 28)),
        (lambda: ResNet(3, 9, (33, 31), stem="imagenet", depth=10), (2, 3, 33, 31)),
        (lambda: ResNet(1, 2, (28, 28, 28), depth=10), (2, 1, 28, 28, 28)),
        (lambda: LinearClassifier(1, 4, (28, 28)), (3, 1, 28, 28)),
    ],
)
def test_net_output_shapes(net, x_shape):
    model = net().eval()
    out = model(torch.zeros(x_shape))
    assert out.shape == (x_shape[0], model(torch.zeros(x_shape)).shape[1])
    assert out.shape[1] in (2, 4, 7, 9)


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


@pytest.mark.parametrize("model", ["cnn", "resnet18", "linear"])
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
