"""Explanations: the maps point where the evidence is, change when the weights do, and are checked
against the synthetic lesions' masks; `python -m medpipe.explain` writes them for a checkpoint."""

from __future__ import annotations

import hashlib
import json
from functools import partial

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation

from medpipe.config import validate
from medpipe.data.processed import (
    DatasetMeta,
    Split,
    pooled_split,
    read_meta,
    read_split,
    write_processed,
)
from medpipe.data.sources.synthetic import make_lesion_images
from medpipe.evaluation.explain import (
    explain_batch,
    explain_run,
    pointing_game,
    predict_probabilities,
    randomised_copy,
    rank_correlation,
)
from medpipe.models.nets import CRNN2D, RNN, ResNet, SimpleCNN
from medpipe.tasks.classification import ClassificationTask

from conftest import TINY, compose_config, run_cli


# -- helpers ----------------------------------------------------------------------------------------
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny nets train fastest on one thread (and are not slowed down by a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_task(net, kind, shape, task="binary", classes=("no", "yes"), loss="cross_entropy"):
    """A classification task around `net` for samples of `shape` (C, ...), stored in [0, 1]."""
    meta = DatasetMeta(
        name="toy",
        task=task,
        kind=kind,
        classes=list(classes),
        channels=shape[0],
        sample_shape=list(shape),
        sizes={},
        class_counts={"train": [1] * len(classes)},
        mean=[0.0] * shape[0],
        std=[1.0] * shape[0],
        scale=1.0,
        fingerprint="",
    )
    return ClassificationTask(
        net,
        meta,
        {"loss": loss},
        normalize="none",
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        scheduler={"name": "none"},
        max_epochs=1,
    )


def fit(task, x, y, steps=150, lr=3e-3, batch=64, seed=0):
    """A few Adam steps on minibatches; the task is left in eval mode."""
    torch.manual_seed(seed)
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    opt = torch.optim.Adam(task.parameters(), lr=lr)
    task.train()
    for _ in range(steps):
        j = torch.randint(0, len(x), (batch,))
        loss = task.loss(task(x[j]), y[j])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return task.eval()


def accuracy(task, x, y) -> float:
    return float(((predict_probabilities(task, x) >= 0.5) == y).mean())


PLUS = np.zeros((5, 5), np.float32)
PLUS[2, :] = PLUS[:, 2] = 1.0


def square_images(n, seed):
    """16x16 noise; in either class, thin bright crosses in some of the other three quadrants (no
    information); for label 1, a filled bright 4x4 square in the top-left quadrant: only that
    quadrant decides the label. Also the square's mask."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0.0, 0.3, (n, 1, 16, 16)).astype(np.float32)
    mask = np.zeros((n, 16, 16), np.uint8)
    r0, c0 = rng.integers(0, 4, (2, 4, n))  # corner within each quadrant
    crossed = rng.random((4, n)) < 0.6
    for i in range(n):
        if y[i]:
            r, c = r0[0, i], c0[0, i]
            x[i, 0, r : r + 4, c : c + 4] += 2.0
            mask[i, r : r + 4, c : c + 4] = 1
        for q in (1, 2, 3):
            if crossed[q, i]:
                r, c = r0[q, i] + 8 * (q // 2), c0[q, i] + 8 * (q % 2)
                x[i, 0, r : r + 5, c : c + 5] += 2.0 * PLUS
    return x, y.astype(np.int64), mask


def cube_volumes(n, seed, shape=(8, 12, 12)):
    """Noise volumes; label 1 holds a bright 2x4x4 cube at a random place (its mask), 0 none."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    y = rng.integers(0, 2, n)
    x = rng.normal(0.0, 0.3, (n, 1, *shape)).astype(np.float32)
    mask = np.zeros((n, *shape), np.uint8)
    for i in np.flatnonzero(y):
        a, b, c = rng.integers(0, d - 1), rng.integers(0, h - 3), rng.integers(0, w - 3)
        x[i, 0, a : a + 2, b : b + 4, c : c + 4] += 1.5
        mask[i, a : a + 2, b : b + 4, c : c + 4] = 1
    return x, y.astype(np.int64), mask


@pytest.fixture(scope="module")
def square_cnn():
    """A SimpleCNN trained for a few seconds on square_images, and held-out data."""
    torch.manual_seed(0)
    net = SimpleCNN(1, 2, (16, 16), channels=[8, 16], hidden=32, dropout=0.0)
    task = make_task(net, "image", (1, 16, 16))
    x, y, _ = square_images(1024, 0)
    fit(task, x, y, steps=200)
    xt, yt, mt = square_images(256, 1)
    assert accuracy(task, xt, yt) > 0.9  # the premise: it learnt where the square is
    return task, xt, yt, mt


# -- the maps point at the evidence --------------------------------------------------------------
@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_grad_cam_points_at_the_region_that_decides_the_label(square_cnn, method):
    task, x, y, mask = square_cnn
    pos = y == 1
    maps = explain_batch(task, x[pos], target_class=1, method=method)
    assert maps.shape == (pos.sum(), 16, 16) and (maps >= 0).all()
    peak_rows, peak_cols = np.unravel_index(maps.reshape(len(maps), -1).argmax(1), (16, 16))
    in_quadrant = (peak_rows < 8) & (peak_cols < 8)
    assert in_quadrant.mean() > 0.85
    hits, share = pointing_game(maps, mask[pos])
    assert hits > 0.6 and share > 0.1  # the square is 1/16 of the image


def test_a_randomised_copy_gives_other_maps_that_point_worse(square_cnn):
    task, x, y, mask = square_cnn
    before = {k: v.clone() for k, v in task.state_dict().items()}
    rng_state = torch.get_rng_state()
    twin = randomised_copy(task, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global stream is untouched
    for k, v in task.state_dict().items():
        assert torch.equal(v, before[k]), k  # the original keeps its weights
    changed = [
        not torch.equal(p, q)
        for p, q in zip(task.net.parameters(), twin.net.parameters(), strict=True)
    ]
    assert all(changed)  # every weight re-initialised
    pos = y == 1
    trained = explain_batch(task, x[pos], target_class=1)
    random = explain_batch(twin, x[pos], target_class=1)
    again = explain_batch(randomised_copy(task, seed=3), x[pos][:8], target_class=1)
    np.testing.assert_allclose(again, random[:8], rtol=1e-5, atol=1e-6)  # seeded
    # over a few random copies (one can happen to light up the bright square too, being its
    # brightest object), the maps point worse and share little of the trained maps' order
    hits, corr = [], []
    for seed in range(3):
        maps = explain_batch(randomised_copy(task, seed), x[pos], target_class=1)
        hits.append(pointing_game(maps, mask[pos])[0])
        corr.append(np.nanmean(rank_correlation(trained, maps)))
    assert np.mean(hits) < pointing_game(trained, mask[pos])[0] - 0.3
    assert np.mean(corr) < 0.5


def test_rank_correlation_of_maps():
    rng = np.random.default_rng(0)
    a = rng.random((2, 5, 5))
    assert rank_correlation(a, 3 * a + 1) == pytest.approx([1.0, 1.0])  # order, not scale
    assert rank_correlation(a, -a) == pytest.approx([-1.0, -1.0])
    flat = np.zeros((2, 5, 5))
    assert rank_correlation(a, flat).tolist() == [0.0, 0.0]  # an empty map orders nothing
    assert np.isnan(rank_correlation(flat, flat)).all()


def test_a_binary_net_with_one_logit_explains_class_0_by_the_negated_logit():
    torch.manual_seed(0)
    net = SimpleCNN(1, 1, (16, 16), channels=[4], hidden=0, dropout=0.0)
    task = make_task(net, "image", (1, 16, 16), loss="bce")
    x = np.random.default_rng(0).normal(size=(6, 1, 16, 16)).astype(np.float32)
    ig1 = explain_batch(task, x, target_class=1, method="integrated_gradients")
    ig0 = explain_batch(task, x, target_class=0, method="integrated_gradients")
    np.testing.assert_allclose(ig0, -ig1, rtol=1e-4, atol=1e-6)
    predicted = explain_batch(task, x, method="integrated_gradients")  # the predicted class
    cls = (predict_probabilities(task, x) >= 0.5).astype(int)
    np.testing.assert_allclose(predicted, np.where(cls[:, None, None] == 1, ig1, ig0), atol=1e-6)


def test_3d_grad_cam_has_the_volume_shape_and_its_mass_on_the_lesion():
    """A 3D ResNet's layer4 sees 12^3 volumes as 2x2x2 cells: its map peaks in the lesion's
    octant."""
    rng = np.random.default_rng(0)

    def volumes(n):
        y = rng.integers(0, 2, n)
        x = rng.normal(0.0, 0.3, (n, 1, 12, 12, 12)).astype(np.float32)
        octant = rng.integers(0, 2, (n, 3))
        corner = 6 * octant + rng.integers(0, 4, (n, 3))  # a 3^3 cube inside its octant
        for i in np.flatnonzero(y):
            d, h, w = corner[i]
            x[i, 0, d : d + 3, h : h + 3, w : w + 3] += 1.5
        return x, y.astype(np.int64), octant

    torch.manual_seed(0)
    net = ResNet(1, 2, (12, 12, 12), depth=10, widen_factor=0.25)
    task = make_task(net, "volume", (1, 12, 12, 12))
    x, y, _ = volumes(384)
    fit(task, x, y, steps=50, batch=32)
    xt, yt, octant = volumes(64)
    assert accuracy(task, xt, yt) > 0.9
    pos = yt == 1
    maps = explain_batch(task, xt[pos], target_class=1)
    assert maps.shape == (pos.sum(), 12, 12, 12)
    peak = np.stack(np.unravel_index(maps.reshape(len(maps), -1).argmax(1), (12, 12, 12)), 1)
    assert ((peak // 6) == octant[pos]).all(1).mean() > 0.8


@pytest.mark.parametrize("axis", [0, 1])
def test_folded_slices_are_unfolded_into_volume_maps(axis):
    """CRNN2D folds the slices along `axis` into the batch; its maps come back as (N, D, H, W) and
    the most attributed slices are the lesion's."""
    torch.manual_seed(0)
    net = CRNN2D(
        1, 2, (8, 12, 12), channels=[8, 16], axis=axis, rnn={"hidden_size": 16, "num_layers": 1}
    )
    task = make_task(net, "volume", (1, 8, 12, 12))
    x, y, _ = cube_volumes(512, 0)
    fit(task, x, y, steps=120)
    xt, yt, mt = cube_volumes(64, 1)
    assert accuracy(task, xt, yt) > 0.9
    pos = yt == 1
    other = tuple(a for a in (1, 2, 3) if a != 1 + axis)
    lesion_slices = mt[pos].any(other)  # (n, S): the slices along `axis` holding the cube
    for method in ("gradcam", "gradcampp"):
        maps = explain_batch(task, xt[pos], target_class=1, method=method)
        assert maps.shape == (pos.sum(), 8, 12, 12)
        per_slice = np.clip(maps, 0, None).sum(other)  # (n, S)
        assert lesion_slices[np.arange(pos.sum()), per_slice.argmax(1)].mean() > 0.8, method
        share = (per_slice * lesion_slices).sum(1) / per_slice.sum(1)
        assert np.median(share) > 0.6, method  # the cube's slices: a quarter or a third
        if axis == 0:  # within a 12x12 slice the peak is on the cube too (8-pixel-high slices
            # of axis 1 leave the encoder's maps 4 rows: its peak can sit beside a cube there)
            assert pointing_game(maps, mt[pos])[0] > 0.8, method


def test_integrated_gradients_attribute_the_informative_time_window():
    """A GRU learns that a bump in steps 30-44 means class 1; its attribution lies there."""
    rng = np.random.default_rng(0)

    def signals(n):
        y = rng.integers(0, 2, n)
        x = rng.normal(0.0, 0.3, (n, 2, 60)).astype(np.float32)
        x[y == 1, :, 30:45] += 1.2
        return x, y.astype(np.int64)

    torch.manual_seed(0)
    net = RNN(2, 2, (60,), hidden_size=16, num_layers=1, bidirectional=False, pooling="mean")
    task = make_task(net, "signal", (2, 60))
    x, y = signals(512)
    fit(task, x, y, steps=150, lr=1e-2)
    xt, yt = signals(64)
    assert accuracy(task, xt, yt) > 0.9
    pos = yt == 1
    for method in ("auto", "occlusion"):  # auto: integrated gradients (no conv layer)
        maps = explain_batch(task, xt[pos], target_class=1, method=method)
        assert maps.shape == (pos.sum(), 60)
        window = np.clip(maps[:, 30:45], 0, None).sum(1) / np.clip(maps, 0, None).sum(1)
        assert np.median(window) > 0.7, method  # the window is a quarter of the record
    lengths = np.array([60, 40, 20])  # nothing beyond a padded record's end
    short = explain_batch(task, xt[:3], lengths)
    assert (short[1, 40:] == 0).all() and (short[2, 20:] == 0).all() and short[2, :20].any()


def test_pointing_game_counts_hits_and_shares_on_positives_only():
    maps = np.zeros((3, 4, 4))
    masks = np.zeros((3, 4, 4), np.uint8)
    masks[0, :2, :2] = 1
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0  # peak inside, 3/4 of the mass inside
    masks[1, 2:, 2:] = 1
    maps[1, 0, 0] = 1.0  # peak outside, nothing inside
    maps[2] = 5.0  # no mask: not counted
    hit, share = pointing_game(maps, masks)
    assert hit == pytest.approx(0.5) and share == pytest.approx(0.375)
    assert pointing_game(np.zeros((1, 4, 4)), masks[:1]) == (0.0, 0.0)  # points nowhere
    assert np.isnan(pointing_game(maps[2:], masks[2:])[0])


# -- the synthetic lesions carry their masks ------------------------------------------------------
def test_synthetic_images_are_unchanged_and_their_masks_cover_the_lesions():
    x, y, mask = make_lesion_images(64, 28, 0.5, 0.08, np.random.default_rng([0, 2]), True)
    # the images the generator gave before masks existed (sha256 of these bytes, then)
    digest = "d34d973bc91fc04372c1cbbbe22f97c12870ffc6f29f77aa9ab35fd74b9d7188"
    assert hashlib.sha256(x.tobytes()).hexdigest() == digest
    x2, y2 = make_lesion_images(64, 28, 0.5, 0.08, np.random.default_rng([0, 2]))
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert mask.shape == (64, 28, 28) and mask.dtype == np.uint8
    area = mask.reshape(64, -1).sum(1)
    assert (area[y == 0] == 0).all()
    # a disc of radius 2 sigma, sigma in [1.3, 1.9]: 4 pi sigma^2 pixels, about 21 to 45
    assert (area[y == 1] >= 15).all() and (area[y == 1] <= 50).all()
    # the lesion is a bright spot: inside its mask brighter than in a 3-pixel ring around it
    x, y, mask = make_lesion_images(200, 28, 0.5, 0.08, np.random.default_rng(3), True)
    brighter = []
    for i in np.flatnonzero(y):
        inside = mask[i].astype(bool)
        ring = binary_dilation(inside, iterations=3) & ~inside
        brighter.append(x[i, 0][inside].mean() > x[i, 0][ring].mean())
    assert np.mean(brighter) > 0.95


def test_processed_splits_keep_masks_and_ids(tmp_path):
    rng = np.random.default_rng(0)

    def split(n, with_extra=True):
        return Split(
            rng.integers(0, 255, (n, 1, 4, 4)).astype(np.uint8),
            rng.integers(0, 2, n),
            mask=(rng.random((n, 4, 4)) < 0.2).astype(np.uint8) if with_extra else None,
            ids=np.array([f"r{i}" for i in range(n)]) if with_extra else None,
        )

    meta = DatasetMeta(
        "t", "binary", "image", ["a", "b"], 1, [1, 4, 4], {}, {}, [0.0], [1.0], 255.0, ""
    )
    splits = {"train": split(5), "val": split(3), "test": split(2)}
    folder = write_processed(tmp_path / "with", splits, meta)
    test = read_split(folder, "test")
    assert np.array_equal(test.mask, splits["test"].mask) and test.ids.tolist() == ["r0", "r1"]
    pooled = pooled_split(folder)
    assert pooled.mask.shape == (10, 4, 4) and len(pooled.ids) == 10
    assert np.array_equal(pooled.take([5, 6, 7]).mask, splits["val"].mask)
    plain = {k: Split(s.x, s.y) for k, s in splits.items()}
    bare = write_processed(tmp_path / "without", plain, meta)
    assert read_split(bare, "test").mask is None and pooled_split(bare).ids is None
    assert read_meta(folder).content_sha256 != read_meta(bare).content_sha256


# -- a run's explanations ----------------------------------------------------------------------
def test_explain_run_writes_its_figures_and_the_pointing_game(square_cnn, tmp_path):
    task, x, y, mask = square_cnn
    probs = predict_probabilities(task, x)
    metrics, paths = explain_run(task, Split(x, y, mask=mask), probs, tmp_path, n=8)
    assert set(paths) == {"explanations", "pointing_game"}
    assert all(p.is_file() and p.stat().st_size > 10_000 for p in paths.values())
    assert paths["explanations"] == tmp_path / "plots" / "explanations.png"
    # the checks on every positive (fewer than max_samples), trained vs randomised with `seed`
    pos = y == 1
    trained = explain_batch(task, x[pos], target_class=1)
    random = explain_batch(randomised_copy(task, 0), x[pos], target_class=1)
    hit, share = pointing_game(trained, mask[pos])
    hit_random, share_random = pointing_game(random, mask[pos])
    assert metrics["test/pointing_game"] == pytest.approx(hit) and hit > hit_random + 0.3
    assert metrics["test/pointing_game_random"] == pytest.approx(hit_random)
    assert metrics["test/attribution_in_lesion"] == pytest.approx(share)
    assert metrics["test/attribution_in_lesion_random"] == pytest.approx(share_random)
    corr = np.nanmean(rank_correlation(trained, random))
    assert metrics["test/explanation_rank_corr_random"] == pytest.approx(corr, nan_ok=True)
    # without masks: the figure, and the sanity check on the figure's samples
    metrics, paths = explain_run(task, Split(x, y), probs, tmp_path / "bare", n=8)
    assert set(paths) == {"explanations"} and set(metrics) == {"test/explanation_rank_corr_random"}


@pytest.mark.parametrize("kind", ["volume", "signal"])
def test_explain_run_draws_volumes_and_signals_of_any_class_count(kind, tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if kind == "volume":
        shape, net = (1, 6, 10, 10), CRNN2D(1, 3, (6, 10, 10), channels=[4])
        task = make_task(net, kind, shape, "multiclass", ("a", "b", "c"))
        y = rng.integers(0, 3, 30)
    else:
        shape, net = (2, 50), RNN(2, 3, (50,), hidden_size=8, num_layers=1)
        task = make_task(net, kind, shape, "multilabel", ("a", "b", "c"))
        y = (rng.random((30, 3)) < 0.5).astype(np.float32)
    x = rng.normal(size=(30, *shape)).astype(np.float32)
    lengths = rng.integers(20, 51, 30) if kind == "signal" else None
    split = Split(x, y, lengths=lengths)
    probs = predict_probabilities(task, x, lengths)
    metrics, paths = explain_run(task, split, probs, tmp_path, n=6, threshold=0.4)
    assert paths["explanations"].is_file() and "test/explanation_rank_corr_random" in metrics


def test_regression_has_nothing_to_explain_in_a_run(tmp_path):
    from medpipe.tasks.regression import RegressionTask

    meta = DatasetMeta("r", "regression", "signal", [], 1, [1, 20], {}, {}, [0.0], [1.0], 1.0, "")
    task = RegressionTask(
        RNN(1, 1, (20,), hidden_size=4, num_layers=1),
        meta,
        {},
        normalize="none",
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        scheduler={"name": "none"},
        max_epochs=1,
    )
    x = np.zeros((4, 1, 20), np.float32)
    assert explain_run(task, Split(x, np.zeros(4, np.float32)), np.zeros(4), tmp_path) == ({}, {})
    assert not (tmp_path / "plots").exists()


# -- python -m medpipe.explain ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    out = run_cli(
        "train", *TINY, "logger=none", f"paths.root_dir={root}", f"paths.output_dir={root / 'run'}"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return root, root / "run" / "checkpoints" / "best.ckpt"


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_explain_command_writes_figures_and_pointing_game(tiny_checkpoint):
    root, ckpt = tiny_checkpoint
    out_dir = root / "explained"
    out = run_cli(
        "explain", f"ckpt_path={ckpt}", f"paths.root_dir={root}", f"output_dir={out_dir}", "n=8"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (out_dir / "plots" / "explanations.png").is_file()
    assert (out_dir / "plots" / "pointing_game.png").is_file()  # synthetic lesions have masks
    metrics = json.loads((out_dir / "explanations.json").read_text())
    assert {"test/pointing_game", "test/pointing_game_random"} <= set(metrics)
    assert f"outputs: {out_dir}" in out.stdout


def test_explain_inputs_of_the_wrong_shape_is_one_line_naming_the_file(tiny_checkpoint, tmp_path):
    root, ckpt = tiny_checkpoint
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 1, 20, 20), np.uint8))
    out = run_cli("explain", f"ckpt_path={ckpt}", f"paths.root_dir={root}", f"inputs={bad}")
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [
        f"medpipe: error: inputs: {bad}: samples of shape (5, 1, 20, 20); the checkpoint "
        "expects (N, 1, 28, 28) (image, channels first, stored format)"
    ]


def test_explain_inputs_of_the_right_shape_are_explained(tiny_checkpoint, tmp_path):
    from medpipe.explaining import explain

    root, ckpt = tiny_checkpoint
    good = tmp_path / "good.npy"
    x, _ = make_lesion_images(6, 28, 0.5, 0.08, np.random.default_rng(5))
    np.save(good, x)
    cfg = compose_config(
        root, [f"ckpt_path={ckpt}", f"inputs={good}", "n=4"], config_name="explain"
    )
    c = validate(cfg, "explain")
    c["output_dir"] = str(tmp_path / "out")
    metrics = explain(c)
    assert (tmp_path / "out" / "plots" / "explanations.png").is_file()
    assert set(metrics) == {"inputs/explanation_rank_corr_random"}  # no labels, no masks
