"""ECG sources and signal preprocessing: real files from ../shared/data (skipped if absent), tiny
generated files (PhysioNet .mat, WFDB records, text tables), preprocessing and one-line errors."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from medpipe.config import validate
from medpipe.data import signal
from medpipe.data.prepare import prepare_dataset
from medpipe.data.processed import read_meta, read_split
from medpipe.data.sources import make_source
from medpipe.data.sources.ecg import AAMI_CLASSES, PHYSIONET2017_CLASSES, simulate_ecg
from medpipe.errors import ConfigError, DataError

from conftest import SHARED_DATA, run_cli

PHYSIONET_DIR = SHARED_DATA / "ecg" / "physionet2017_validation"
MITDB_DIR = SHARED_DATA / "ecg" / "mitdb"
needs_physionet = pytest.mark.skipif(
    not (PHYSIONET_DIR / "REFERENCE.csv").exists(), reason=f"{PHYSIONET_DIR} not present"
)
needs_mitdb = pytest.mark.skipif(
    not (MITDB_DIR / "100.dat").exists(), reason=f"{MITDB_DIR} not present"
)

PRE = {
    "resample_hz": 100,
    "bandpass": [0.5, 40],
    "bandpass_order": 3,
    "zscore": True,
    "window": {"mode": "fixed", "length": 3000, "stride": None},
}
COMMON = {"kind": "signal", "normalize": "none", "batch_size": 8}


def physionet_cfg(path: Path, **kw) -> dict:
    cfg = {
        "name": "physionet2017",
        "source": "physionet2017",
        "path": str(path),
        "reference": "REFERENCE.csv",
        "split": [0.7, 0.1, 0.2],
        "seed": 0,
        "preprocess": copy.deepcopy(PRE),
        **COMMON,
    }
    return {**cfg, **kw}


def wfdb_cfg(path: Path, **kw) -> dict:
    cfg = {
        "name": "mitdb",
        "source": "wfdb",
        "path": str(path),
        "records": ["t1"],
        "channel": 0,
        "annotator": "atr",
        "target": "beats",
        "window_before": 0.25,
        "window_after": 0.45,
        "hr_window_s": 10,
        "hr_stride_s": 5,
        "split": [0.7, 0.1, 0.2],
        "seed": 0,
        "preprocess": {"resample_hz": None, "bandpass": [0.5, 40], "zscore": True},
        **COMMON,
    }
    return {**cfg, **kw}


def table_cfg(path: Path, **kw) -> dict:
    cfg = {
        "name": "table",
        "source": "table",
        "path": str(path),
        "test_path": None,
        "delimiter": "auto",
        "label_column": "last",
        "header": False,
        "fs": 100,
        "task": "multiclass",
        "classes": None,
        "split": [0.6, 0.2, 0.2],
        "seed": 0,
        "preprocess": {"window": {"mode": "none"}},
        **COMMON,
    }
    return {**cfg, **kw}


def synthetic_cfg(**kw) -> dict:
    cfg = {
        "name": "synthetic_ecg",
        "source": "synthetic_ecg",
        "seed": 0,
        "n_train": 12,
        "n_val": 6,
        "n_test": 6,
        "duration_s": 10,
        "fs": 100,
        "heart_rate": [50, 120],
        "noise": 0.05,
        "baseline_wander": 0.2,
        "preprocess": {"bandpass": [0.5, 40], "zscore": True, "window": {"mode": "none"}},
        **COMMON,
    }
    return {**cfg, **kw}


def load(cfg: dict, tmp_path: Path):
    return make_source(cfg, str(tmp_path / "raw")).load()


# -- tiny generated files --------------------------------------------------------------------------
def write_physionet(folder: Path, n: int = 16, seed: int = 0) -> Path:
    """n records of 300 Hz, 5-40 s (some shorter than the 30 s window), labels N A O ~ in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        name = f"A{i + 1:05d}"
        secs = [5, 12, 35, 40][i % 4]
        x, _ = simulate_ecg(rng.uniform(55, 110), secs, 300, rng, 0.02, 0.1)
        scipy.io.savemat(folder / f"{name}.mat", {"val": (x * 1000).astype(np.int16)[None]})
        lines.append(f"{name},{'NAO~'[i % 4]}")
    (folder / "REFERENCE.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return folder


BEAT_SYMBOLS = ["N"] * 6 + ["V", "N", "A", "N"]


def write_wfdb(folder: Path, name: str = "t1", fs: int = 250, seconds: int = 120) -> Path:
    """A two-lead record at 60 bpm (one beat per second) with beat annotations on the R peaks."""
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(seconds * fs) / fs
    peaks = np.arange(fs // 2, seconds * fs - fs // 4, fs)  # 0.5 s, 1.5 s, ...
    ecg = np.zeros_like(t)
    for p in peaks:
        ecg += np.exp(-0.5 * ((np.arange(len(t)) - p) / (0.01 * fs)) ** 2)
    ecg += 0.05 * np.sin(2 * np.pi * 0.3 * t)
    sig = np.stack([ecg, -0.5 * ecg], axis=1)
    wfdb.wrsamp(
        name,
        fs,
        ["mV", "mV"],
        ["MLII", "V5"],
        p_signal=sig,
        fmt=["16", "16"],
        write_dir=str(folder),
    )
    symbols = [BEAT_SYMBOLS[i % len(BEAT_SYMBOLS)] for i in range(len(peaks))]
    # rhythm annotations ('+', not beats) just after every 10th beat, as in MIT-BIH
    samples = np.concatenate([peaks, peaks[::10] + 3])
    symbols += ["+"] * len(peaks[::10])
    order = np.argsort(samples, kind="stable")
    wfdb.wrann(name, "atr", samples[order], [symbols[i] for i in order], write_dir=str(folder))
    return folder


# -- preprocessing ---------------------------------------------------------------------------------
def test_resample_gives_the_expected_length_and_rate():
    x = np.random.default_rng(0).standard_normal((2, 3001))
    y, fs = signal.resample(x, 300, 100)
    assert y.shape == (2, 1001) and fs == 100.0
    y, fs = signal.resample(x, 360, 250)  # 25/36
    assert fs == 250.0 and y.shape[1] == int(np.ceil(3001 * 25 / 36))
    assert signal.resample(x, 300, None)[0] is x


def test_bandpass_removes_mains_hum_and_keeps_the_band():
    fs = 360
    t = np.arange(10 * fs) / fs
    keep, hum = np.sin(2 * np.pi * 5 * t), np.sin(2 * np.pi * 60 * t)
    y = signal.bandpass((keep + hum)[None], fs, 0.5, 40, order=3)[0]
    spectrum = np.abs(np.fft.rfft(y)) / (len(y) / 2)  # amplitude per 0.1 Hz bin
    assert spectrum[600] < 0.1  # 60 Hz: order 3, forward and backward: ~12x weaker
    assert abs(spectrum[50] - 1) < 0.02  # 5 Hz kept
    with pytest.raises(ConfigError, match=r"fs/2 = 50 Hz"):
        signal.bandpass(y[None], 100, 0.5, 60)


def test_zscore_per_channel_and_flat_channel():
    x = np.stack([np.linspace(0, 10, 500), np.full(500, 3.0)])
    y = signal.zscore(x)
    assert np.allclose(y[0].mean(), 0, atol=1e-9) and np.isclose(y[0].std(), 1)
    assert np.all(y[1] == 0) and np.isfinite(y).all()


def test_fixed_window_pads_short_records_and_keeps_their_length():
    recs = [np.arange(1, 501, dtype=np.float32)[None], np.arange(1, 1201, dtype=np.float32)[None]]
    cfg = {"window": {"mode": "fixed", "length": 1000}}
    x, lengths, rec = signal.preprocess_records(recs, 100, cfg)
    assert x.shape == (2, 1, 1000) and x.dtype == np.float32
    assert lengths.tolist() == [500, 1000] and rec.tolist() == [0, 1]
    assert np.array_equal(x[0, 0, :500], recs[0][0]) and np.all(x[0, 0, 500:] == 0)
    assert np.array_equal(x[1, 0], recs[1][0, :1000])


def test_sliding_windows_count_overlap_and_cover_the_end():
    rec = np.arange(1000, dtype=np.float32)[None]
    cfg = {"window": {"mode": "sliding", "length": 300, "stride": 200}}
    x, lengths, _ = signal.preprocess_records([rec], 100, cfg)
    # starts 0, 200, 400, 600 and one more ending at the last sample (700)
    assert x.shape == (5, 1, 300) and lengths.tolist() == [300] * 5
    assert np.array_equal(x[0, 0, 200:], x[1, 0, :100])  # overlap = length - stride
    assert x[-1, 0, -1] == 999 and x[-1, 0, 0] == 700
    x, _, _ = signal.preprocess_records([rec[:, :900]], 100, cfg)
    assert len(x) == 4  # 600 + 300 = 900: already covered
    x, lengths, rec_idx = signal.preprocess_records([rec[:, :120], rec], 100, cfg)
    assert lengths[0] == 120 and np.all(x[0, 0, 120:] == 0) and rec_idx.tolist() == [0] + [1] * 5


def test_mode_none_pads_to_the_longest_and_rejects_records_above_the_maximum():
    recs = [np.ones((2, n), np.float32) for n in (50, 80, 30)]
    x, lengths, _ = signal.preprocess_records(recs, 100, {"window": {"mode": "none"}})
    assert x.shape == (3, 2, 80) and lengths.tolist() == [50, 80, 30]
    assert x[2, :, 30:].sum() == 0 and x[2, :, :30].sum() == 60
    names = ["a.mat", "b.mat", "c.mat"]
    with pytest.raises(DataError, match=r"b\.mat: 80 samples, longer than .*length=60"):
        signal.preprocess_records(recs, 100, {"window": {"mode": "none", "length": 60}}, names)


def test_nan_in_a_signal_names_the_record():
    rec = np.ones((1, 100))
    rec[0, 42] = np.nan
    with pytest.raises(DataError, match=r"^rec7\.mat: 1 NaN/inf value.*sample 42"):
        signal.preprocess_records([np.ones((1, 100)), rec], 100, {}, names=["ok.mat", "rec7.mat"])


# -- PhysioNet 2017 --------------------------------------------------------------------------------
def test_physionet_tiny_records(tmp_path):
    folder = write_physionet(tmp_path / "pn")
    data = load(physionet_cfg(folder), tmp_path)
    assert data.classes == PHYSIONET2017_CLASSES == ["N", "A", "O", "noisy"]
    assert data.task == "multiclass" and data.kind == "signal" and data.scale == 1.0
    all_y = np.concatenate([data.splits[s].y for s in ("train", "val", "test")])
    assert np.bincount(all_y).tolist() == [4, 4, 4, 4]
    for s in ("train", "val", "test"):
        sp = data.splits[s]
        assert sp.x.shape[1:] == (1, 3000) and sp.x.dtype == np.float32 and sp.y.dtype == np.int64
        assert sp.lengths.dtype == np.int64 and len(sp.lengths) == len(sp.y)
    lengths = np.concatenate([data.splits[s].lengths for s in ("train", "val", "test")])
    # 5 s and 12 s records keep 500 and 1200 samples at 100 Hz; 35 s and 40 s are cut to 30 s
    assert sorted(set(lengths.tolist())) == [500, 1200, 3000]
    # every window carries its record's name (kept predictions); no record is in two splits
    ids = {s: set(data.splits[s].ids.tolist()) for s in ("train", "val", "test")}
    assert set().union(*ids.values()) == {f"A{i:05d}" for i in range(1, 17)}
    assert not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    # the hash of the inputs changes with any record
    before = make_source(physionet_cfg(folder), "").describe()
    scipy.io.savemat(folder / "A00001.mat", {"val": np.zeros((1, 900), np.int16)})
    assert make_source(physionet_cfg(folder), "").describe() != before


def test_physionet_bad_inputs_name_the_file(tmp_path):
    folder = write_physionet(tmp_path / "pn", n=8)
    cfg = physionet_cfg(folder)
    scipy.io.savemat(folder / "A00002.mat", {"data": np.zeros((1, 10), np.int16)})
    with pytest.raises(DataError, match=r"A00002\.mat: no 'val' array"):
        load(cfg, tmp_path)
    raw = (folder / "A00003.mat").read_bytes()
    (folder / "A00002.mat").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"A00002\.mat: unreadable \.mat file"):
        load(cfg, tmp_path)
    (folder / "A00002.mat").unlink()
    with pytest.raises(DataError, match=r"A00002\.mat: record A00002 is listed in REFERENCE\.csv"):
        load(cfg, tmp_path)
    (folder / "REFERENCE.csv").write_text("A00001,N\nA00003,X\n")
    with pytest.raises(DataError, match=r"REFERENCE\.csv:2: record A00003 has unknown label 'X'"):
        load(cfg, tmp_path)
    (folder / "REFERENCE.csv").unlink()
    with pytest.raises(DataError, match=r"REFERENCE\.csv: reference file not found"):
        load(cfg, tmp_path)


@needs_physionet
def test_physionet_real_validation_set(tmp_path):
    out = prepare_dataset(physionet_cfg(PHYSIONET_DIR), str(tmp_path / "p"), str(tmp_path / "r"))
    meta = read_meta(out)
    counts = np.sum([meta.class_counts[s] for s in ("train", "val", "test")], axis=0)
    assert counts.tolist() == [150, 50, 70, 30]
    assert meta.sizes == {"train": 210, "val": 30, "test": 60}
    assert meta.sample_shape == [1, 3000] and meta.score_classes == ["N", "A", "O"]
    train = read_split(out, "train")
    assert train.lengths is not None and train.lengths.min() == 1001  # 3002 samples at 300 Hz
    assert np.isfinite(train.x).all()


# -- WFDB ------------------------------------------------------------------------------------------
def test_wfdb_beats_and_heart_rate_on_a_generated_record(tmp_path):
    folder = write_wfdb(tmp_path / "db")
    data = load(wfdb_cfg(folder, channel=["MLII", 1]), tmp_path)
    assert data.classes == AAMI_CLASSES and data.task == "multiclass"
    y = np.concatenate([data.splits[s].y for s in ("train", "val", "test")])
    assert len(y) == 120  # one sample per beat (0.5 s ... 119.5 s), none near the edges
    before, after = round(0.25 * 250), round(0.45 * 250)
    assert data.splits["train"].x.shape[1:] == (2, before + after)
    assert data.info["skipped_symbols"] == {"+": 12}
    assert np.bincount(y, minlength=5).tolist() == [96, 12, 12, 0, 0]
    # the R peak sits at window_before in every window
    x = data.splits["train"].x
    assert np.all(np.argmax(x[:, 0], axis=1) == before)

    hr = load(wfdb_cfg(folder, target="heart_rate"), tmp_path)
    assert hr.task == "regression" and hr.classes == ["heart_rate_bpm"]
    sizes = {s: len(hr.splits[s]) for s in ("train", "val", "test")}
    assert sizes == {"train": 16, "val": 2, "test": 4}  # 84 s, 12 s, 24 s blocks; 10 s every 5 s
    for s in ("train", "val", "test"):
        assert hr.splits[s].y.dtype == np.float32
        assert np.allclose(hr.splits[s].y, 60.0, atol=0.01)
        assert hr.splits[s].x.shape[1:] == (1, 2500)


def test_wfdb_bad_inputs_name_the_record(tmp_path):
    folder = write_wfdb(tmp_path / "db")
    with pytest.raises(DataError, match=r"record t1 has no channel 'V1'; it has 2 channel"):
        load(wfdb_cfg(folder, channel="V1"), tmp_path)
    dat = folder / "t1.dat"
    dat.write_bytes(dat.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"t1: cannot read the samples of record t1 from t1\.dat"):
        load(wfdb_cfg(folder), tmp_path)
    dat.unlink()
    with pytest.raises(DataError, match=r"t1\.dat: signal file of record t1"):
        load(wfdb_cfg(folder), tmp_path)
    write_wfdb(folder)
    (folder / "t1.atr").unlink()
    with pytest.raises(DataError, match=r"t1\.atr: annotation file of record t1 not found"):
        make_source(wfdb_cfg(folder), "").describe()
    with pytest.raises(DataError, match=r"t2\.hea: record t2 has no header file"):
        load(wfdb_cfg(folder, records=["t2"]), tmp_path)


@needs_mitdb
def test_mitdb_record_100(tmp_path):
    cfg = wfdb_cfg(MITDB_DIR, records=[100], preprocess={**PRE, "resample_hz": 180})
    del cfg["preprocess"]["window"]
    beats = load(cfg, tmp_path)
    counts = sum(np.bincount(beats.splits[s].y, minlength=5) for s in ("train", "val", "test"))
    # 2239 N, 33 A (S), 1 V; the first and last N beats are too close to the record's edges
    assert counts.tolist() == [2237, 33, 1, 0, 0]
    assert beats.info["beats_outside_record"] == 2 and beats.info["unstratified_classes"] == ["V"]
    assert beats.splits["train"].x.shape[1:] == (1, 126)
    hr = load({**cfg, "target": "heart_rate"}, tmp_path)
    rates = np.concatenate([hr.splits[s].y for s in ("train", "val", "test")])
    assert abs(rates.mean() - 75.5) < 1.0 and rates.min() > 60 and rates.max() < 95


# -- text tables -----------------------------------------------------------------------------------
def _rows(n: int = 30, t: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return rng.standard_normal((n, t)) + y[:, None], y


@pytest.mark.parametrize(
    "delimiter, label_column, header",
    [(",", "last", False), ("\t", "first", True), (" ", "last", False), ("  ", "first", False)],
)
def test_table_csv_tsv_whitespace(tmp_path, delimiter, label_column, header):
    x, y = _rows()
    lines = ["a" + delimiter + "b"] if header else []
    for row, label in zip(x, y, strict=True):
        vals = [f"{v:.6f}" for v in row]
        vals = [str(label), *vals] if label_column == "first" else [*vals, f"{label}.0"]
        lines += [delimiter.join(vals), ""] if len(lines) == 3 else [delimiter.join(vals)]
    path = tmp_path / "t.txt"
    path.write_text("\n".join(lines) + "\n")
    cfg = table_cfg(path, label_column=label_column, header=header)
    data = load(cfg, tmp_path)
    assert data.classes == ["0", "1", "2"] and data.task == "multiclass"
    ys = np.concatenate([data.splits[s].y for s in ("train", "val", "test")])
    assert np.bincount(ys).tolist() == [10, 10, 10]
    assert data.splits["train"].x.shape[1:] == (1, 40)
    # the sample values are read back exactly (to the written precision), rows in their order
    tr = data.splits["train"]
    i = int(np.argmin(np.abs(x - tr.x[0, 0]).sum(axis=1)))
    assert np.allclose(x[i], tr.x[0, 0], atol=1e-5) and tr.y[0] == y[i]


def test_table_regression_and_test_file(tmp_path):
    x, _ = _rows(20)
    target = np.linspace(50, 100, 20)
    (tmp_path / "a.csv").write_text(
        "\n".join(",".join(f"{v:g}" for v in [*r, t]) for r, t in zip(x, target, strict=True))
    )
    (tmp_path / "b.csv").write_text("\n".join(",".join(f"{v:g}" for v in [*r, 70]) for r in x[:5]))
    cfg = table_cfg(
        tmp_path / "a.csv", task="regression", classes=["hr"], test_path=str(tmp_path / "b.csv")
    )
    data = load(cfg, tmp_path)
    assert data.task == "regression" and data.classes == ["hr"]
    assert len(data.splits["test"]) == 5 and np.all(data.splits["test"].y == 70)
    assert len(data.splits["train"]) + len(data.splits["val"]) == 20
    assert data.splits["train"].y.dtype == np.float32


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1,2,3,0\n4,5,6,1\n7,8,1\n", r"t\.csv:3: 3 columns, but line 1 has 4"),
        ("1,2,3,0\n4,x,6,1\n", r"t\.csv:2: value 'x' \(column 2\) is not a number"),
        ("1,2,3,0\n\n4,5,nan,1\n", r"t\.csv:3: value 'nan' \(column 3\) is not finite"),
        ("\n\n", r"t\.csv: empty file"),
    ],
)
def test_table_bad_rows_name_file_and_line(tmp_path, text, expected):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(DataError, match=expected):
        load(table_cfg(tmp_path / "t.csv"), tmp_path)


