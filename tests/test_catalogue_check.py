"""A catalogue flag with data.path: the file must be that MedMNIST set, or it is one clear error.

Split sizes, image side, channels and labels are checked against the catalogue entry; the error
says how to load the file under its own name, and that advice is followed here to the letter.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from medpipe.data.catalog import CATALOG
from medpipe.data.catalog_check import catalogue_mismatches
from medpipe.data.processed import read_meta
from medpipe.data.sources.medmnist import read_medmnist_npz

from conftest import PNEUMONIA_NPZ, SHARED_DATA, needs_shared_data, run_cli, write_medmnist_npz

ADRENAL_NPZ = SHARED_DATA / "medmnist" / "adrenalmnist3d" / "adrenalmnist3d.npz"
PNEUMONIA = CATALOG["pneumoniamnist"]


def _pneumonia_shaped(path: Path, **change) -> Path:
    """An npz with PneumoniaMNIST's split sizes, 28x28 gray uint8 images and (N, 1) 0/1 labels;
    `change` replaces arrays by key (e.g. val_images=...)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in PNEUMONIA.n_samples.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    arrays.update(change)
    np.savez(path, **arrays)
    return path


def _bad_file(tmp_path: Path, case: str) -> Path:
    folder = tmp_path / "odd [dir], 'x'"  # the advice must quote it for the shell and for Hydra
    folder.mkdir()
    path = folder / f"{case}.npz"
    n = PNEUMONIA.n_samples
    if case == "split sizes":
        return _pneumonia_shaped(
            path,
            val_images=np.zeros((100, 28, 28), np.uint8),
            val_labels=np.zeros((100, 1), np.uint8),
        )
    if case == "image side":
        return _pneumonia_shaped(
            path, **{f"{s}_images": np.zeros((k, 32, 32), np.uint8) for s, k in n.items()}
        )
    if case == "rgb":
        return _pneumonia_shaped(
            path, **{f"{s}_images": np.zeros((k, 28, 28, 3), np.uint8) for s, k in n.items()}
        )
    labels = np.zeros((n["test"], 1), np.uint8)
    labels[5] = 7
    return _pneumonia_shaped(path, test_labels=labels)


CASES = {
    "split sizes": ("val has 100 samples, pneumoniamnist has 524", "binary", 2, [1, 28, 28]),
    "image side": (
        "images are 32x32, pneumoniamnist at size 28 is 28x28",
        "binary",
        2,
        [1, 32, 32],
    ),
    "rgb": ("images have 3 channel(s), pneumoniamnist has 1 (gray)", "binary", 2, [3, 28, 28]),
    "label range": (
        "test labels hold 1 value(s) outside 0..1 of pneumoniamnist's 2 classes (e.g. label 7)",
        "multiclass",
        8,
        [1, 28, 28],
    ),
}


def _one_error(out) -> str:
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("medpipe: error:")]
    assert len(errors) == 1, out.stderr
    return errors[0]


def _advice(error: str) -> list[str]:
    """The overrides the error tells the user to run to load the file under its own name."""
    found = re.search(
        r"under its own name, use (.+?) \(any name that is not a MedMNIST flag", error
    )
    assert found, error
    return shlex.split(found.group(1))


def _processed(out) -> Path:
    assert out.returncode == 0, out.stderr[-2000:]
    return Path(re.search(r"^processed: (.+)$", out.stdout, re.M).group(1))


@pytest.mark.parametrize("case", list(CASES))
def test_a_file_that_is_not_the_flags_set_is_one_error_and_loads_under_its_own_name(tmp_path, case):
    path = _bad_file(tmp_path, case)
    mismatch, task, n_classes, sample_shape = CASES[case]
    root = tmp_path / "root"
    quoted = "data.path='" + str(path).replace("'", "\\'") + "'"  # Hydra's quoting
    error = _one_error(run_cli("prepare", "data=pneumoniamnist", quoted, f"paths.root_dir={root}"))
    assert error.startswith(
        f"medpipe: error: {path}: not pneumoniamnist at size 28: {mismatch}. To train on this "
        "file under its own name, use data=medmnist data.flag=mydata "
    ), error
    assert error.endswith(
        " (any name that is not a MedMNIST flag; the task and classes, named 0, 1, ..., are "
        "then inferred from the labels)"
    ), error
    processed = root / "data" / "processed"
    assert not processed.exists() or not list(processed.glob("pneumoniamnist*"))

    folder = _processed(run_cli("prepare", *_advice(error), f"paths.root_dir={root}"))
    meta = read_meta(folder)
    assert meta.source["file"] == str(path)
    assert folder.name.startswith("mydata-") and meta.name == "mydata"
    assert meta.task == task and meta.classes == [str(i) for i in range(n_classes)]
    assert meta.sample_shape == sample_shape and meta.kind == "image"
    assert "normal" not in meta.classes and "pneumonia" not in meta.classes


