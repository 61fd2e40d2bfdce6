"""The conditional GAN task kind: its nets, its quality measures (FID, KID, memorisation), a real
training through the command line into MLflow, class conditioning that a classifier of the real
data recognises, and the sampling API (`medpipe.tasks.gan.load_generator`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medpipe.errors import ConfigError, DataError
from medpipe.evaluation.gan_quality import (
    frechet_distance,
    kernel_distance,
    memorised_share,
    nearest_distances,
)
from medpipe.models.nets import ConditionalGAN

from conftest import PNEUMONIA_NPZ, TINY, needs_shared_data, run_cli


# -- the nets --------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels, side", [(1, 28), (3, 28), (1, 64), (3, 64)])
def test_generator_makes_images_of_the_data_shape_in_tanh_range(channels, side):
    net = ConditionalGAN(channels, 3, (side, side), z_dim=16, g_width=8, d_width=8).eval()
    z, y = torch.randn(5, 16), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        x = net.generator(z, y)
        scores = net(x)  # the net contract: one score per class
        own = net.discriminator(x, y)
    assert x.shape == (5, channels, side, side)
    assert x.min() >= -1 and x.max() <= 1
    assert scores.shape == (5, 3)
    torch.testing.assert_close(own, scores[torch.arange(5), y])  # column c is D(x, c)


def test_class_changes_the_generated_image_and_the_embedding_discriminator_reads_it():
    net = ConditionalGAN(1, 2, (28, 28), conditioning="embedding", spectral_norm=False).eval()
    z = torch.randn(4, net.z_dim)
    with torch.no_grad():
        a, b = net.generator(z, torch.zeros(4)), net.generator(z, torch.ones(4))
        scores = net(a)
    assert (a - b).abs().max() > 1e-3  # same noise, other class: another image
    assert scores.shape == (4, 2) and not torch.equal(scores[:, 0], scores[:, 1])


def test_sides_that_are_not_multiples_of_four_are_refused():
    with pytest.raises(ValueError, match="multiples of 4"):
        ConditionalGAN(1, 2, (30, 30))


# -- quality measures ------------------------------------------------------------------------------
def test_fid_is_zero_for_a_distribution_against_itself_and_the_squared_shift_of_a_shifted_one():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 8)) @ rng.normal(size=(8, 8))
    assert abs(frechet_distance(a, a)) < 1e-8
    assert frechet_distance(a, a + 0.5) == pytest.approx(8 * 0.25, rel=1e-6)
    # against the textbook formula with scipy's matrix square root, on two different spreads
    b = rng.normal(size=(1500, 8)) * np.linspace(0.5, 2, 8) + 1
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b - 2 * sqrtm(s_a @ s_b).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a, b) > 10 * frechet_distance(a, a[::-1] + 0.01)


def test_kid_is_unbiased_about_zero_for_one_distribution_and_positive_for_another():
    rng = np.random.default_rng(1)
    same = [
        kernel_distance(rng.normal(size=(300, 16)), rng.normal(size=(300, 16)), 5, 200, s)
        for s in range(20)
    ]
    # an unbiased estimate of 0 is negative about as often as positive, and small
    assert min(same) < 0 < max(same)
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same)) + 1e-3
    shifted = kernel_distance(rng.normal(size=(300, 16)), rng.normal(0.5, 1, (300, 16)), 5, 200)
    assert shifted > 10 * max(abs(v) for v in same)


def _blobs(n: int, seed: int) -> np.ndarray:
    """Images of one smooth random bright blob each, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    cy, cx = rng.uniform(6, 22, (2, n, 1, 1))
    r = rng.uniform(3, 7, (n, 1, 1))
    x = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2)) + rng.normal(0, 0.05, (n, 28, 28))
    return x.clip(0, 1)[:, None]


