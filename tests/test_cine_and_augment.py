"""The synthetic cine dataset (label = direction of change) and MONAI augmentation of volumes,
frame sequences and signals."""

from __future__ import annotations

import numpy as np
import pytest

from medpipe.config import validate
from medpipe.data.augment_ops import on_device
from medpipe.data.sources.cine import SyntheticCineSource, _growing, make_cine
from medpipe.data.transforms import build_transforms
from medpipe.errors import ConfigError

CINE = {
    "name": "synthetic_cine",
    "source": "synthetic_cine",
    "kind": "frames",
    "seed": 3,
    "frames": 8,
    "image_size": 32,
    "n_train": 64,
    "n_val": 32,
    "n_test": 32,
    "noise": 0.08,
}


@pytest.fixture(scope="module")
def cine():
    x, y = make_cine(1000, 8, 32, 0.08, np.random.default_rng(11))
    return x, y


def _bright(x: np.ndarray, threshold: int = 120) -> np.ndarray:
    """Bright-pixel count per frame, (n, T)."""
    return (x[:, 0] > threshold).sum(axis=(2, 3))


# -- cine ------------------------------------------------------------------------------------------
def test_cine_source_layout_and_determinism(tmp_path):
    data = SyntheticCineSource(CINE, str(tmp_path)).load()
    assert (data.kind, data.task, data.classes, data.scale) == (
        "frames",
        "binary",
        ["shrinking", "growing"],
        255.0,
    )
    for split, n in (("train", 64), ("val", 32), ("test", 32)):
        s = data.splits[split]
        assert s.x.shape == (n, 1, 8, 32, 32) and s.x.dtype == np.uint8
        assert s.y.shape == (n,) and s.y.dtype == np.int64
        assert np.bincount(s.y).tolist() == [n // 2, n // 2]
    again = SyntheticCineSource(CINE, str(tmp_path)).load()
    assert np.array_equal(again.splits["train"].x, data.splits["train"].x)
    other = SyntheticCineSource({**CINE, "seed": 4}, str(tmp_path)).load()
    assert not np.array_equal(other.splits["train"].x, data.splits["train"].x)
    # One stream per split: a larger training split leaves validation and test unchanged.
    bigger = SyntheticCineSource({**CINE, "n_train": 80}, str(tmp_path)).load()
    assert np.array_equal(bigger.splits["val"].x, data.splits["val"].x)
    assert np.array_equal(bigger.splits["test"].y, data.splits["test"].y)


def test_shrinking_is_growing_played_backwards():
    x, y = make_cine(40, 6, 32, 0.08, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    assert np.array_equal(rng.permutation(np.arange(40) % 2), y)  # same draws as make_cine
    growing = _growing(40, 6, 32, 0.08, rng)
    assert np.array_equal(x[y == 1, 0], growing[y == 1])
    assert np.array_equal(x[y == 0, 0], growing[y == 0][:, ::-1])


def test_frames_are_alike_in_both_classes(cine):
    x, y = cine
    for stat in (x[:, 0].astype(np.float64).mean(axis=(2, 3)), _bright(x).astype(np.float64)):
        # The whole sequence's per-frame sum: same mean in both classes (within 3 standard errors).
        total = stat.sum(axis=1)
        a, b = total[y == 0], total[y == 1]
        se = np.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(a.mean() - b.mean()) < 3 * se
        # Frame t of a growing sequence is distributed like frame T-1-t of a shrinking one.
        for t in (0, 3, 7):
            a, b = stat[y == 1, t], stat[y == 0, 7 - t]
            se = np.sqrt(a.var() / len(a) + b.var() / len(b))
            assert abs(a.mean() - b.mean()) < 3.5 * se


def test_only_the_order_of_frames_separates_the_classes(cine):
    x, y = cine
    bright = _bright(x)
    order_acc = np.mean((bright[:, -1] > bright[:, 0]) == (y == 1))
    assert order_acc > 0.9
    # The frame average: fit the best threshold on one half, score it on the other.
    avg = bright.mean(axis=1)
    fit, held = slice(0, 500), slice(500, None)
    cuts = np.unique(avg[fit])
    accs = [np.mean((avg[fit] > c) == (y[fit] == 1)) for c in cuts]
    best = cuts[int(np.argmax(accs))]
    sign = 1 if max(accs) >= 0.5 else -1
    held_acc = np.mean(((avg[held] > best) == (y[held] == 1)) == (sign == 1))
    assert abs(held_acc - 0.5) < 0.08


def test_cine_data_config_validates(make_cfg):
    cfg = make_cfg("data=synthetic_cine", "model=resnet3d")
    assert cfg.data.kind == "frames"
    validate(cfg, "train")
    bad = make_cfg("data=synthetic_cine", "model=resnet3d", "data.frames=1", "data.kind=image")
    with pytest.raises(ConfigError) as err:
        validate(bad, "train")
    text = "\n".join(err.value.lines())
    assert "data.frames" in text and "data.kind" in text


# -- augmentation ----------------------------------------------------------------------------------
ALL_KINDS = "model.accepts=[image,volume,signal,frames]"
CASES = {
    "volume_light": (["data=medmnist", "data.flag=adrenalmnist3d"], "volume"),
    "frames_light": (["data=synthetic_cine"], "frames"),
    "signal_light": (["data.kind=signal"], "signal"),
}


def _sample(kind: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if kind == "volume":
        return ((rng.random((1, 28, 28, 28)) > 0.7) * 255).astype(np.uint8)
    if kind == "frames":
        return make_cine(2, 8, 32, 0.08, rng)[0][0]
    t = np.arange(3000) / 300.0
    return (np.sin(2 * np.pi * 1.2 * t) + 0.1 * rng.standard_normal(3000)).astype(np.float32)[None]


@pytest.mark.parametrize("name", sorted(CASES))
def test_augmentation_config_validates_and_runs(name, make_cfg):
    overrides, kind = CASES[name]
    cfg = make_cfg(*overrides, f"augmentation={name}", ALL_KINDS)
    assert cfg.data.kind == kind
    validate(cfg, "train")
    ops = list(cfg.augmentation.train)
    assert not on_device(ops)  # data.loader=auto picks the DataLoader (workers) path
    x = _sample(kind)
    before = x.copy()
    aug = build_transforms(ops, 7, kind, sample_shape=x.shape)
    outs = [aug(x) for _ in range(8)]
    assert np.array_equal(x, before)  # the input is not modified in place
    for out in outs:
        assert out.shape == x.shape and out.dtype == x.dtype
    assert sum(not np.array_equal(out, x) for out in outs) >= 4
    again = build_transforms(ops, 7, kind)
    assert all(np.array_equal(out, again(x)) for out in outs)
    other = build_transforms(ops, 8, kind)
    assert not all(np.array_equal(out, other(x)) for out in outs)
    with pytest.raises(ConfigError, match="data.loader"):
        validate(make_cfg(*overrides, f"augmentation={name}", ALL_KINDS, "data.loader=memory"))


def test_frames_light_never_reverses_time(make_cfg):
    ops = list(make_cfg("data=synthetic_cine", "augmentation=frames_light").augmentation.train)
    rng = np.random.default_rng(1)
    levels = np.linspace(30, 200, 8)[None, :, None, None]
    x = np.clip(levels + rng.normal(0, 20, (1, 8, 32, 32)), 0, 255).astype(np.uint8)
    aug = build_transforms(ops, 0, "frames", sample_shape=x.shape)
    for _ in range(40):
        means = aug(x)[0].astype(np.float64).mean(axis=(1, 2))
        assert np.all(np.diff(means) > 0)


def test_uint8_results_are_rounded_and_clipped():
    x = np.full((1, 4, 4, 4), 250, np.uint8)
    ops = [{"_target_": "monai.transforms.ShiftIntensity", "offset": 20.0}]
    assert build_transforms(ops, 0, "volume")(x).max() == 255
    ops = [{"_target_": "monai.transforms.ShiftIntensity", "offset": -260.4}]
    assert build_transforms(ops, 0, "volume")(x).min() == 0


def test_signal_shift_moves_time_only():
    t = np.sin(np.arange(3000) / 30.0).astype(np.float32)
    x = np.stack([t, 2 * t, 3 * t])
    for mode in ("wrap", "constant"):
        op = {
            "_target_": "monai.transforms.SignalRandShift",
            "boundaries": [0.01, 0.02],
            "mode": mode,
        }
        out = build_transforms([op], 0, "signal")(x)
        assert out.shape == x.shape and out.dtype == np.float32
        assert not np.allclose(out, x)
        # Each lead keeps its own amplitude (MONAI alone rotates leads, or zeroes them all).
        assert np.allclose(np.abs(out).max(axis=1), [1, 2, 3], atol=1e-3)


def test_p_applies_an_entry_with_that_probability():
    x = np.ones((1, 100), np.float32)
    op = {"_target_": "monai.transforms.SignalRandScale", "boundaries": [2.0, 3.0]}
    aug = build_transforms([{**op, "p": 0.3}], 0, "signal")
    changed = np.mean([not np.array_equal(aug(x), x) for _ in range(200)])
    assert 0.2 < changed < 0.4
    assert np.array_equal(build_transforms([{**op, "p": 0.0}], 0, "signal")(x), x)


def test_dataloader_workers_draw_their_own_streams(monkeypatch):
    import torch.utils.data

    ops = [{"_target_": "monai.transforms.SignalRandScale", "boundaries": [0.5, 1.5]}]
    x = np.ones((1, 10), np.float32)

    class Info:
        def __init__(self, i):
            self.id = i

    def draws(worker: int | None) -> list[float]:
        monkeypatch.setattr(
            torch.utils.data, "get_worker_info", lambda: None if worker is None else Info(worker)
        )
        aug = build_transforms(ops, 0, "signal")
        return [float(aug(x)[0, 0]) for _ in range(3)]

    assert draws(0) != draws(1) != draws(None)
    assert draws(1) == draws(1)


def _one_line(err: pytest.ExceptionInfo) -> str:
    lines = err.value.lines()
    assert len(lines) == 1 and "\n" not in lines[0]
    return lines[0]


def test_albumentations_on_volumes_is_refused(make_cfg):
    cfg = make_cfg(
        "data=medmnist", "data.flag=adrenalmnist3d", "model=resnet18", "augmentation=light"
    )
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    lines = err.value.lines()  # one line per entry
    assert len(lines) == len(cfg.augmentation.train)
    assert lines[0].startswith("augmentation.train[0]._target_: albumentations.HorizontalFlip")
    assert "volume" in lines[0] and "monai.transforms" in lines[0] and "\n" not in lines[0]
    with pytest.raises(ConfigError) as err:
        build_transforms(list(cfg.augmentation.train), 0, "volume")
    assert _one_line(err).startswith("augmentation.train[0] (albumentations.HorizontalFlip)")


def test_mixed_libraries_are_refused(make_cfg):
    cfg = make_cfg("augmentation=light")
    ops = [*_plain(cfg)["augmentation"]["train"], {"_target_": "monai.transforms.RandFlip"}]
    with pytest.raises(ConfigError) as err:
        validate({**_plain(cfg), "augmentation": {"name": "mixed", "train": ops}})
    line = _one_line(err)
    assert line.startswith("augmentation.train[3]._target_: monai.transforms.RandFlip")
    assert "mixed with albumentations" in line
    with pytest.raises(ConfigError) as err:
        build_transforms(ops, 0, "image")
    assert _one_line(err).startswith("augmentation.train[3] (monai.transforms.RandFlip)")


def _plain(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ({"_target_": "monai.transforms.RandFlip", "spatial_axs": 1}, "spatial_axs"),
        ({"_target_": "monai.transforms.RandFlipp"}, "RandFlipp"),
        ({"_target_": "monai.transforms.SignalRandScale", "boundaries": [1, 2]}, "list of float"),
        ({"_target_": "monai.transforms.RandFlipd", "keys": ["image"]}, "dictionary transform"),
        ({"_target_": "monai.transforms.RandFlip", "spatial_axis": 1, "prob": 1.0}, "fails on"),
        ({"_target_": "monai.transforms.RandSpatialCrop", "roi_size": [100]}, "shape"),
    ],
)
def test_wrong_monai_entries_name_the_entry(op, expected):
    with pytest.raises(ConfigError) as err:
        build_transforms([{"_target_": "monai.transforms.Identity"}, op], 0, "signal", (1, 300))
    line = _one_line(err)
    assert line.startswith(f"augmentation.train[1] ({op['_target_']}): ")
    assert expected in line


def test_monai_probabilities_are_checked(make_cfg):
    cfg = _plain(make_cfg("data.kind=signal", ALL_KINDS))
    cfg["augmentation"] = {
        "name": "x",
        "train": [{"_target_": "monai.transforms.RandFlip", "prob": 1.5}],
    }
    with pytest.raises(ConfigError, match=r"augmentation.train\[0\].prob: a probability"):
        validate(cfg)
