"""On-device batch augmentation does what the albumentations entry with the same parameters does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medpipe.data.batch_augment import BatchAugment
from medpipe.data.transforms import build_albumentations
from medpipe.errors import ConfigError


def _img(n=1, seed=0, size=(28, 28)):
    """Smooth, image-like content (structures a few pixels wide), 30-220."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.standard_normal((n, *size)), sigma=(0, 2, 2))
    x = (x - x.min()) / (x.max() - x.min()) * 190 + 30
    return torch.from_numpy(x.round().astype(np.uint8)[:, None])


def test_flip_with_p_one_and_p_zero():
    x = _img(8)
    flipped = BatchAugment([{"_target_": "albumentations.HorizontalFlip", "p": 1.0}])(x)
    torch.testing.assert_close(flipped, x.float().flip(-1), atol=1e-3, rtol=0)
    kept = BatchAugment([{"_target_": "albumentations.VerticalFlip", "p": 0.0}])(x)
    torch.testing.assert_close(kept, x.float(), atol=1e-3, rtol=0)


def test_identity_affine_leaves_the_image_and_rotation_by_90_degrees_rotates_it():
    x = _img(4)
    same = BatchAugment([{"_target_": "albumentations.Affine", "rotate": [0, 0], "p": 1.0}])(x)
    torch.testing.assert_close(same, x.float(), atol=1e-3, rtol=0)
    rot = BatchAugment([{"_target_": "albumentations.Affine", "rotate": [90, 90], "p": 1.0}])(x)
    # albumentations' positive angle turns the image counter-clockwise on screen (y down)
    expect = torch.rot90(x.float(), k=1, dims=(-2, -1))
    assert (rot - expect).abs()[..., 2:-2, 2:-2].max().item() < 1e-2


def _albumentations_batch(ops, x, seed=0):
    albu = build_albumentations(ops, seed=seed)
    return torch.from_numpy(
        np.stack([albu(x[i].numpy()) for i in range(len(x))]).astype(np.float32)
    )


def _affine(**kw):
    return {"_target_": "albumentations.Affine", "p": 1.0, **kw}


FLIP_H = {"_target_": "albumentations.HorizontalFlip", "p": 1.0}
FLIP_V = {"_target_": "albumentations.VerticalFlip", "p": 1.0}


@pytest.mark.parametrize("size", [(28, 28), (20, 32)])
@pytest.mark.parametrize(
    "ops",
    [
        [_affine(rotate=[30, 30])],
        [_affine(rotate=-25, scale=0.8)],
        [_affine(shear=[10, 10], rotate=[15, 15])],
        [_affine(shear={"x": 12, "y": -6}, scale={"x": 1.2, "y": 0.9})],
        [_affine(translate_px={"x": 3, "y": -2}, rotate=[5, 5])],
        [_affine(translate_percent=0.1, keep_ratio=True, scale=[1.15, 1.15])],
        [_affine(rotate=[40, 40], fill=60)],
        [FLIP_H, _affine(rotate=[30, 30], scale=[1.1, 1.1])],
        [_affine(rotate=[-20, -20], translate_percent=[0.1, 0.1]), FLIP_V],
        [FLIP_V, FLIP_H, _affine(rotate=[10, 10], fill=30), _affine(rotate=[10, 10])],
    ],
    ids=lambda v: (
        "+".join(f"{o['_target_'].split('.')[-1]}{len(o)}" for o in v)
        if isinstance(v, list)
        else "x".join(map(str, v))
    ),
)
def test_geometry_matches_albumentations_pixel_by_pixel(ops, size):
    """Fixed parameters (one-point ranges), so both libraries make the same map: the on-device
    result is albumentations' up to its rounding to uint8 (and fixed-point interpolation)."""
    x = _img(3, size=size)
    ours, theirs = BatchAugment(ops)(x), _albumentations_batch(ops, x)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= 1.0


def test_one_sided_ranges_turn_and_shift_the_way_albumentations_does():
    """rotate [20, 40] and translate_px x in [1, 3]: every image is nearer albumentations' +30
    degrees, 2 pixels right than its mirror (-30 degrees, 2 pixels left)."""
    x = _img(1, seed=3).repeat(64, 1, 1, 1)
    ours = BatchAugment([_affine(rotate=[20, 40], translate_px={"x": [1, 3], "y": 0})], seed=0)(x)
    same = _albumentations_batch([_affine(rotate=30, translate_px={"x": 2, "y": 0})], x[:1])
    mirror = _albumentations_batch([_affine(rotate=-30, translate_px={"x": -2, "y": 0})], x[:1])
    d_same = (ours - same).abs().flatten(1).mean(1)
    d_mirror = (ours - mirror).abs().flatten(1).mean(1)
    assert bool((d_same < d_mirror).all()), (d_same, d_mirror)
    assert len({tuple(v) for v in ours.flatten(1)[:, ::37].tolist()}) > 32  # drawn per image


def test_a_new_image_size_gets_parameters_drawn_for_it():
    """Hole sizes and shifts are drawn in pixels of the image size: a batch of another size must
    not reuse the rows drawn for the first one."""
    op = {
        "_target_": "albumentations.CoarseDropout",
        "num_holes_range": [1, 1],
        "hole_height_range": [0.5, 0.5],
        "hole_width_range": [0.5, 0.5],
        "p": 1.0,
    }
    aug = BatchAugment([op], seed=0)
    big = aug(torch.full((4, 1, 28, 28), 200, dtype=torch.uint8))
    small = aug(torch.full((4, 1, 8, 8), 200, dtype=torch.uint8))
    assert ((big == 0).flatten(1).sum(1) == 14 * 14).all()
    assert ((small == 0).flatten(1).sum(1) == 4 * 4).all()