def test_memorised_share_is_one_for_copies_of_training_images_and_zero_for_noise():
    train, test = _blobs(300, 0), _blobs(100, 1)
    copies = train[np.random.default_rng(2).choice(300, 80)]
    noise = np.random.default_rng(3).uniform(0, 1, (80, 1, 28, 28))
    share, threshold = memorised_share(copies, train, test)
    assert share == 1.0 and threshold > 0
    assert memorised_share(noise, train, test)[0] == 0.0
    # fresh samples of the same distribution: about the 5 % the threshold lets through
    assert memorised_share(_blobs(400, 4), train, test)[0] < 0.2
    assert nearest_distances(copies, train).max() < 1e-5 < threshold / 100  # round-off only


# -- configuration -------------------------------------------------------------------------------
def _meta(shape=(1, 28, 28), task="binary"):
    from medpipe.data.processed import DatasetMeta

    return DatasetMeta(
        name="toy",
        task=task,
        kind="image",
        classes=["a", "b"],
        channels=shape[0],
        sample_shape=list(shape),
        sizes={"train": 10, "val": 4, "test": 4},
        class_counts={"train": [5, 5], "val": [2, 2], "test": [2, 2]},
        mean=[0.5] * shape[0],
        std=[0.2] * shape[0],
        scale=255.0,
        fingerprint="x",
    )


def test_the_gan_kind_is_chosen_by_name_only_and_its_options_are_checked(make_cfg):
    from omegaconf import OmegaConf

    from medpipe.building import build_task
    from medpipe.checks import check_run
    from medpipe.tasks.kinds import choose_kind

    assert choose_kind("auto", "binary")[0].name == "classification"  # auto never picks gan
    c = OmegaConf.to_container(make_cfg("task_kind=gan", "model=gan"), resolve=True)
    c, kind = check_run(c, _meta())
    assert kind.name == "gan" and c["monitor"] == "val/fid" and c["monitor_mode"] == "min"

    def problems(*overrides, meta=None):
        c = OmegaConf.to_container(make_cfg("task_kind=gan", "model=gan", *overrides), resolve=True)
        with pytest.raises(ConfigError) as err:
            check_run(c, meta or _meta())
        return err.value.lines()

    (line,) = problems("model.loss=least_squares")
    assert line.startswith("model.loss: 'least_squares'") and "hinge" in line
    (line,) = problems("model.eval.feature_ckpt=nowhere.ckpt")
    assert line.startswith("model.eval.feature_ckpt: file not found")
    (line,) = problems(meta=_meta((1, 30, 30)))
    assert "multiples of 4" in line
    # a classifier's net cannot be a GAN: refused when the task is built, before any run starts
    cfg = make_cfg("task_kind=gan", "model=cnn", "model.loss=hinge")
    c = OmegaConf.to_container(cfg, resolve=True)
    with pytest.raises(ConfigError, match=r"^model.net._target_: task_kind gan .*SimpleCNN"):
        build_task(c, _meta())


@pytest.mark.parametrize(
    "overrides",
    [
        # every loss, D steps per G step, every DiffAugment op, no EMA, a schedule for both nets
        [
            "model.loss=wgan_gp",
            "model.d_steps=2",
            "model.diffaugment=[brightness,contrast,flip,translation,cutout]",
            "model.diffaugment_p=0.5",
            "model.ema_decay=0",
            "scheduler=cosine",
        ],
        ["model.loss=non_saturating", "model.net.conditioning=embedding", "optimizer=sgd"],
    ],
)
def test_each_loss_and_option_trains_a_batch_and_is_evaluated(make_cfg, tmp_path, overrides):
    from medpipe.pipeline import train

    cfg = make_cfg(
        "task_kind=gan",
        "model=gan",
        "debug=fdr",
        "trainer.fast_dev_run=2",  # two batches: the generator steps once with d_steps=2
        "logger=none",
        "callbacks.progress_bar=none",
        "data.n_train=128",
        "data.n_val=64",
        "data.n_test=64",
        "data.batch_size=32",
        "model.net.g_width=8",
        "model.net.d_width=8",
        "model.eval.kid_subsets=2",
        *overrides,
    )
    train(cfg)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert all(np.isfinite(metrics[f"gan/{k}"]) for k in ("fid", "kid", "fid_real_floor"))


