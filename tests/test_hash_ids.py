"""privacy.hash_ids=true (README "Privacy", "Hashed ids"): file names and record ids become
`h_` + 16 hex digits of HMAC-SHA256(salt, id) in the processed data, the kept predictions and the
MLflow run; one salt gives the same hashes every time, another salt others; the salt is made once,
private (0600), and never reaches MLflow."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from medpipe.data.prepare import prepare_dataset
from medpipe.data.processed import SPLITS, read_meta, read_split
from medpipe.errors import ConfigError
from medpipe.privacy.hashing import SALT_ENV, IdHasher, hasher_of, read_salt
from medpipe.privacy.scanning import Scan, needles_from_names

from conftest import compose_config, run_cli, write_png

HASHED = re.compile(r"^h_[0-9a-f]{16}$")


def identifying_folder(root: Path, per_class: int = 6) -> list[str]:
    """Class subfolders of PNGs named like a careless export: the patient's name and number."""
    rng = np.random.default_rng(0)
    stems = []
    for label, cls in enumerate(("neg", "pos")):
        for k in range(per_class):
            stem = f"DOE^JOHN_{12340 + 100 * label + k}"
            pixels = np.clip(rng.normal(80 + 80 * label, 25, (16, 16)), 0, 255).astype(np.uint8)
            write_png(root / cls / f"{stem}.png", pixels)
            stems.append(stem)
    return stems


def folder_data(root: Path) -> dict:
    return {
        "name": "named",
        "source": "image_folder",
        "kind": "image",
        "path": str(root),
        "image_size": [16, 16],
        "channels": 1,
        "batch_size": 4,
        "split": [0.5, 0.25, 0.25],
        "seed": 0,
    }


def scan_folder(folder: Path, stems: list[str]) -> list[str]:
    scan = Scan(needles_from_names(stems))
    scan.folder(folder, folder.name)
    return [f.where for f in scan.findings]


@pytest.fixture(autouse=True)
def _no_env_salt(monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)


def test_a_hash_is_stable_per_salt_and_differs_between_salts():
    a, b = IdHasher(b"0" * 32), IdHasher(b"1" * 32)
    name = "pos/DOE^JOHN_12345.png"
    assert HASHED.match(a(name)) and a(name) == IdHasher(b"0" * 32)(name)
    assert a(name) != b(name) and a(name) != a("pos/DOE^JOHN_12346.png")
    assert a.salt_id != b.salt_id and "0000" not in repr(a)
    ids = np.array(["x/1.png", "y/2.png", "x/1.png"])
    assert a.array(ids).tolist() == [a("x/1.png"), a("y/2.png"), a("x/1.png")]  # one id, one hash
    with pytest.raises(ConfigError, match="at least 16"):
        IdHasher(b"short")


def test_the_salt_file_is_made_once_private_and_refused_when_unsafe(tmp_path, monkeypatch):
    path = tmp_path / "keys" / ".medpipe_salt"
    assert hasher_of({"hash_ids": False, "salt_file": str(path)}) is None
    assert not path.exists()  # made on first use only
    salt, _ = read_salt(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.fullmatch(rb"[0-9a-f]{64}", salt)  # 32 random bytes, as hex text
    assert read_salt(path)[0] == salt  # made once
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    monkeypatch.setenv(SALT_ENV, salt.decode())  # the file's text as the variable: same hashes
    assert hasher_of({"hash_ids": True})("a") == IdHasher(salt)("a")
    monkeypatch.setenv(SALT_ENV, "too short")
    with pytest.raises(ConfigError, match="at least 16"):
        hasher_of({"hash_ids": True, "salt_file": str(path)})
    monkeypatch.delenv(SALT_ENV)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"every user.*chmod 600"):
        read_salt(path)
    path.chmod(0o600)
    path.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        read_salt(path)
    with pytest.raises(ConfigError, match="is not a file"):
        read_salt(tmp_path)


def test_prepared_ids_are_hashed_and_the_names_gone(tmp_path, monkeypatch):
    stems = identifying_folder(tmp_path / "images")
    data = folder_data(tmp_path / "images")
    processed, raw = str(tmp_path / "processed"), str(tmp_path / "raw")
    privacy = {"hash_ids": True, "salt_file": str(tmp_path / ".medpipe_salt")}

    plain = prepare_dataset(data, processed, raw)
    hashed = prepare_dataset(data, processed, raw, privacy=privacy)
    assert hashed != plain  # the fingerprint says the ids are hashed
    assert scan_folder(plain, stems)  # <split>_ids.npy hold the file names
    assert scan_folder(hashed, stems) == []
    salt = (tmp_path / ".medpipe_salt").read_text().strip()
    assert salt not in (hashed / "meta.json").read_text()
    hasher = IdHasher(salt.encode())
    for s in SPLITS:
        a, b = read_split(plain, s), read_split(hashed, s)
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)  # only the ids differ
        assert b.ids.tolist() == [hasher(i) for i in a.ids.tolist()]
        assert all(HASHED.match(i) for i in b.ids.tolist())
    assert read_meta(hashed).source["salt_id"] == hasher.salt_id

    # the same salt: the same folder and hashes; another salt: another folder, other hashes
    assert prepare_dataset(data, processed, raw, privacy=privacy) == hashed
    monkeypatch.setenv(SALT_ENV, "another salt, long enough")
    other = prepare_dataset(data, processed, raw, privacy=privacy)
    assert other not in (plain, hashed)
    assert set(read_split(other, "test").ids).isdisjoint(read_split(hashed, "test").ids)