# -- synthetic ECG ---------------------------------------------------------------------------------
def test_synthetic_heart_rate_is_what_neurokit_finds():
    import neurokit2 as nk

    rng = np.random.default_rng(1)
    for hr in (52.0, 77.7, 118.0):
        x, true_rate = simulate_ecg(hr, 10, 100, rng, noise=0.05, baseline_wander=0.2)
        assert abs(true_rate - hr) < 0.2 and x.shape == (1000,)
        for rec in (x, signal.bandpass(x[None], 100, 0.5, 40)[0]):
            _, info = nk.ecg_peaks(rec, sampling_rate=100)
            found = 60 * 100 / np.median(np.diff(info["ECG_R_Peaks"]))  # robust to a false peak
            assert abs(found - true_rate) < 2.0, (hr, found)


def test_synthetic_ecg_source(tmp_path):
    import neurokit2 as nk

    data = load(synthetic_cfg(), tmp_path)
    assert data.task == "regression" and data.classes == ["heart_rate_bpm"]
    tr = data.splits["train"]
    assert tr.x.shape == (12, 1, 1000) and tr.y.dtype == np.float32
    assert tr.lengths.tolist() == [1000] * 12
    assert tr.y.min() >= 50 and tr.y.max() <= 120
    assert np.allclose(tr.x.mean(axis=-1), 0, atol=1e-4)  # z-scored
    for i in range(3):  # the target is the rate of the R peaks in the processed record
        _, info = nk.ecg_peaks(tr.x[i, 0], sampling_rate=100)
        assert abs(60 * 100 / np.median(np.diff(info["ECG_R_Peaks"])) - tr.y[i]) < 2.0
    again = load(synthetic_cfg(n_train=5), tmp_path)
    assert np.array_equal(again.splits["val"].x, data.splits["val"].x)  # own stream per split
    assert np.array_equal(again.splits["train"].y, tr.y[:5])


