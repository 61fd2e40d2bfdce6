"""Your own files as training data: data=image_folder and data=volume_folder (class subfolders or a
labels table), read by medpipe.data.files; splits drawn over patients."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medpipe.data.files import InputSpec, resample_volume, samples_of, write_nifti
from medpipe.data.prepare import prepare_dataset
from medpipe.data.processed import (
    SPLITS,
    ChannelSums,
    NpyWriter,
    channel_stats,
    read_meta,
    read_split,
)
from medpipe.errors import DataError

from conftest import pydicom_file, run_cli, write_dicom, write_png


def image(rng: np.random.Generator, label: int, size: int = 16) -> np.ndarray:
    """A learnable image: the class shifts the mean intensity."""
    return np.clip(rng.normal(80 + 80 * label, 25, (size, size)), 0, 255).astype(np.uint8)


def folder_cfg(**keys) -> dict:
    base = {
        "name": "mine",
        "source": "image_folder",
        "kind": "image",
        "image_size": [16, 16],
        "channels": 1,
        "batch_size": 16,
        "split": [0.6, 0.2, 0.2],
        "seed": 0,
    }
    return {**base, **keys}


def prepare(tmp_path: Path, **keys) -> Path:
    return prepare_dataset(folder_cfg(**keys), str(tmp_path / "processed"), str(tmp_path / "raw"))


@pytest.fixture
def class_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for label, name in enumerate(["normal", "pneumonia"]):
        for i in range(15):
            write_png(root / name / f"{i:02d}.png", image(rng, label))
    (root / "normal" / "notes.txt").write_text("not an image")
    return root


def test_class_subfolders_become_a_processed_dataset(tmp_path, class_folder):
    folder = prepare(tmp_path, path=str(class_folder))
    meta = read_meta(folder)
    assert meta.classes == ["normal", "pneumonia"] and meta.task == "binary"
    assert meta.sample_shape == [1, 16, 16] and meta.scale == 255.0
    assert sum(meta.sizes.values()) == 30  # notes.txt skipped
    ids = np.concatenate([read_split(folder, s).ids for s in SPLITS])
    assert sorted(ids) == sorted(
        f"{c}/{i:02d}.png" for c in ("normal", "pneumonia") for i in range(15)
    )
    train = read_split(folder, "train")
    # the streamed statistics equal those of the arrays; a sample equals its file
    mean, std = channel_stats(np.asarray(train.x), 255.0)
    assert np.allclose(meta.mean, mean, atol=1e-12) and np.allclose(meta.std, std, atol=1e-9)
    from PIL import Image

    first = np.asarray(Image.open(class_folder / train.ids[0]))
    assert np.array_equal(train.x[0, 0], first)
    # the same files give the same folder (fingerprint), a changed file a new one
    assert prepare(tmp_path, path=str(class_folder)) == folder
    write_png(class_folder / "normal" / "00.png", np.zeros((16, 16), np.uint8))
    assert prepare(tmp_path, path=str(class_folder)) != folder
    # no staging files are left behind
    assert [p.name for p in (tmp_path / "processed").iterdir() if p.name.startswith(".")] == []


def test_resize_channels_and_intensity_rules(tmp_path):
    rng = np.random.default_rng(1)
    rgb = write_png(tmp_path / "rgb.png", rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    samples, notes = samples_of(rgb, InputSpec("image", (1, 16, 16)))
    assert samples[0].shape == (1, 16, 16) and samples[0].dtype == np.uint8
    assert notes == ["RGB converted to gray (ITU-R 601 luma)"]
    gray = write_png(tmp_path / "gray.png", image(rng, 0))
    samples, notes = samples_of(gray, InputSpec("image", (3, 16, 16)))
    assert samples[0].shape == (3, 16, 16) and "repeated" in notes[0]
    # a CT in Hounsfield units: int16 with rescale slope/intercept, its own window, or a fixed one
    ct = pydicom_file("CT_small.dcm")
    auto, _ = samples_of(ct, InputSpec("image", (1, 128, 128)))  # its own size: no resizing
    windowed, _ = samples_of(ct, InputSpec("image", (1, 128, 128), "window", (40.0, 400.0)))
    assert auto[0].min() == 0 and auto[0].max() == 255  # no window in the file: min-max
    assert not np.array_equal(auto[0], windowed[0])
    assert samples_of(ct, InputSpec("image", (1, 32, 32)))[0][0].shape == (1, 32, 32)
    # MONOCHROME1: low values are bright
    x = np.arange(64, dtype=np.uint8).reshape(8, 8)
    m1 = write_dicom(tmp_path / "m1.dcm", x, photometric="MONOCHROME1")
    assert np.array_equal(samples_of(m1, InputSpec("image", (1, 8, 8)))[0][0][0], 255 - x)
    # a multi-frame DICOM gives one sample per frame
    frames = write_dicom(tmp_path / "mf.dcm", np.stack([x, x + 1, x + 2]))
    assert len(samples_of(frames, InputSpec("image", (1, 8, 8)))[0]) == 3


def test_volumes_read_from_nifti_and_resampled(tmp_path):
    rng = np.random.default_rng(2)
    vol = rng.integers(0, 255, (10, 12, 14), dtype=np.uint8)
    path = tmp_path / "v.nii.gz"
    write_nifti(path, vol)
    same, _ = samples_of(path, InputSpec("volume", (1, 10, 12, 14)))
    assert np.array_equal(same[0][0], vol)  # read back value for value, axes (D, H, W)
    smaller, _ = samples_of(path, InputSpec("volume", (1, 5, 6, 7)))
    assert smaller[0].shape == (1, 5, 6, 7)
    assert resample_volume(np.full((8, 8, 8), 100, np.uint8), (4, 4, 4)).max() == 100


@pytest.mark.slow
def test_volume_folder_trains_end_to_end(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "vols"
    for label, name in enumerate(["a", "b"]):
        for i in range(12):
            v = np.clip(rng.normal(60 + 100 * label, 30, (8 + i % 3, 12, 12)), 0, 255)
            write_nifti(root / name / f"{i}.nii.gz", v.astype(np.uint8))
    out = run_cli(
        "train",
        "data=volume_folder",
        f"data.path={root}",
        "data.volume_shape=[8,8,8]",
        "data.batch_size=32",  # one batch: a batch of one sample would trip BatchNorm
        "model=resnet3d",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=none",
        "log_model=false",
        "evaluation.explain.enabled=false",
        "logger=none",
        f"paths.root_dir={tmp_path}",
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test/auroc" in out.stdout


def write_table(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def patients(tmp_path):
    """30 patients with 1-4 images each, in one folder, labelled by a table with patient ids."""
    rng = np.random.default_rng(4)
    rows = []
    for p in range(30):
        label = p % 2
        for k in range(1 + p % 4):
            name = f"img_{p:02d}_{k}.png"
            write_png(tmp_path / "flat" / name, image(rng, label))
            rows.append(
                {"file": name, "label": ["healthy", "sick"][label], "patient_id": f"P{p:02d}"}
            )
    return tmp_path / "flat", rows


def test_labels_table_splits_by_patient(tmp_path, patients):
    """No patient's images in two splits (the classic leak), and every patient placed."""
    root, rows = patients
    table = write_table(root / "labels.csv", rows)
    folder = prepare(tmp_path, labels=str(table))
    patient_of = {r["file"]: r["patient_id"] for r in rows}
    seen: dict[str, str] = {}
    for split in SPLITS:
        for i in read_split(folder, split).ids:
            assert seen.setdefault(patient_of[i], split) == split, f"{patient_of[i]} in two splits"
    assert len(seen) == 30
    info = read_meta(folder).source
    assert info["split_from"] == "drawn" and info["groups"] == 30
    # both classes in every split (stratified over patients)
    assert all(min(c) > 0 for c in read_meta(folder).class_counts.values())


