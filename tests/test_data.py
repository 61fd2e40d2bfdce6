"""Sources, the processed format and the DataModule's two loading paths, on real and generated files."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading

import numpy as np
import pytest

from medpipe.data.prepare import prepare_dataset
from medpipe.data.processed import read_meta, read_split, sha256_file
from medpipe.data.sources.synthetic import make_lesion_images
from medpipe.errors import DataError

from conftest import PNEUMONIA_NPZ, needs_shared_data, write_medmnist_npz

SYNTH = {
    "name": "synthetic_lesions",
    "source": "synthetic_lesions",
    "kind": "image",
    "seed": 0,
    "image_size": 28,
    "n_train": 200,
    "n_val": 60,
    "n_test": 60,
    "prevalence": 0.5,
    "noise": 0.08,
}


def medmnist_cfg(**kw):
    return {
        "name": "pneumoniamnist",
        "source": "medmnist",
        "kind": "image",
        "flag": "pneumoniamnist",
        "size": 28,
        "path": None,
        "mirror": None,
        "download": True,
        "verify_md5": True,
        "url": None,
        **kw,
    }


def test_synthetic_lesions_are_deterministic_from_the_seed(tmp_path):
    a = prepare_dataset(SYNTH, tmp_path / "a", tmp_path / "raw")
    b = prepare_dataset(SYNTH, tmp_path / "b", tmp_path / "raw")
    c = prepare_dataset({**SYNTH, "seed": 1}, tmp_path / "c", tmp_path / "raw")
    assert read_meta(a).content_sha256 == read_meta(b).content_sha256
    assert read_meta(a).content_sha256 != read_meta(c).content_sha256
    x = read_split(a, "train").x
    assert x.dtype == np.uint8 and x.shape == (200, 1, 28, 28)


def test_synthetic_lesions_defeat_a_linear_model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    x, y = make_lesion_images(3000, 28, 0.5, 0.08, np.random.default_rng([0, 0]))
    xt, yt = make_lesion_images(1000, 28, 0.5, 0.08, np.random.default_rng([0, 2]))
    flat = lambda a: a.reshape(len(a), -1) / 255.0  # noqa: E731
    auc = roc_auc_score(
        yt, LogisticRegression(C=0.1, max_iter=3000).fit(flat(x), y).predict_proba(flat(xt))[:, 1]
    )
    assert auc < 0.6, f"a linear model reaches AUC {auc:.3f}: the task leaks a linear cue"
    assert 0.4 < y.mean() < 0.6
    # Mean brightness carries no label information either.
    assert roc_auc_score(yt, xt.reshape(len(xt), -1).mean(1)) < 0.6


@needs_shared_data
def test_prepare_reads_the_real_pneumoniamnist_npz(tmp_path):
    folder = prepare_dataset(
        medmnist_cfg(path=str(PNEUMONIA_NPZ)), tmp_path / "p", tmp_path / "raw"
    )
    meta = read_meta(folder)
    assert meta.sizes == {"train": 4708, "val": 524, "test": 624}
    assert meta.class_counts["train"] == [1214, 3494]
    assert meta.class_counts["test"] == [234, 390]
    assert (
        meta.classes == ["normal", "pneumonia"] and meta.task == "binary" and meta.kind == "image"
    )
    assert meta.sample_shape == [1, 28, 28] and meta.scale == 255.0
    assert meta.source["file_sha256"] == sha256_file(PNEUMONIA_NPZ)
    test = read_split(folder, "test")
    raw = np.load(PNEUMONIA_NPZ)
    np.testing.assert_array_equal(test.x[:, 0], raw["test_images"])
    np.testing.assert_array_equal(test.y, raw["test_labels"][:, 0])


def test_labels_shaped_n_or_n1_give_the_same_processed_labels(tmp_path):
    p1 = write_medmnist_npz(tmp_path / "n1.npz", labels="n1")
    p0 = write_medmnist_npz(tmp_path / "n.npz", labels="n")
    own = {"name": "mine", "flag": "mine"}  # a file of its own, not the catalogue's 4708 images
    a = read_split(
        prepare_dataset(medmnist_cfg(path=str(p1), **own), tmp_path / "a", tmp_path / "raw"),
        "train",
    )
    b = read_split(
        prepare_dataset(medmnist_cfg(path=str(p0), **own), tmp_path / "b", tmp_path / "raw"),
        "train",
    )
    assert a.y.shape == b.y.shape == (40,) and a.y.dtype == np.int64
    np.testing.assert_array_equal(a.y, b.y)


def test_unknown_flag_with_a_path_infers_multiclass_and_multilabel(tmp_path):
    mc = write_medmnist_npz(tmp_path / "mc.npz", n_classes=4)
    ml = write_medmnist_npz(tmp_path / "ml.npz", labels="multilabel", n_classes=3)
    m1 = read_meta(
        prepare_dataset(
            medmnist_cfg(name="mc", flag="mine", path=str(mc)), tmp_path / "p", tmp_path / "r"
        )
    )
    m2 = read_meta(
        prepare_dataset(
            medmnist_cfg(name="ml", flag="mine", path=str(ml)), tmp_path / "p", tmp_path / "r"
        )
    )
    assert (m1.task, len(m1.classes)) == ("multiclass", 4)
    assert (m2.task, len(m2.classes)) == ("multilabel", 3)


def test_prepare_reuses_its_output_until_the_file_changes(tmp_path):
    path = write_medmnist_npz(tmp_path / "d.npz")
    cfg = medmnist_cfg(path=str(path), name="mine", flag="mine")
    first = prepare_dataset(cfg, tmp_path / "p", tmp_path / "raw")
    stamp = (first / "meta.json").stat().st_mtime_ns
    assert prepare_dataset(cfg, tmp_path / "p", tmp_path / "raw") == first
    assert (first / "meta.json").stat().st_mtime_ns == stamp
    write_medmnist_npz(path, seed=1)
    second = prepare_dataset(cfg, tmp_path / "p", tmp_path / "raw")
    assert second != first and read_meta(second).content_sha256 != read_meta(first).content_sha256


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_keys", "missing key(s) val_images, val_labels, test_images, test_labels"),
        ("count_mismatch", "val_images has 40 images but val_labels has 39 labels"),
        ("not_npz", "not an .npz archive"),
        ("label_range", "test labels hold 1 value(s) outside 0..1"),
    ],
)
def test_bad_npz_files_name_the_file_and_the_problem(tmp_path, case, message):
    path = tmp_path / f"{case}.npz"
    if case == "not_npz":
        path.write_bytes(b"\x00" * 100)
    else:
        write_medmnist_npz(path)
        arrays = dict(np.load(path))
        if case == "missing_keys":
            arrays = {k: v for k, v in arrays.items() if k.startswith("train")}
        elif case == "count_mismatch":
            arrays["val_labels"] = arrays["val_labels"][:-1]
        else:
            arrays["test_labels"][0] = 7
        np.savez(path, **arrays)
    with pytest.raises(DataError) as err:
        prepare_dataset(medmnist_cfg(path=str(path)), tmp_path / "p", tmp_path / "raw")
    assert str(path) in str(err.value) and message in str(err.value)
    assert not list((tmp_path / "p").glob("*")) if (tmp_path / "p").exists() else True


@needs_shared_data
def test_mirror_folder_is_md5_checked(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    os.symlink(PNEUMONIA_NPZ, mirror / "pneumoniamnist.npz")
    with pytest.raises(
        DataError, match="differs from the official 28209eda62fecd6e6a2d98b1501bb15f"
    ):
        prepare_dataset(medmnist_cfg(mirror=str(mirror)), tmp_path / "p", tmp_path / "raw")
    folder = prepare_dataset(
        medmnist_cfg(mirror=str(mirror), verify_md5=False), tmp_path / "p", tmp_path / "raw"
    )
    assert read_meta(folder).sizes["test"] == 624
    with pytest.raises(DataError, match="has no pneumoniamnist_64.npz"):
        prepare_dataset(medmnist_cfg(mirror=str(mirror), size=64), tmp_path / "p", tmp_path / "raw")


@pytest.fixture
def http_folder(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_checks_the_md5_and_keeps_only_verified_files(tmp_path, http_folder):
    served, base = http_folder
    write_medmnist_npz(served / "pneumoniamnist.npz")
    raw = tmp_path / "raw"
    with pytest.raises(DataError, match="downloaded file has MD5 .* expected 28209eda"):
        prepare_dataset(medmnist_cfg(url=f"{base}/pneumoniamnist.npz"), tmp_path / "p", raw)
    assert not list(raw.glob("*")), "a file that failed its checksum was left behind"
    # without the checksum the file is fetched, but its contents must still be pneumoniamnist's
    # before the catalogue's class names are attached to it (this one has 40 training images)
    with pytest.raises(DataError, match="not pneumoniamnist at size 28: train has 40 samples"):
        prepare_dataset(
            medmnist_cfg(url=f"{base}/pneumoniamnist.npz", verify_md5=False), tmp_path / "p", raw
        )
    assert (raw / "pneumoniamnist.npz").is_file()
    served_md5 = hashlib.md5((served / "pneumoniamnist.npz").read_bytes()).hexdigest()
    assert hashlib.md5((raw / "pneumoniamnist.npz").read_bytes()).hexdigest() == served_md5


def test_without_network_the_error_says_how_to_give_a_local_file(tmp_path):
    with pytest.raises(DataError, match="data.path=FILE.npz or data.mirror=FOLDER"):
        prepare_dataset(
            medmnist_cfg(url="http://127.0.0.1:9/pneumoniamnist.npz"),
            tmp_path / "p",
            tmp_path / "raw",
        )


# -- DataModule ---------------------------------------------------------------------------------
def _datamodule(tmp_path, **kw):
    from medpipe.data.datamodule import MedDataModule

    folder = prepare_dataset(SYNTH, tmp_path / "p", tmp_path / "raw")
    return MedDataModule(folder, batch_size=32, seed=3, **kw)


def test_memory_batches_are_seeded_per_epoch_and_cover_the_split(tmp_path):
    import torch

    from medpipe.data.datamodule import DeviceBatches

    x = torch.arange(100)
    epoch = {"e": 0}
    batches = DeviceBatches(x, x, batch_size=16, shuffle=True, seed=5, epoch_fn=lambda: epoch["e"])
    first = torch.cat([b for b, _ in batches])
    again = torch.cat([b for b, _ in batches])
    epoch["e"] = 1
    second = torch.cat([b for b, _ in batches])
    assert torch.equal(first, again) and not torch.equal(first, second)
    assert sorted(first.tolist()) == list(range(100)) and len(batches) == 7


def test_memory_batches_shard_disjointly_across_ranks():
    import torch

    from medpipe.data.datamodule import DeviceBatches

    x = torch.arange(103)
    shards = [
        torch.cat([b for b, _ in DeviceBatches(x, x, 10, True, 0, rank=r, world_size=4)])
        for r in range(4)
    ]
    assert {len(s) for s in shards} == {26}
    seen = torch.cat(shards).tolist()
    assert set(seen) == set(range(103)) and len(seen) - len(set(seen)) == 1  # padded by one repeat


def test_memory_path_keeps_uint8_tensors_and_yields_whole_batches(tmp_path):
    dm = _datamodule(tmp_path, loader="memory")
    dm.setup("fit")
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.dtype.is_floating_point is False and xb.shape == (32, 1, 28, 28)
    assert yb.dtype.is_floating_point is False and len(dm.train_dataloader()) == 7


def test_workers_path_augments_the_training_split_only(tmp_path):
    import torch

    from medpipe.data.transforms import build_albumentations

    ops = [{"_target_": "albumentations.HorizontalFlip", "p": 1.0}]
    dm = _datamodule(tmp_path, loader="workers", train_transform=build_albumentations(ops, seed=0))
    dm.setup("fit")
    raw = torch.from_numpy(np.array(dm.splits["train"].x))
    train = dm.train_dataloader().dataset
    assert torch.equal(train[0][0], raw[0].flip(-1))
    val_x, _ = next(iter(dm.val_dataloader()))
    assert torch.equal(val_x, torch.from_numpy(np.array(dm.splits["val"].x[:32])))


def test_a_wrong_albumentations_argument_names_the_entry():
    from medpipe.data.transforms import build_albumentations
    from medpipe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"augmentation.train\[1\] \(albumentations.Affine\)"):
        build_albumentations(
            [
                {"_target_": "albumentations.HorizontalFlip"},
                {"_target_": "albumentations.Affine", "rotate_degrees": 3},
            ],
            seed=0,
        )


ADRENAL_DIR = PNEUMONIA_NPZ.parents[1] / "adrenalmnist3d"


@pytest.mark.skipif(not (ADRENAL_DIR / "adrenalmnist3d.npz").exists(), reason="no AdrenalMNIST3D")
@pytest.mark.parametrize("size", [28, pytest.param(64, marks=pytest.mark.slow)])
def test_official_adrenalmnist3d_volumes_through_the_md5_checked_mirror(tmp_path, size):
    """The official 28^3 and 64^3 files pass their MD5s and become (N, 1, D, H, W) volumes."""
    cfg = medmnist_cfg(
        name="adrenalmnist3d",
        flag="adrenalmnist3d",
        kind="volume",
        size=size,
        mirror=str(ADRENAL_DIR),
    )
    folder = prepare_dataset(cfg, tmp_path / "p", tmp_path / "raw")
    meta = read_meta(folder)
    assert meta.kind == "volume" and meta.task == "binary"
    assert meta.sample_shape == [1, size, size, size]
    assert meta.sizes == {"train": 1188, "val": 98, "test": 298}
    assert meta.class_counts["train"] == [929, 259] and meta.class_counts["test"] == [229, 69]
    x = read_split(folder, "val").x
    assert x.dtype == np.uint8 and x.shape == (98, 1, size, size, size)