# -- a real training through the command line, into MLflow -----------------------------------------
@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_a_gan_trains_on_synthetic_lesions_into_a_finished_mlflow_run(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    out = run_cli(
        "train",
        "task_kind=gan",
        "model=gan",
        f"paths.root_dir={tmp_path}",
        *[o for o in TINY if not o.startswith(("trainer.max_epochs", "log_model"))],
        "trainer.max_epochs=2",
        "data.batch_size=64",
        "model.net.g_width=16",
        "model.net.d_width=16",
        "model.eval.feature_epochs=1",
        "model.eval.kid_subsets=5",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'logs' / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("medpipe").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["medpipe.task_kind"] == "gan"
    for key in ("train/d_loss", "train/g_loss", "val/fid"):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == [0, 1], key  # once per epoch
        assert all(np.isfinite(m.value) for m in history)
    for key in ("gan/fid", "gan/kid", "gan/fid_real_floor", "gan/class_acc"):
        assert np.isfinite(run.data.metrics[key]), key
    assert 0 <= run.data.metrics["gan/memorised_share"] <= 1
    images = [f.path for f in client.list_artifacts(run.info.run_id, "images")]
    for step in (0, 1):  # a grid per epoch, stepped like the metrics
        assert any(p.startswith(f"images/samples+step+{step}+") for p in images)
    plots = [f.path for f in client.list_artifacts(run.info.run_id, "plots")]
    assert "plots/samples.png" in plots
    # the exported generator: class and noise in one tensor, images on the stored scale out
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    with torch.no_grad():
        x = model(torch.cat([torch.tensor([[0.0], [1.0], [1.0]]), torch.randn(3, 64)], 1))
    assert x.shape == (3, 1, 28, 28)
    assert x.min() >= 0 and x.max() <= 255 and torch.equal(x, x.round())
    # the sampling API reads the run's logged checkpoint
    from medpipe.tasks.gan import load_generator

    bundle = load_generator(f"runs:/{run.info.run_id}", tracking_uri=uri)
    (local,) = (tmp_path / "logs" / "runs").rglob("best.ckpt")
    assert bundle.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    assert bundle.classes == ["no lesion", "lesion"] and bundle.dtype == np.uint8


# -- class conditioning, the feature checkpoint and the sampling API --------------------------------
def _dark_and_bright(path: Path, n: int = 384) -> Path:
    """Class 0: dark images (mean 50), class 1: bright ones (mean 190), with texture."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, size in (("train", n), ("val", 128), ("test", 128)):
        y = rng.integers(0, 2, size).astype(np.uint8)
        mean = np.where(y == 1, 190.0, 50.0)[:, None, None]
        x = np.clip(rng.normal(mean, 25, (size, 28, 28)), 0, 255).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None]
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def dark_bright_runs(tmp_path_factory):
    """A classifier and then a GAN trained on dark-vs-bright images, in-process, without MLflow;
    the GAN reads the classifier's checkpoint for its features."""
    from medpipe.pipeline import train

    from conftest import compose_config

    root = tmp_path_factory.mktemp("dark_bright")
    npz = _dark_and_bright(root / "dark_bright.npz")
    data = ["data=medmnist", "data.flag=dark_bright", f"data.path={npz}", "logger=none"]
    quiet = ["callbacks.progress_bar=none", "log_model=false"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clf_cfg = compose_config(
            root / "clf",
            [
                *data,
                *quiet,
                "trainer.max_epochs=2",
                "data.batch_size=32",
                "model.net.channels=[8,16]",
                "model.net.hidden=32",
                "evaluation.bootstrap.n=0",
                "evaluation.explain.enabled=false",
            ],
        )
        train(clf_cfg)
        clf_ckpt = root / "clf" / "out" / "checkpoints" / "best.ckpt"
        gan_cfg = compose_config(
            root / "gan",
            [
                *data,
                *quiet,
                "task_kind=gan",
                "model=gan",
                "trainer.max_epochs=4",
                "trainer.num_sanity_val_steps=0",
                "data.batch_size=32",
                "optimizer.betas=[0.5,0.999]",
                "model.lr_g=1e-3",
                "model.lr_d=1e-3",
                "model.net.g_width=16",
                "model.net.d_width=16",
                f"model.eval.feature_ckpt={clf_ckpt}",
                "model.eval.kid_subsets=5",
            ],
        )
        train(gan_cfg)
    finally:
        torch.set_num_threads(threads)
    out = root / "gan" / "out"
    return {
        "clf_ckpt": clf_ckpt,
        "gan_ckpt": out / "checkpoints" / "best.ckpt",
        "metrics": json.loads((out / "metrics.json").read_text()),
        "out": out,
    }


def test_conditioning_makes_images_the_real_classifier_assigns_to_their_class(dark_bright_runs):
    m = dark_bright_runs["metrics"]
    assert m["gan/class_acc_real"] > 0.95  # the feature classifier from the checkpoint works
    assert m["gan/class_acc"] > 0.9, m  # and recognises the generated images' classes
    assert m["gan/class_acc_0"] > 0.8 and m["gan/class_acc_1"] > 0.8
    assert (dark_bright_runs["out"] / "plots" / "samples.png").stat().st_size > 1000


def test_sampled_images_have_the_data_shape_dtype_and_range_and_follow_their_class(
    dark_bright_runs,
):
    from medpipe.tasks.gan import load_generator

    bundle = load_generator(str(dark_bright_runs["gan_ckpt"]))
    assert bundle.classes == ["0", "1"]  # a MedMNIST-layout file of one's own: classes by index
    assert bundle.sample_shape == (1, 28, 28) and bundle.dtype == np.uint8
    assert len(bundle.sha256) == 64
    x, y = bundle.sample({0: 40, 1: 60}, seed=7)
    assert x.shape == (100, 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert list(y) == [0] * 40 + [1] * 60
    assert x.max() > 100 and x.min() < 100  # the stored 0-255 scale, not [-1, 1] or [0, 1]
    # an independent classifier of the real data: the mean brightness, cut halfway (120)
    predicted = (x.reshape(100, -1).mean(1) > 120).astype(np.int64)
    assert (predicted == y).mean() > 0.9
    again, _ = bundle.sample({0: 40, 1: 60}, seed=7)
    other, _ = bundle.sample({0: 40, 1: 60}, seed=8)
    assert np.array_equal(x, again) and not np.array_equal(x, other)
    assert bundle.sample(3, seed=0)[0].shape == (6, 1, 28, 28)  # an int: that many per class


def test_load_generator_refuses_a_classifier_checkpoint_in_one_line(dark_bright_runs):
    from medpipe.tasks.gan import load_generator

    ckpt = dark_bright_runs["clf_ckpt"]
    with pytest.raises(DataError) as err:
        load_generator(str(ckpt))
    message = str(err.value)
    assert str(ckpt) in message and "not a GAN checkpoint" in message and "\n" not in message


@pytest.mark.slow
@needs_shared_data
def test_pneumonia_gan_makes_recognisable_new_x_rays_of_each_class(tmp_path):
    """The issue's experiment on the real PneumoniaMNIST (3-10 minutes on 2 cores)."""
    out = run_cli(
        "train",
        "experiment=pneumonia_gan",
        f"data.path={PNEUMONIA_NPZ}",
        f"paths.root_dir={tmp_path}",
        "callbacks.progress_bar=none",
        timeout=1200,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (path,) = (tmp_path / "logs" / "runs").rglob("metrics.json")
    m = json.loads(path.read_text())
    assert m["gan/class_acc"] > 0.9  # conditioning: the real-data classifier agrees
    assert m["gan/fid"] < 3 * m["gan/fid_real_floor"]
    assert m["gan/memorised_share"] < 0.05  # no more near-copies than fresh real images have