def test_synthetic_sliding_windows_inherit_the_record_target(tmp_path):
    window = {"mode": "sliding", "length": 400, "stride": 300}
    data = load(synthetic_cfg(preprocess={"window": window}), tmp_path)
    whole = load(synthetic_cfg(), tmp_path)
    tr = data.splits["train"]
    assert tr.x.shape == (36, 1, 400)  # starts 0, 300, 600 in each 1000-sample record
    assert np.array_equal(tr.y, np.repeat(whole.splits["train"].y, 3))


def test_prepare_writes_lengths_and_meta(tmp_path):
    out = prepare_dataset(synthetic_cfg(), str(tmp_path / "p"), str(tmp_path / "r"))
    meta = read_meta(out)
    assert meta.kind == "signal" and meta.task == "regression" and meta.sample_shape == [1, 1000]
    assert meta.source["neurokit2"] and meta.source["preprocess"]["zscore"] is True
    assert read_split(out, "test").lengths.tolist() == [1000] * 6


# -- configuration and CLI -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data=physionet2017"], "data.path: required: the folder holding the A*.mat records"),
        (["data=physionet2017", "data.path=/no/such"], "data.path: folder not found: /no/such"),
        (["data=mitdb_beats", "data.path=/no/such"], "data.path: folder not found: /no/such"),
        (["data=ecg_table", "data.path=/no/t.csv"], "data.path: file not found: /no/t.csv"),
        (
            ["data=synthetic_ecg", "data.preprocess.bandpass=[0.5,60]"],
            "data.preprocess.bandpass: high 60.0 Hz must be below fs/2 = 50 Hz",
        ),
        (
            ["data=synthetic_ecg", "data.preprocess.window.mode=sliding"],
            "data.preprocess.window.length: required by window.mode=sliding",
        ),
        (["data=synthetic_ecg", "data.heart_rate=[120,50]"], "data.heart_rate: [low, high] bpm"),
        (["data=synthetic_ecg", "+data.preprocess.zscor=true"], "data.preprocess.zscor: unknown"),
        (["data=mitdb_beats", "data.target=rr"], "data.target: Input should be 'beats'"),
        (["data=ecg_table", "data.path=x", "data.split=[0.5,0.1,0.1]"], "data.split: train/val"),
    ],
)
def test_config_errors_are_one_line_per_key(make_cfg, overrides, expected):
    cfg = make_cfg(*overrides, config_name="prepare")
    with pytest.raises(ConfigError) as err:
        validate(cfg, "prepare")
    assert any(line.startswith(expected) for line in err.value.lines()), err.value.lines()


def test_ecg_data_configs_are_valid(make_cfg):
    for name in ("synthetic_ecg", "mitdb_beats", "mitdb_hr"):
        path = [] if name == "synthetic_ecg" else [f"data.path={MITDB_DIR.parent}"]
        validate(make_cfg(f"data={name}", *path, config_name="prepare"), "prepare")
    cfg = make_cfg("data=mitdb_hr", config_name="prepare")
    assert cfg.data.target == "heart_rate" and cfg.data.preprocess.resample_hz == 100
    assert cfg.data.preprocess.bandpass == [0.5, 40]


def test_cli_bad_record_exits_2_with_one_line_naming_it(tmp_path):
    folder = write_physionet(tmp_path / "pn", n=6)
    scipy.io.savemat(folder / "A00004.mat", {"ecg": np.zeros((1, 10), np.int16)})
    out = run_cli(
        "prepare", "data=physionet2017", f"data.path={folder}", f"paths.root_dir={tmp_path}"
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("medpipe: error:")]
    assert len(errors) == 1 and "A00004.mat: no 'val' array" in errors[0], out.stderr
