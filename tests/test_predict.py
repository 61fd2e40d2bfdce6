"""python -m medpipe.predict: a trained model applied to files, read exactly as its training data
was prepared. Round trips: the test images written out as PNG, DICOM or NIfTI predict the
probabilities the run itself kept for them."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from medpipe.data.files import write_nifti

from conftest import (
    PNEUMONIA_NPZ,
    SHARED_DATA,
    TINY,
    find_checkpoint,
    needs_shared_data,
    pydicom_file,
    run_cli,
    write_dicom,
    write_png,
)

ADRENAL_NPZ = SHARED_DATA / "medmnist" / "adrenalmnist3d" / "adrenalmnist3d.npz"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def predict(root: Path, *args: str, name: str = "predictions.csv"):
    out = root / name
    res = run_cli("predict", *args, f"output={out}", f"paths.root_dir={root}", timeout=300)
    return res, (read_csv(out) if out.exists() else [])


def kept(run_dir: Path) -> dict[int, dict[str, str]]:
    """The run's own test predictions (predictions/test.csv), by row."""
    return {int(r["row"]): r for r in read_csv(run_dir / "predictions" / "test.csv")}


def by_row(rows: list[dict[str, str]]) -> dict[int, dict[str, str]]:
    """predict's rows by the test row in the file name (<row>.png, <row>.dcm, ...)."""
    return {int(re.search(r"(\d+)\.\w+(\.gz)?$", r["input"]).group(1)): r for r in rows}