def test_labels_table_with_splits_and_its_errors(tmp_path, patients):
    root, rows = patients
    given = [
        {**r, "split": ["train", "train", "val", "test"][int(r["patient_id"][1:]) % 4]}
        for r in rows
    ]
    folder = prepare(tmp_path, labels=str(write_table(root / "given.csv", given)))
    assert read_meta(folder).source["split_from"] == "table"
    # a patient in two splits
    leak = [dict(r) for r in given]
    assert leak[1]["patient_id"] == leak[2]["patient_id"] == "P01"  # table lines 3 and 4
    leak[2]["split"] = "test"
    with pytest.raises(
        DataError,
        match=r"leak.csv:4: split test, but the same patient is in split train at .*leak.csv:3",
    ):
        prepare(tmp_path, labels=str(write_table(root / "leak.csv", leak)))
    # a missing file, named with its table line
    missing = [*rows, {"file": "nowhere.png", "label": "sick", "patient_id": "P99"}]
    with pytest.raises(
        DataError, match=rf"missing.csv:{len(rows) + 2}: file not found: .*nowhere.png"
    ):
        prepare(tmp_path, labels=str(write_table(root / "missing.csv", missing)))
    # no label column
    with pytest.raises(DataError, match=r"no column label \(has file, patient_id\)"):
        prepare(
            tmp_path,
            labels=str(write_table(root / "nolabel.csv", [{"file": "a", "patient_id": 1}])),
        )


