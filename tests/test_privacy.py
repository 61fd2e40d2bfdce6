"""Privacy (README "Privacy"): de-identified DICOM copies keep their pixels and lose the DICOM
PS3.15 Basic Profile's attributes; the identifier scan finds planted identifiers and passes on
clean folders, de-identified copies and a whole training run made from pydicom's CT_small.dcm
and MR_small.dcm, which carry patient names and ids."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medpipe.privacy.identifiers import by_keyword, identifiers

from conftest import pydicom_file, run_cli


@pytest.fixture
def originals(tmp_path) -> Path:
    src = tmp_path / "in"
    (src / "mr").mkdir(parents=True)
    shutil.copy(pydicom_file("CT_small.dcm"), src / "ct.dcm")
    shutil.copy(pydicom_file("MR_small.dcm"), src / "mr" / "mr.dcm")
    (src / "notes.txt").write_text("not a DICOM file\n")
    return src


def _deidentify(src: Path, out: Path, *args: str):
    return run_cli("deidentify", f"in={src}", f"out={out}", f"paths.root_dir={src.parent}", *args)


def _scan(target: str, dicom: Path, root: Path, *args: str):
    return run_cli(
        "privacy", "scan", f"target={target}", f"dicom={dicom}", f"paths.root_dir={root}", *args
    )


def test_the_one_list_is_the_basic_profile():
    names = by_keyword()
    for keyword in (
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
        "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
        "PerformingPhysicianName", "OperatorsName", "StudyDate", "SeriesDate", "AcquisitionDate",
        "ContentDate", "StudyTime", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
        "FrameOfReferenceUID", "OtherPatientIDs", "PatientAddress", "PatientTelephoneNumbers",
        "StudyID", "DeviceSerialNumber",
    ):  # fmt: skip
        assert keyword in names, keyword
    for kept in ("Rows", "Columns", "PixelSpacing", "RescaleSlope", "WindowCenter", "PixelData"):
        assert kept not in names, kept
    assert len(identifiers()) > 500


def test_deidentified_copies_keep_pixels_and_lose_the_profile(tmp_path, originals):
    out = tmp_path / "out"
    res = _deidentify(originals, out)
    assert res.returncode == 0, res.stderr
    assert (
        res.stdout.strip().endswith(
            "2 files written to " + str(out.resolve()) + ", 1 non-DICOM skipped, 0 failed"
        )
        or "2 files written" in res.stdout
    )
    assert not (out / "notes.txt").exists()
    table = identifiers()
    for rel in ("ct.dcm", "mr/mr.dcm"):
        a, b = pydicom.dcmread(originals / rel), pydicom.dcmread(out / rel)
        assert np.array_equal(a.pixel_array, b.pixel_array) and a.PixelData == b.PixelData
        for kw in ("Rows", "Columns", "BitsAllocated", "PixelSpacing", "PhotometricInterpretation",
                   "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):  # fmt: skip
            assert a.get(kw) == b.get(kw), kw
        for elem in a.iterall():
            if elem.tag in table and elem.VR != "SQ" and elem.value not in (None, "", b""):
                kept = b.get(elem.tag)
                assert kept is None or kept.value != elem.value, (rel, elem.keyword)
        assert not [e for e in b.iterall() if e.tag.is_private]
        assert b.PatientIdentityRemoved == "YES"
        assert "dicognito 0.19.0" in list(b.DeidentificationMethod)
        codes = [c.CodeValue for c in b.DeidentificationMethodCodeSequence]
        assert codes == ["113100", "113107"]
    assert _scan(str(out), originals, tmp_path).returncode == 0  # their attributes are read


def test_one_pseudonym_per_patient(tmp_path, originals):
    shutil.copy(originals / "mr" / "mr.dcm", originals / "mr" / "mr2.dcm")
    out = tmp_path / "out"
    assert _deidentify(originals, out).returncode == 0
    a, b = (pydicom.dcmread(out / "mr" / n) for n in ("mr.dcm", "mr2.dcm"))
    c = pydicom.dcmread(out / "ct.dcm")
    assert a.PatientID == b.PatientID != c.PatientID
    assert a.PatientID != "4MR1"


def test_deidentify_refuses_out_inside_in_and_a_full_out(tmp_path, originals):
    res = _deidentify(originals, originals / "copies")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "inside in" in res.stderr
    assert not (originals / "copies").exists()
    res = _deidentify(originals / "mr", originals)
    assert res.returncode == 2 and "contains in" in res.stderr
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    res = _deidentify(originals, out)
    assert res.returncode == 2 and "force=true" in res.stderr
    assert _deidentify(originals, out, "force=true").returncode == 0
    assert not (out / "old.txt").exists() and (out / "ct.dcm").is_file()


def test_scan_finds_planted_identifiers_masked(tmp_path, originals):
    mr = pydicom.dcmread(originals / "mr" / "mr.dcm")
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "meta.json").write_text(json.dumps({"patient": str(mr.PatientName)}))
    (planted / "rows.csv").write_text(f"id,label\n{mr.PatientID},1\n")
    (planted / "clean.md").write_text("# nothing here\n")
    report = tmp_path / "report.json"
    res = _scan(str(planted), originals, tmp_path, f"output={report}")
    assert res.returncode == 1, res.stderr
    lines = res.stdout.strip().splitlines()
    assert any(re.match(r".*meta\.json: PatientName value found \(C\*+1\)", x) for x in lines)
    assert any(re.match(r".*rows\.csv: PatientID value found \(4\*\*1\)", x) for x in lines)
    assert "CompressedSamples" not in res.stdout and "4MR1" not in res.stdout
    assert lines[-1].startswith("privacy scan: ")
    found = json.loads(report.read_text())["findings"]
    assert found and "4MR1" not in report.read_text()


def test_scan_passes_a_clean_folder(tmp_path, originals):
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "metrics.json").write_text(json.dumps({"test/auroc": 0.8072731, "loss": 0.185059}))
    (clean / "MLmodel").write_text("flavors:\n  pytorch: {}\n")
    res = _scan(str(clean), originals, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 identifiers found" in res.stdout


def test_privacy_needs_a_command_and_checks_its_config(tmp_path, originals):
    res = run_cli("privacy", f"target={tmp_path}", f"dicom={originals}")
    assert res.returncode == 2 and "give a command: scan" in res.stderr
    res = _scan(str(tmp_path / "nowhere"), originals, tmp_path)
    assert res.returncode == 2 and "target: not found" in res.stderr


@pytest.mark.slow  # a training run
def test_a_training_run_from_the_bundled_dicoms_carries_no_identifier(tmp_path):
    root = tmp_path / "scans"
    for k in range(8):  # 8 patients per class: each copy its own PatientID, names kept
        for cls, name in (("neg", "CT_small.dcm"), ("pos", "MR_small.dcm")):
            ds = pydicom.dcmread(pydicom_file(name))
            ds.PatientID = f"{ds.PatientID}-{k}"
            (root / cls).mkdir(parents=True, exist_ok=True)
            ds.save_as(root / cls / f"{cls}{k}.dcm")
    out = run_cli(
        "train",
        "data=image_folder",
        f"data.path={root}",
        "data.image_size=[16,16]",
        "data.batch_size=4",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=none",
        "evaluation.explain.enabled=false",
        f"paths.root_dir={tmp_path}",
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run_id = re.findall(r"[0-9a-f]{32}", out.stdout + out.stderr)[-1]
    res = _scan(f"runs:/{run_id}", root, tmp_path)
    assert res.returncode == 0, res.stdout[-3000:]


@pytest.mark.parametrize("name", ["privacy", "deidentify"])
def test_privacy_configs_compose_and_validate(name, tmp_path, originals):
    from medpipe.config import validate

    from conftest import compose_config

    overrides = (
        [f"target={tmp_path}", f"dicom={originals}"]
        if name == "privacy"
        else [f"in={originals}", f"out={tmp_path / 'copies'}"]
    )
    c = validate(compose_config(tmp_path, overrides, config_name=name), name)
    assert c["task_name"] == name