def test_a_file_shaped_like_the_set_keeps_the_catalogue_classes(tmp_path):
    path = _pneumonia_shaped(tmp_path / "like.npz")
    out = run_cli(
        "prepare", "data=pneumoniamnist", f"data.path={path}", f"paths.root_dir={tmp_path}"
    )
    meta = read_meta(_processed(out))
    assert meta.classes == ["normal", "pneumonia"] and meta.task == "binary"
    assert meta.sizes == PNEUMONIA.n_samples


def test_a_3d_flag_checks_volumes_and_advises_data_kind_volume(tmp_path):
    path = write_medmnist_npz(tmp_path / "vol.npz", shape=(28, 28, 28))
    root = tmp_path / "root"
    error = _one_error(
        run_cli(
            "prepare",
            "data=medmnist",
            "data.flag=adrenalmnist3d",
            f"data.path={path}",
            f"paths.root_dir={root}",
        )
    )
    assert error.startswith(
        f"medpipe: error: {path}: not adrenalmnist3d at size 28: train has 40 samples, "
        "adrenalmnist3d has 1188; val has 40 samples, adrenalmnist3d has 98; test has 40 "
        "samples, adrenalmnist3d has 298. "
    ), error
    assert _advice(error) == [
        "data=medmnist",
        "data.flag=mydata",
        f"data.path={path}",
        "data.kind=volume",
    ]
    meta = read_meta(_processed(run_cli("prepare", *_advice(error), f"paths.root_dir={root}")))
    assert meta.kind == "volume" and meta.sample_shape == [1, 28, 28, 28]
    assert meta.classes == ["0", "1"]


# -- the check itself ---------------------------------------------------------------------------
def test_every_catalogue_entry_has_official_split_sizes():
    assert CATALOG["pneumoniamnist"].n_samples == {"train": 4708, "val": 524, "test": 624}
    assert CATALOG["adrenalmnist3d"].n_samples == {"train": 1188, "val": 98, "test": 298}
    for info in CATALOG.values():
        assert list(info.n_samples) == ["train", "val", "test"], info.flag
        assert all(n > 0 for n in info.n_samples.values()), info.flag


@needs_shared_data
def test_the_real_pneumoniamnist_file_matches_its_entry():
    raw = read_medmnist_npz(PNEUMONIA_NPZ)
    assert catalogue_mismatches(PNEUMONIA, 28, raw) == []
    # The same file named at another official size: only the side differs, and the phrase says
    # which size fits.
    assert catalogue_mismatches(PNEUMONIA, 64, raw) == [
        "images are 28x28, pneumoniamnist at size 64 is 64x64 (data.size=28 selects that version)"
    ]
    # ...and it is not another set: class names of one set never go to another's file.
    blood = catalogue_mismatches(CATALOG["bloodmnist"], 28, raw)
    assert "images have 1 channel(s), bloodmnist has 3 (RGB)" in blood
    assert "labels are (N, 1), chestmnist has (N, 14) 0/1 columns" in catalogue_mismatches(
        CATALOG["chestmnist"], 28, raw
    )


@pytest.mark.skipif(not ADRENAL_NPZ.exists(), reason=f"{ADRENAL_NPZ} not present")
def test_the_real_adrenalmnist3d_file_matches_its_entry():
    raw = read_medmnist_npz(ADRENAL_NPZ)
    assert catalogue_mismatches(CATALOG["adrenalmnist3d"], 28, raw) == []
    assert "images are stored as (N, 28, 28, 28), pneumoniamnist at size 28 as (N, 28, 28)" in (
        catalogue_mismatches(PNEUMONIA, 28, raw)
    )


def test_multilabel_labels_must_be_0_1_columns():
    chest = CATALOG["chestmnist"]
    arrays = {
        s: (np.zeros((n, 28, 28), np.uint8), np.zeros((n, 14), np.uint8))
        for s, n in chest.n_samples.items()
    }
    assert catalogue_mismatches(chest, 28, arrays) == []
    n_val = chest.n_samples["val"]
    arrays["val"] = (arrays["val"][0], np.full((n_val, 14), 2, np.uint8))
    assert catalogue_mismatches(chest, 28, arrays) == [
        f"val labels hold {n_val * 14} value(s) other than 0/1 (e.g. 2)"
    ]