def test_record_names_of_signals_are_hashed_per_record(tmp_path):
    from test_ecg_data import physionet_cfg, write_physionet

    folder = write_physionet(tmp_path / "pn")
    privacy = {"hash_ids": True, "salt_file": str(tmp_path / ".medpipe_salt")}
    args = (str(tmp_path / "processed"), str(tmp_path / "raw"))
    plain = prepare_dataset(physionet_cfg(folder), *args)
    hashed = prepare_dataset(physionet_cfg(folder), *args, privacy=privacy)
    hasher = hasher_of(privacy)
    for s in SPLITS:  # every window of a record carries that record's one hash
        names = read_split(plain, s).ids.tolist()
        assert read_split(hashed, s).ids.tolist() == [hasher(n) for n in names]
    assert scan_folder(hashed, [f"A{i:05d}" for i in range(1, 17)]) == []


@pytest.mark.parametrize("name", ["train", "prepare", "predict"])
def test_commands_that_write_ids_take_privacy_hash_ids(tmp_path, name):
    from medpipe.config import validate

    (tmp_path / "x.ckpt").write_bytes(b"")
    extra = {"predict": [f"ckpt_path={tmp_path / 'x.ckpt'}", "inputs=scans"]}.get(name, [])
    c = validate(compose_config(tmp_path, ["privacy.hash_ids=true", *extra], name), name)
    assert c["privacy"]["hash_ids"] is True
    assert c["privacy"]["salt_file"] == f"{tmp_path}/.medpipe_salt"


def _train(root: Path, images: Path, *args: str):
    out = run_cli(
        "train",
        "data=image_folder",
        f"data.path={images}",
        "data.image_size=[16,16]",
        "data.batch_size=4",
        "data.split=[0.5,0.25,0.25]",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=none",
        "log_model=false",
        "evaluation.explain.enabled=false",
        "evaluation.bootstrap.n=50",
        f"paths.root_dir={root}",
        *args,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return re.findall(r"MLflow run ([0-9a-f]{32})", out.stdout)[-1]


def _scan_everything(root: Path, run_id: str, stems: list[str], extra: list[str] = ()) -> list:
    """Findings of the stems (and `extra` values) in root's outputs, processed data and run."""
    from medpipe.privacy.scanning import scan_run
    from medpipe.tracking.store import tracking_uri

    scan = Scan(needles_from_names([*stems, *extra]))
    for sub in ("logs", "data"):
        scan.folder(root / sub, sub)
    scan_run(scan, tracking_uri(None, str(root / "logs" / "mlflow")), run_id)
    return scan.findings


@pytest.mark.slow  # two training runs, an evaluation and a prediction
def test_a_hashed_run_carries_no_file_name(tmp_path):
    images = tmp_path / "images"
    stems = identifying_folder(images)

    plain = tmp_path / "plain"
    run = _train(plain, images)
    found = {f.where for f in _scan_everything(plain, run, stems)}
    assert any(w.endswith("predictions/test.csv") for w in found), found
    assert any(w.endswith("_ids.npy") for w in found), found

    hashed = tmp_path / "hashed"
    run = _train(hashed, images, "privacy.hash_ids=true")
    salt_file = hashed / ".medpipe_salt"
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    salt = salt_file.read_text().strip()
    assert _scan_everything(hashed, run, stems, [salt]) == []
    test_csv = next((hashed / "logs").rglob("predictions/test.csv"))
    ids = [line.split(",")[1] for line in test_csv.read_text().splitlines()[1:]]
    assert ids and all(HASHED.match(i) for i in ids)

    # evaluate re-reads the run's hashed folder (no second, plain one is prepared)
    ckpt = max(hashed.rglob("best.ckpt"), key=os.path.getmtime)
    folders = sorted((hashed / "data" / "processed").iterdir())
    res = run_cli("evaluate", f"ckpt_path={ckpt}", f"output_dir={hashed / 'eval'}",
                  f"paths.root_dir={hashed}")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted((hashed / "data" / "processed").iterdir()) == folders
    assert scan_folder(hashed / "eval", stems) == []

    # predict keeps the names it is given, or hashes them as training did (same salt, same file)
    out = tmp_path / "predicted.csv"
    res = run_cli("predict", f"ckpt_path={ckpt}", f"inputs={images}", f"output={out}",
                  f"paths.root_dir={hashed}", "privacy.hash_ids=true")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    scan = Scan(needles_from_names(stems))
    scan.file(out, out.name)
    assert scan.findings == []
    predicted = {line.split(",")[0] for line in out.read_text().splitlines()[1:]}
    assert set(ids) <= predicted and all(HASHED.match(i) for i in predicted)
    res = run_cli("predict", f"ckpt_path={ckpt}", f"inputs={images}", f"output={out}",
                  f"paths.root_dir={hashed}")  # fmt: skip
    assert res.returncode == 0 and stems[0] in out.read_text()