def test_dicom_patient_ids_group_files(tmp_path):
    """Without a table, a DICOM's PatientID groups its files (it is read to group, never stored)."""
    rng = np.random.default_rng(5)
    root = tmp_path / "dicom"
    for p in range(12):
        for k in range(3):
            write_dicom(root / ["neg", "pos"][p % 2] / f"{p}_{k}.dcm", image(rng, p % 2), f"PID{p}")
    folder = prepare(tmp_path, path=str(root))
    split_of = {}
    for split in SPLITS:
        for i in read_split(folder, split).ids:
            assert split_of.setdefault(Path(i).stem.split("_")[0], split) == split
    text = "".join(p.read_text(errors="ignore") for p in folder.glob("*.json"))
    text += "".join(str(read_split(folder, s).ids.tolist()) for s in SPLITS)
    assert "PID" not in text and "Test^Patient" not in text


def test_bad_folders_give_one_clear_error_and_leave_nothing(tmp_path, class_folder):
    (class_folder / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder .*empty holds no supported files"):
        prepare(tmp_path, path=str(class_folder))
    shutil.rmtree(class_folder / "empty")
    shutil.copy(pydicom_file("MR_truncated.dcm"), class_folder / "pneumonia" / "bad.dcm")
    with pytest.raises(DataError, match=r"bad.dcm: unreadable DICOM pixel data"):
        prepare(tmp_path, path=str(class_folder))
    assert not (tmp_path / "processed").exists() or not any((tmp_path / "processed").iterdir())
    (class_folder / "pneumonia" / "bad.dcm").unlink()
    shutil.copy(pydicom_file("JPEGLSNearLossless_08.dcm"), class_folder / "pneumonia" / "c.dcm")
    with pytest.raises(
        DataError, match=r"c.dcm: compressed DICOM \(JPEG-LS.*install one of: .*pylibjpeg"
    ):
        prepare(tmp_path, path=str(class_folder))


def test_data_errors_from_the_command_line(tmp_path, class_folder):
    (class_folder / "empty").mkdir()
    out = run_cli(
        "prepare", "data=image_folder", f"data.path={class_folder}", f"paths.root_dir={tmp_path}"
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "empty holds no supported files" in lines[0], out.stderr
    out = run_cli("prepare", "data=image_folder", f"paths.root_dir={tmp_path}")
    assert out.returncode == 2 and "data.path: required" in out.stderr


def test_streaming_writer_and_sums(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.integers(0, 255, (7, 3, 5, 5), dtype=np.uint8)
    w = NpyWriter(tmp_path / "a.npy", x.shape, np.uint8)
    sums = ChannelSums(3)
    for s in x:
        w.write(s)
        sums.add(s)
    w.close()
    assert np.array_equal(np.load(tmp_path / "a.npy"), x)
    mean, std = channel_stats(x, 255.0)
    assert np.allclose(sums.stats(255.0), (mean, std), atol=1e-12)
    short = NpyWriter(tmp_path / "b.npy", (3, 2), np.float32)
    short.write(np.zeros(2))
    with pytest.raises(ValueError, match="1 samples written, 3 declared"):
        short.close()


@pytest.mark.slow  # a training run; the default suite stays under 10 minutes on 2 cores
def test_image_folder_run_records_its_files(tmp_path, patients):
    """A labels table with patient ids trains end to end; the data's meta says how it was split."""
    root, rows = patients
    table = write_table(root / "labels.csv", rows)
    out = run_cli(
        "train",
        "data=image_folder",
        f"data.labels={table}",
        "data.image_size=[16,16]",
        "data.batch_size=16",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=none",
        "log_model=false",
        "evaluation.explain.enabled=false",
        f"paths.root_dir={tmp_path}",
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads(
        next((tmp_path / "data" / "processed").glob("image_folder-*/meta.json")).read_text()
    )
    assert meta["source"]["labels_table"] and meta["source"]["groups"] == 30
    assert "test/auroc" in out.stdout