# -- PneumoniaMNIST: PNG, DICOM, the logged MLflow model --------------------------------------------
@pytest.fixture(scope="module")
def pneumonia(tmp_path_factory):
    if not PNEUMONIA_NPZ.exists():
        pytest.skip(f"{SHARED_DATA} not present")
    root = tmp_path_factory.mktemp("pneumonia")
    out = run_cli(
        "train",
        "data=medmnist",
        "data.flag=pneumoniamnist",
        f"data.path={PNEUMONIA_NPZ}",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=none",
        "evaluation.explain.enabled=false",
        f"paths.root_dir={root}",
        f"paths.output_dir={root / 'run'}",
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run_id = re.search(r"MLflow run (\w+)", out.stdout).group(1)
    test = np.load(PNEUMONIA_NPZ)
    return root, run_id, test["test_images"], test["test_labels"][:, 0]


@pytest.mark.slow  # trains on PneumoniaMNIST; the default suite stays under 10 minutes
@needs_shared_data
def test_png_round_trip_equals_the_runs_own_predictions(pneumonia):
    root, _, images, labels = pneumonia
    folder = root / "png"
    for i, im in enumerate(images):
        write_png(folder / f"{i:04d}.png", im)
    res, rows = predict(root, f"ckpt_path={root / 'run/checkpoints/best.ckpt'}", f"inputs={folder}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (
        res.stdout.strip().splitlines()[-1].startswith(f"predicted {len(images)} of {len(images)}")
    )
    mine, theirs = by_row(rows), kept(root / "run")
    assert sorted(mine) == sorted(theirs) == list(range(len(images)))
    diff = max(
        abs(float(mine[i]["prob_pneumonia"]) - float(theirs[i]["prob_pneumonia"])) for i in mine
    )
    assert diff <= 1e-5
    classes = ["normal", "pneumonia"]
    assert all(mine[i]["predicted"] == classes[int(theirs[i]["predicted"])] for i in mine)
    # the same AUROC from predictions.csv as the run reported
    from sklearn.metrics import roc_auc_score

    probs = [float(mine[i]["prob_pneumonia"]) for i in range(len(images))]
    auroc = json.loads((root / "run" / "metrics.json").read_text())["test/auroc"]
    assert abs(roc_auc_score(labels, probs) - auroc) < 1e-6


@pytest.mark.slow
@needs_shared_data
def test_dicom_round_trip_and_the_logged_model(pneumonia):
    root, run_id, images, _ = pneumonia
    folder = root / "dicom"
    n = 64
    for i, im in enumerate(images[:n]):
        write_dicom(folder / f"{i:04d}.dcm", im, patient_id=f"P{i}")
    theirs = kept(root / "run")
    res, rows = predict(root, f"ckpt_path={root / 'run/checkpoints/best.ckpt'}", f"inputs={folder}")
    assert res.returncode == 0, res.stderr[-2000:]
    mine = by_row(rows)
    assert (
        max(
            abs(float(mine[i]["prob_pneumonia"]) - float(theirs[i]["prob_pneumonia"])) for i in mine
        )
        <= 1e-5
    )
    # the model logged to MLflow, read from the run's store, over a glob of the same files
    res, rows = predict(
        root, f"model_uri=runs:/{run_id}/model", f"inputs={folder}/001*.dcm", name="uri.csv"
    )
    assert res.returncode == 0, res.stderr[-2000:]
    logged = by_row(rows)
    assert sorted(logged) == list(range(10, 20))
    assert (
        max(
            abs(float(logged[i]["prob_pneumonia"]) - float(theirs[i]["prob_pneumonia"]))
            for i in logged
        )
        <= 1e-5
    )
    assert all(logged[i]["predicted"] == mine[i]["predicted"] for i in logged)


# -- AdrenalMNIST3D volumes as NIfTI -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not ADRENAL_NPZ.exists(), reason=f"{ADRENAL_NPZ} not present")
def test_nifti_round_trip_equals_the_runs_own_predictions(tmp_path):
    out = run_cli(
        "train",
        "experiment=adrenal3d_crnn",
        f"data.path={ADRENAL_NPZ}",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=none",
        "evaluation.explain.enabled=false",
        "log_model=false",
        "logger=none",
        f"paths.root_dir={tmp_path}",
        f"paths.output_dir={tmp_path / 'run'}",
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    volumes = np.load(ADRENAL_NPZ)["test_images"]
    for i, v in enumerate(volumes):
        write_nifti(tmp_path / "nii" / f"{i:04d}.nii.gz", v)
    res, rows = predict(
        tmp_path,
        f"ckpt_path={tmp_path / 'run/checkpoints/best.ckpt'}",
        f"inputs={tmp_path / 'nii'}",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    mine, theirs = by_row(rows), kept(tmp_path / "run")
    key = next(k for k in theirs[0] if k.startswith("prob_"))
    assert sorted(mine) == sorted(theirs)
    assert max(abs(float(mine[i][key]) - float(theirs[i][key])) for i in mine) <= 1e-5


# -- bad inputs --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    out = run_cli(
        "train", *TINY, "logger=none", f"paths.root_dir={root}", f"paths.output_dir={root / 'run'}"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return root, root / "run" / "checkpoints" / "best.ckpt"


def test_unreadable_inputs_are_listed_and_the_rest_predicted(tiny, tmp_path):
    _, ckpt = tiny
    import nibabel

    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    write_png(folder / "good.png", rng.integers(0, 255, (28, 28), dtype=np.uint8))
    write_png(folder / "large.png", rng.integers(0, 255, (64, 80), dtype=np.uint8))
    write_png(folder / "colour.png", rng.integers(0, 255, (28, 28, 3), dtype=np.uint8))
    shutil.copy(pydicom_file("CT_small.dcm"), folder / "ct.dcm")
    shutil.copy(pydicom_file("MR_truncated.dcm"), folder / "truncated.dcm")
    shutil.copy(pydicom_file("JPEGLSNearLossless_08.dcm"), folder / "jpegls.dcm")
    anatomical = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    shutil.copy(anatomical, folder / "volume.nii")
    (folder / "broken.png").write_bytes(b"not a png at all")
    res, rows = predict(tmp_path, f"ckpt_path={ckpt}", f"inputs={folder}")
    assert res.returncode == 1
    assert res.stdout.strip().splitlines()[-1].startswith("predicted 4 of 8 inputs (4 failed)")
    got = {Path(r["input"]).name: r for r in rows}
    assert {k for k, r in got.items() if r["status"] == "ok"} == {
        "good.png",
        "large.png",
        "colour.png",
        "ct.dcm",
    }
    assert "RGB converted to gray" in got["colour.png"]["note"]
    assert "unreadable DICOM pixel data" in got["truncated.dcm"]["error"]
    assert re.search(
        r"compressed DICOM \(JPEG-LS.*install one of: .*pylibjpeg", got["jpegls.dcm"]["error"]
    )
    assert (
        "a volume of shape" in got["volume.nii"]["error"]
        and "2D images" in got["volume.nii"]["error"]
    )
    assert "not a readable image" in got["broken.png"]["error"]
    for r in rows:
        if r["status"] == "ok":
            p = [float(r["prob_no_lesion"]), float(r["prob_lesion"])]
            assert abs(sum(p) - 1) < 1e-6 and r["predicted"] in ("no lesion", "lesion")


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_command_errors_are_one_line_and_write_nothing(tiny, tmp_path):
    _, ckpt = tiny
    import torch

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    write_png(tmp_path / "in" / "a.png", np.zeros((28, 28), np.uint8))
    cases = {
        f"ckpt_path={foreign}": "not a medpipe checkpoint",
        f"model_uri=runs:/{'0' * 32}/model": "model_uri: no MLflow store at",
        "model_uri=s3://bucket/model": "is not an MLflow model URI",
    }
    for arg, message in cases.items():
        res, _ = predict(tmp_path, arg, f"inputs={tmp_path / 'in'}")
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and message in lines[0], res.stderr
    res, _ = predict(tmp_path, f"inputs={tmp_path / 'in'}")
    assert res.returncode == 2 and "give exactly one" in res.stderr
    res, _ = predict(tmp_path, f"ckpt_path={ckpt}", f"inputs={tmp_path / 'nothing' / '*.png'}")
    assert res.returncode == 2 and "inputs: no image files in pattern" in res.stderr
    assert not (tmp_path / "predictions.csv").exists()


# -- signals: windows of a long record -------------------------------------------------------------
@pytest.fixture(scope="module")
def ecg(tmp_path_factory):
    root = tmp_path_factory.mktemp("ecg")
    out = run_cli(
        "train",
        "experiment=ecg_hr_rnn",
        "data.n_train=64",
        "data.n_val=32",
        "data.n_test=32",
        "data.preprocess.window.mode=fixed",
        "data.preprocess.window.length=500",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=none",
        "log_model=false",
        "logger=none",
        f"paths.root_dir={root}",
        f"paths.output_dir={root / 'run'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return root, find_checkpoint(root / "run")


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_signal_records_in_every_format_give_the_same_value(ecg, tmp_path):
    """A 20-s record at 100 Hz, where the model learnt 5-s windows: 4 windows, their mean; the same
    record as .npy, a .csv row and a WFDB record; at 200 Hz it is resampled first."""
    import wfdb

    from medpipe.data import signal
    from medpipe.data.sources.ecg import simulate_ecg
    from medpipe.predicting import from_checkpoint

    _, ckpt = ecg
    x, _ = simulate_ecg(70.0, 20.0, 100.0, np.random.default_rng(1))
    np.save(tmp_path / "rec.npy", x)
    np.savetxt(tmp_path / "rows.csv", x[None], delimiter=",")
    wfdb.wrsamp(
        "rec",
        fs=100,
        units=["mV"],
        sig_name=["II"],
        p_signal=x[:, None],
        fmt=["16"],
        adc_gain=[20000.0],
        baseline=[0],
        write_dir=str(tmp_path),
    )
    res, rows = predict(tmp_path, f"ckpt_path={ckpt}", f"inputs={tmp_path}")
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    got = {Path(r["input"].split("#")[0]).name: r for r in rows}
    assert set(got) == {"rec.npy", "rows.csv", "rec"}
    assert all(r["windows"] == "4" for r in rows)
    value = float(got["rec.npy"]["heart_rate_bpm"])
    assert abs(float(got["rows.csv"]["heart_rate_bpm"]) - value) < 1e-4
    assert abs(float(got["rec"]["heart_rate_bpm"]) - value) < 1e-2  # WFDB stores 16-bit samples
    # by hand: the training preprocessing, four 5-s windows, the mean of the model's values
    p = from_checkpoint(str(ckpt))
    pre = dict(p.reading["preprocess"], window={"mode": "none"})
    y, _ = signal.filter_record(x[None], 100.0, pre, "rec")
    windows = np.stack([y[:, s : s + 500] for s in range(0, 2000, 500)]).astype(np.float32)
    assert abs(p(windows, np.full(4, 500)).mean() - value) < 1e-4
    # the first window only, as the model was trained
    res, rows = predict(
        tmp_path,
        f"ckpt_path={ckpt}",
        f"inputs={tmp_path / 'rec.npy'}",
        "aggregate=first",
        name="first.csv",
    )
    assert abs(float(rows[0]["heart_rate_bpm"]) - p(windows[:1], np.full(1, 500))[0]) < 1e-4
    # the same heart at 200 Hz: resampled to the training rate, then the same windows
    x2, _ = simulate_ecg(70.0, 20.0, 200.0, np.random.default_rng(1))
    np.save(tmp_path / "fast.npy", x2)
    res, rows = predict(
        tmp_path, f"ckpt_path={ckpt}", f"inputs={tmp_path / 'fast.npy'}", "fs=200", name="fast.csv"
    )
    assert res.returncode == 0 and rows[0]["windows"] == "4"


@pytest.mark.slow
@needs_shared_data
def test_png_round_trip_through_the_registry_the_server_and_onnx(pneumonia):
    """The same PNGs, predicted by the registered model (models:/NAME@champion), sent to the
    served model over HTTP and run through the ONNX export, give the probabilities of the
    checkpoint's predict."""
    from medpipe.data.files import InputSpec, samples_of

    from conftest import invoke, serving

    root, _, images, _ = pneumonia
    folder = root / "png_registry"
    n = 48
    for i, im in enumerate(images[:n]):
        write_png(folder / f"{i:04d}.png", im)
    res, rows = predict(
        root, f"ckpt_path={root / 'run/checkpoints/best.ckpt'}", f"inputs={folder}", name="ckpt.csv"
    )
    assert res.returncode == 0, res.stderr[-2000:]
    mine = by_row(rows)
    reg = run_cli(
        "compare", f"paths.root_dir={root}", "experiment=medpipe", "register=pneumonia-test"
    )
    assert reg.returncode == 0, reg.stderr[-1500:]
    res, rows = predict(
        root, "model_uri=models:/pneumonia-test@champion", f"inputs={folder}", name="reg.csv"
    )
    assert res.returncode == 0, res.stderr[-2000:]
    registered = by_row(rows)
    assert (
        max(
            abs(float(registered[i]["prob_pneumonia"]) - float(mine[i]["prob_pneumonia"]))
            for i in mine
        )
        <= 1e-5
    )
    x = np.stack(
        [
            samples_of(folder / f"{i:04d}.png", InputSpec("image", (1, 28, 28)))[0][0]
            for i in range(n)
        ]
    )
    store = f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}"
    with serving("models:/pneumonia-test@champion", store, root) as (url, _):
        served = invoke(url, x.astype(np.float32))
    assert (
        np.abs(served[:, 1] - np.array([float(mine[i]["prob_pneumonia"]) for i in range(n)])).max()
        <= 1e-5
    )