def test_arguments_without_an_on_device_version_are_refused_and_auto_uses_workers():
    from medpipe.data.augment_ops import device_misfit, on_device
    from medpipe.pipeline import resolve_loader

    fit = _affine(rotate=10, fit_output=True)
    assert device_misfit(fit) == "Affine.fit_output=True"
    assert device_misfit(_affine(rotate=10, interpolation=1, border_mode=0)) is None
    assert device_misfit({"_target_": "albumentations.CoarseDropout", "fill": "random"})
    assert not on_device([FLIP_H, fit]) and on_device([FLIP_H, _affine(rotate=10)])
    assert resolve_loader("auto", [FLIP_H, fit]) == "workers"
    with pytest.raises(ConfigError, match=r"train\[1\] \(albumentations.Affine\) fit_output=True"):
        BatchAugment([FLIP_H, fit])


@pytest.mark.parametrize(
    "sizes",
    [
        {
            "num_holes_range": [2, 2],
            "hole_height_range": [3, 5],
            "hole_width_range": [2, 6],
            "fill": 17,
        },
        {
            "num_holes_range": [1, 1],
            "hole_height_range": [0.1, 0.3],
            "hole_width_range": [0.2, 0.2],
        },
    ],
)
def test_cut_out_area_and_fill_match_albumentations(sizes):
    """Holes of whole pixels, sized as albumentations sizes them (pixels or fractions)."""
    op = {"_target_": "albumentations.CoarseDropout", "p": 1.0, **sizes}
    x = torch.full((800, 1, 28, 28), 200, dtype=torch.uint8)
    fill = float(op.get("fill", 0))
    ours = (BatchAugment([op], seed=0)(x) == fill).flatten(1).sum(1).float()
    theirs = (_albumentations_batch([op], x) == fill).flatten(1).sum(1).float()
    assert abs(ours.mean() - theirs.mean()) < 0.06 * theirs.mean()
    assert abs(ours.std() - theirs.std()) < 0.15 * theirs.std() + 0.5
    assert ours.max() <= theirs.max() + 1e-6 and ours.min() >= theirs.min() - 1e-6


def test_same_seed_same_batch_and_p_is_a_per_sample_coin():
    ops = [
        {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
        {"_target_": "albumentations.GaussNoise", "std_range": [0.05, 0.1], "p": 0.5},
    ]
    x = _img(2000)
    a, b = BatchAugment(ops, seed=1)(x), BatchAugment(ops, seed=1)(x)
    c = BatchAugment(ops, seed=2)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # parameters are drawn in blocks: a batch that crosses a block's end gets fresh rows, the
    # next batch new parameters, and setting the seed (as the data module does) restarts it
    aug = BatchAugment(ops, seed=4, block=1000)
    first, second = aug(x[:600]), aug(x[:600])
    assert not torch.equal(first, second)
    aug.seed = 4
    assert torch.equal(aug(x[:600]), first)
    moved = (BatchAugment(ops[:1], seed=3)(x) - x.float()).abs().flatten(1).amax(1) > 0.5
    flipped = moved.float().mean().item()
    assert 0.45 < flipped < 0.55


@pytest.mark.parametrize(
    "op",
    [
        {
            "_target_": "albumentations.RandomBrightnessContrast",
            "brightness_limit": 0.2,
            "contrast_limit": 0.2,
            "p": 1.0,
        },
        {"_target_": "albumentations.RandomGamma", "gamma_limit": [70, 130], "p": 1.0},
        {"_target_": "albumentations.GaussNoise", "std_range": [0.05, 0.1], "p": 1.0},
        {
            "_target_": "albumentations.Affine",
            "rotate": [-20, 20],
            "scale": [0.8, 1.2],
            "translate_percent": [-0.1, 0.1],
            "p": 1.0,
        },
        {
            "_target_": "albumentations.CoarseDropout",
            "num_holes_range": [1, 3],
            "hole_height_range": [0.1, 0.2],
            "hole_width_range": [0.1, 0.2],
            "p": 1.0,
        },
    ],
)
def test_statistics_match_albumentations_with_the_same_parameters(op):
    """Per-image mean and spread after augmentation: same distribution for both implementations."""
    n = 600
    x = _img(1, seed=5).repeat(n, 1, 1, 1)
    ours = BatchAugment([op], seed=0)(x).flatten(1)
    albu = build_albumentations([op], seed=0)
    theirs = torch.from_numpy(
        np.stack([albu(x[i].numpy()) for i in range(n)]).astype(np.float32)
    ).flatten(1)
    for stat in (lambda t: t.mean(1), lambda t: t.std(1)):
        a, b = stat(ours), stat(theirs)
        assert abs(a.mean() - b.mean()) < 0.05 * b.mean().abs() + 1.0, (op, a.mean(), b.mean())
        assert abs(a.std() - b.std()) < 0.25 * b.std() + 0.5, (op, a.std(), b.std())


def test_a_transform_without_a_device_version_is_named():
    with pytest.raises(
        ConfigError, match=r"augmentation.train\[1\] \(albumentations.ElasticTransform\):"
    ):
        BatchAugment(
            [
                {"_target_": "albumentations.HorizontalFlip"},
                {"_target_": "albumentations.ElasticTransform"},
            ]
        )
