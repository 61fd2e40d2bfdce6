"""On-device batch augmentation does what the albumentations entry with the same parameters does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medpipe.data.batch_augment import BatchAugment
from medpipe.data.transforms import build_albumentations
from medpipe.errors import ConfigError


def _img(n=1, seed=0):
    """Smooth, image-like content (structures a few pixels wide), 30-220."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.standard_normal((n, 28, 28)), sigma=(0, 2, 2))
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
    expect = torch.rot90(x.float(), k=1, dims=(-2, -1))
    err = (rot - expect).abs()[..., 2:-2, 2:-2]
    err_other = (rot - torch.rot90(x.float(), k=-1, dims=(-2, -1))).abs()[..., 2:-2, 2:-2]
    assert min(err.max().item(), err_other.max().item()) < 1e-2


def test_same_seed_same_batch_and_p_is_a_per_sample_coin():
    ops = [
        {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
        {"_target_": "albumentations.GaussNoise", "std_range": [0.05, 0.1], "p": 0.5},
    ]
    x = _img(2000)
    a, b = BatchAugment(ops, seed=1)(x), BatchAugment(ops, seed=1)(x)
    c = BatchAugment(ops, seed=2)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
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
        ConfigError, match=r"augmentation.train\[1\] \(albumentations.ElasticTransform\)"
    ):
        BatchAugment(
            [
                {"_target_": "albumentations.HorizontalFlip"},
                {"_target_": "albumentations.ElasticTransform"},
            ]
        )
