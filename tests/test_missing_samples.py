"""Missing samples in signal records (data.preprocess.missing): each rule on small records, through
the PhysioNet 2017 and table sources as training prepares them (counts in the metadata), in the
MLflow dataset profile, and in predict's reading of new files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from medpipe.config import validate
from medpipe.data import signal
from medpipe.data.prepare import prepare_dataset
from medpipe.data.processed import read_meta, read_split
from medpipe.data.signal_files import read_signal_file, windows_for_prediction
from medpipe.errors import ConfigError, DataError
from medpipe.predicting import predict_files
from medpipe.tracking.mlflow_run import missing_profile
from test_ecg_data import table_cfg as ecg_table_cfg

COMMON = {"kind": "signal", "normalize": "zscore", "batch_size": 8}


def gappy(n: int = 100, start: int = 40, stop: int = 50, channels: int = 1) -> np.ndarray:
    """A ramp (C, n) with NaN over [start, stop) in channel 0."""
    x = np.tile(np.arange(n, dtype=np.float64), (channels, 1))
    x[0, start:stop] = np.nan
    return x


# -- the rules on one record -----------------------------------------------------------------------
def test_error_is_the_default_and_names_the_record():
    with pytest.raises(DataError, match=r"^rec7\.mat: 10 NaN/inf value.*sample 40.*missing"):
        signal.preprocess_records([np.ones((1, 100)), gappy()], 100, {}, ["ok.mat", "rec7.mat"])
    with pytest.raises(DataError, match=r"^rec7\.mat: "):
        signal.preprocess_records([gappy()], 100, {"missing": "error"}, ["rec7.mat"])


def test_drop_record_leaves_the_record_out():
    recs = [np.ones((1, 100)), gappy(), np.full((1, 100), 2.0)]
    x, lengths, rec = signal.preprocess_records(recs, 100, {"missing": "drop_record"})
    assert rec.tolist() == [0, 2] and x.shape == (2, 1, 100)
    with pytest.raises(signal.DroppedRecord, match=r"^b: 10 missing"):
        signal.filter_record(gappy(), 100, {"missing": "drop_record"}, "b")


def test_drop_record_counts_per_split_and_fails_on_an_emptied_split(caplog):
    n_missing = [0, 10, 0, 3, 0]
    groups = {"train": np.array([0, 1, 2]), "val": np.array([3]), "test": np.array([4])}
    with pytest.raises(DataError, match=r"^data: every one of the 1 val record\(s\)"):
        signal.missing_summary({"missing": "drop_record"}, n_missing, groups, list("abcde"), "data")
    groups = {"train": np.array([0, 1, 3]), "val": np.array([2]), "test": np.array([4])}
    with caplog.at_level("WARNING"):
        info = signal.missing_summary(
            {"missing": "drop_record"}, n_missing, groups, list("abcde"), "data"
        )
    assert info["dropped_records"] == {"train": 2, "val": 0, "test": 0}
    assert info["records_with_gaps"] == {"train": 2, "val": 0, "test": 0}
    assert info["filled_samples"] == {"train": 0, "val": 0, "test": 0}
    assert "left out 2 record(s)" in caplog.text and "b, d" in caplog.text
    assert signal.missing_summary({}, n_missing, groups, list("abcde"), "data") is None


def test_interpolate_fills_linearly_and_nearest_at_the_ends():
    x = gappy(channels=2)
    x[1, :5] = np.nan  # leading gap
    x[1, -3:] = np.inf  # trailing gap
    y, fs = signal.filter_record(x, 100, {"missing": "interpolate"}, "r")
    assert fs == 100 and y.shape == (2, 100)
    np.testing.assert_allclose(y[0], np.arange(100))  # a ramp interpolates to itself
    np.testing.assert_allclose(y[1, :5], 5.0)
    np.testing.assert_allclose(y[1, -3:], 96.0)
    np.testing.assert_allclose(y[1, 5:-3], np.arange(5, 97))
    bad = np.ones((2, 50))
    bad[1] = np.nan
    with pytest.raises(DataError, match=r"^rec3: channel 1 has no finite sample"):
        signal.filter_record(bad, 100, {"missing": "interpolate"}, "rec3")


def test_zero_and_mask_zeroes_the_gap_and_adds_a_mask_channel():
    pre = {"missing": "zero_and_mask", "bandpass": [0.5, 40], "zscore": True}
    x, lengths, rec = signal.preprocess_records([gappy(), np.ones((1, 100))], 100, pre)
    assert x.shape == (2, 2, 100)  # C + 1 channels
    gap = np.zeros(100, bool)
    gap[40:50] = True
    assert (x[0, 0, gap] == 0).all() and (x[0, 0, ~gap] != 0).any()
    assert (x[0, 1] == (~gap).astype(np.float32)).all()  # 0 exactly at the gap
    assert (x[1, 1] == 1).all()  # a record without gaps: all ones
    # the filter saw an interpolated ramp, not a step into 0: no ringing next to the gap
    y, _ = signal.filter_record(gappy()[:, :], 100, {**pre, "missing": "interpolate"}, "r")
    np.testing.assert_allclose(x[0, 0, ~gap], y[0, ~gap], atol=1e-6)


def test_zero_and_mask_per_channel_gaps_and_one_mask():
    x = gappy(channels=2)
    x[1, 70:75] = np.nan
    y, _ = signal.filter_record(x, 100, {"missing": "zero_and_mask"}, "r")
    assert y.shape == (3, 100)
    assert (y[0, 40:50] == 0).all() and (y[0, 70:75] == np.arange(70, 75)).all()
    assert (y[1, 70:75] == 0).all() and (y[1, 40:50] == np.arange(40, 50)).all()
    assert np.nonzero(y[2] == 0)[0].tolist() == [*range(40, 50), *range(70, 75)]


@pytest.mark.parametrize(
    ("fs", "target", "gap", "expected"),
    [
        (300, 100, (14, 17), [5]),  # the three raw samples output sample 5 stands for
        (300, 100, (15, 18), [5, 6]),  # straddling two output samples: both missing
        (300, 100, (16, 17), [5]),  # a one-sample gap is not lost when downsampling
        (100, 200, (10, 11), [19, 20, 21]),  # upsampling: every sample interpolated from it
        (100, 50, (5, 8), [2, 3, 4]),  # downsampling by 2: half an output period each side
    ],
)
def test_the_mask_through_resampling_never_shrinks_a_gap(fs, target, gap, expected):
    observed = np.ones((1, 60), bool)
    observed[0, gap[0] : gap[1]] = False
    mask = signal.resample_mask(observed, fs, target)
    n_out = len(signal.resample(np.ones((1, 60)), fs, target)[0][0])
    assert mask.shape == (1, n_out)
    assert np.nonzero(~mask[0])[0].tolist() == expected
    x = np.where(observed, 1.0, np.nan)
    y, _ = signal.filter_record(x, fs, {"missing": "zero_and_mask", "resample_hz": target}, "r")
    assert np.nonzero(y[1] == 0)[0].tolist() == expected and set(np.unique(y[1])) <= {0.0, 1.0}


def test_the_rule_is_validated(make_cfg):
    cfg = make_cfg("data=synthetic_ecg", "data.preprocess.missing=fill", config_name="prepare")
    with pytest.raises(ConfigError) as err:
        validate(cfg, "prepare")
    assert any(line.startswith("data.preprocess.missing:") for line in err.value.lines())
    for rule in ("error", "drop_record", "interpolate", "zero_and_mask"):
        cfg = make_cfg(
            "data=synthetic_ecg", f"data.preprocess.missing={rule}", config_name="prepare"
        )
        validate(cfg, "prepare")
    for name in ("synthetic_ecg", "physionet2017", "mitdb_beats", "mitdb_hr", "ecg_table"):
        cfg = make_cfg(f"data={name}", config_name="prepare")
        assert cfg.data.preprocess.missing == "error"


# -- a PhysioNet 2017 folder, prepared as training prepares it ------------------------------------
def write_physionet_gaps(folder: Path, gapped: set[int], n: int = 10) -> Path:
    """n 4 s records at 300 Hz (labels N and A in turn); those in `gapped` get a 0.5 s NaN gap,
    their `val` float64 as benchmarks/ecg_gaps.py writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(1200) / 300
    lines = []
    for i in range(n):
        val = np.round(1000 * np.sin(2 * np.pi * (1 + 0.1 * i) * t))[None]
        if i in gapped:
            val = val.astype(np.float64)
            val[0, 300 : 300 + 150] = np.nan
        else:
            val = val.astype(np.int16)
        scipy.io.savemat(folder / f"A{i + 1:05d}.mat", {"val": val})
        lines.append(f"A{i + 1:05d},{'NA'[i % 2]}")
    (folder / "REFERENCE.csv").write_text("\n".join(lines) + "\n")
    return folder


def physionet_cfg(path: Path, rule: str) -> dict:
    return {
        "name": "physionet2017",
        "source": "physionet2017",
        "path": str(path),
        "reference": "REFERENCE.csv",
        "split": [0.6, 0.2, 0.2],
        "seed": 0,
        "preprocess": {
            "resample_hz": 100,
            "bandpass": [0.5, 40],
            "zscore": True,
            "missing": rule,
            "window": {"mode": "fixed", "length": 400},
        },
        **COMMON,
    }


def _prepare(cfg: dict, tmp_path: Path) -> Path:
    return prepare_dataset(cfg, str(tmp_path / "processed"), str(tmp_path / "raw"))


def _record_splits(folder: Path) -> dict[str, set[str]]:
    return {s: set(read_split(folder, s).ids.tolist()) for s in ("train", "val", "test")}


def test_physionet_with_gaps_under_each_rule(tmp_path):
    gapped = {1, 4, 7}
    src = write_physionet_gaps(tmp_path / "pn", gapped)
    names = {f"A{i + 1:05d}" for i in gapped}
    with pytest.raises(DataError, match=r"A0000[258]\.mat: 150 NaN/inf value"):
        _prepare(physionet_cfg(src, "error"), tmp_path)

    full = _prepare(physionet_cfg(src, "interpolate"), tmp_path)
    meta = read_meta(full)
    info = meta.source["missing"]
    per_split = _record_splits(full)
    expected = {s: len(per_split[s] & names) for s in per_split}
    assert info["rule"] == "interpolate" and info["records_with_gaps"] == expected
    assert info["filled_samples"] == {s: 150 * n for s, n in expected.items()}
    assert info["dropped_records"] == {"train": 0, "val": 0, "test": 0}
    assert meta.channels == 1 and np.isfinite(read_split(full, "train").x).all()

    dropped = _prepare(physionet_cfg(src, "drop_record"), tmp_path)
    info = read_meta(dropped).source["missing"]
    assert info["dropped_records"] == expected and info["filled_samples"]["train"] == 0
    assert _record_splits(dropped) == {s: per_split[s] - names for s in per_split}

    masked = _prepare(physionet_cfg(src, "zero_and_mask"), tmp_path)
    meta = read_meta(masked)
    assert meta.channels == 2 and meta.sample_shape == [2, 400]
    assert meta.mean[-1] == 0.0 and meta.std[-1] == 1.0  # the mask stays 0/1 when normalised
    assert meta.source["missing"]["mask_channel"] == "last"
    for s in ("train", "val", "test"):
        split = read_split(masked, s)
        for ids, x in zip(split.ids, split.x, strict=True):
            gap = x[1] == 0
            # raw 300-449 (300 Hz): 100-150 at 100 Hz (150 stands for raw 449-451)
            assert np.nonzero(gap)[0].tolist() == (list(range(100, 151)) if ids in names else [])
            assert (x[0, gap] == 0).all()
    # the default leaves the fingerprint (the processed folder) as it was without the key
    plain = physionet_cfg(src, "error")
    del plain["preprocess"]["missing"]
    no_gaps = write_physionet_gaps(tmp_path / "clean", set())
    a = _prepare({**physionet_cfg(no_gaps, "error")}, tmp_path)
    b = _prepare({**plain, "path": str(no_gaps)}, tmp_path)
    assert a == b and "missing" not in read_meta(a).source


def test_augmentation_leaves_the_mask_channel_alone(tmp_path, make_cfg):
    """Noise, scaling and wander act on the signal channels; the observation mask stays 0/1."""
    import torch

    from medpipe.building import build_datamodule

    src = write_physionet_gaps(tmp_path / "pn", set(range(10)))
    c = make_cfg(
        "experiment=ecg_af_crnn",
        f"data.path={src}",
        "data.split=[0.6,0.2,0.2]",
        "data.preprocess.missing=zero_and_mask",
        "data.preprocess.window.length=400",
        "augmentation=ecg_morphology",
    )
    from omegaconf import OmegaConf

    dm = build_datamodule(OmegaConf.to_container(c, resolve=True), seed=0)
    dm.setup("fit")
    x, _, _ = next(iter(dm.train_dataloader()))
    stored = torch.as_tensor(read_split(dm.folder, "train").x)
    assert set(torch.unique(x[:, -1]).tolist()) == {0.0, 1.0}
    assert torch.equal(x[:, -1].sort(0).values, stored[: len(x), -1].sort(0).values)
    assert not torch.equal(x[:, 0], stored[: len(x), 0])  # the signal itself is augmented


def test_physionet_drop_record_emptying_a_split_names_it(tmp_path):
    src = write_physionet_gaps(tmp_path / "pn", set(range(10)) - {0})
    with pytest.raises(DataError, match=r"every one of the \d+ (val|test|train) record\(s\)"):
        _prepare(physionet_cfg(src, "drop_record"), tmp_path)


def test_the_counts_reach_the_mlflow_dataset_profile(tmp_path):
    src = write_physionet_gaps(tmp_path / "pn", {1, 4, 7})
    folder = _prepare(physionet_cfg(src, "interpolate"), tmp_path)
    meta = read_meta(folder)
    from medpipe.tracking.mlflow_run import pooled_input, split_inputs

    counts = meta.source["missing"]["records_with_gaps"]
    for ds in split_inputs(meta, folder):
        split = {"train": "train", "validation": "val", "test": "test"}[ds.tags[0].value]
        profile = json.loads(ds.dataset.profile)
        assert profile["missing"]["rule"] == "interpolate"
        assert profile["missing"]["records_with_gaps"] == counts[split]
        assert profile["missing"]["filled_samples"] == 150 * counts[split]
    pooled = json.loads(pooled_input(meta, folder).dataset.profile)
    assert pooled["missing"]["records_with_gaps"] == 3
    assert missing_profile(None, "train") is None


# -- the table source --------------------------------------------------------------------------
def table_cfg(path: Path, rule: str) -> dict:
    return ecg_table_cfg(path, preprocess={"missing": rule, "window": {"mode": "none"}})


def test_table_with_empty_and_nan_cells(tmp_path):
    rows = [",".join(str(v) for v in [i, i + 1, i + 2, i + 3, i + 4, i % 2]) for i in range(10)]
    rows[2] = "2,,nan,5,6,0"  # row 3 of the file: two missing cells
    path = tmp_path / "t.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"t\.csv:3: value '' \(column 2\) is not a number"):
        _prepare(table_cfg(path, "error"), tmp_path)
    folder = _prepare(table_cfg(path, "interpolate"), tmp_path)
    info = read_meta(folder).source["missing"]
    assert sum(info["records_with_gaps"].values()) == 1
    assert sum(info["filled_samples"].values()) == 2
    x = np.concatenate([read_split(folder, s).x for s in ("train", "val", "test")])
    assert np.isfinite(x).all()
    assert any(np.allclose(r[0], [2, 3, 4, 5, 6]) for r in x)  # the gap filled linearly
    masked = _prepare(table_cfg(path, "zero_and_mask"), tmp_path)
    assert read_meta(masked).channels == 2


# -- predict -----------------------------------------------------------------------------------
def _reading(rule: str, source: str = "physionet2017") -> dict:
    pre = physionet_cfg(Path("."), rule)["preprocess"]
    return {"source": source, "kind": "signal", "preprocess": pre, "fs": 300.0}


def test_predict_reads_new_files_with_the_rule(tmp_path):
    src = write_physionet_gaps(tmp_path / "pn", {0}, n=2)
    gappy_mat, clean_mat = src / "A00001.mat", src / "A00002.mat"

    def windows(path: Path, rule: str, shape: list[int]) -> np.ndarray:
        reading = _reading(rule)
        [(name, x, rate)] = read_signal_file(path, reading, shape, None)
        return windows_for_prediction(x, rate, reading, shape, name)[0]

    w = windows(gappy_mat, "zero_and_mask", [2, 400])
    assert w.shape == (1, 2, 400)  # 1200 samples at 300 Hz -> 400 at 100 Hz
    assert np.nonzero(w[0, 1] == 0)[0].tolist() == list(range(100, 151))
    assert (windows(clean_mat, "zero_and_mask", [2, 400])[0, 1] == 1).all()
    assert np.isfinite(windows(gappy_mat, "interpolate", [1, 400])).all()
    with pytest.raises(DataError, match=r"150 missing .*drop_record"):
        windows(gappy_mat, "drop_record", [1, 400])
    with pytest.raises(DataError, match=r"150 NaN/inf value"):
        windows(gappy_mat, "error", [1, 400])

    table = tmp_path / "new.csv"
    table.write_text("1,2,,4,5\n1,2,3,4,5\n")
    reading = {**_reading("interpolate", "table"), "fs": 100.0}
    reading["preprocess"] = {"missing": "interpolate", "window": {"mode": "none"}}
    recs = read_signal_file(table, reading, [1, 5], None)
    assert np.isnan(recs[0][1]).sum() == 1
    w, _ = windows_for_prediction(recs[0][1], 100.0, reading, [1, 5], recs[0][0])
    np.testing.assert_allclose(w[0, 0], [1, 2, 3, 4, 5])


class StubPredictor:
    """What predict_files reads of a Predictor, with a model that returns zeros."""

    kind = "signal"

    def __init__(self, rule: str, channels: int):
        self.reading = _reading(rule)
        self.card = {"stored_shape": [channels, 400]}

    def __call__(self, x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
        assert x.shape[1:] == tuple(self.card["stored_shape"])
        return np.zeros((len(x), 2), np.float32)


def test_predict_drop_record_makes_the_file_a_failed_row(tmp_path):
    src = write_physionet_gaps(tmp_path / "pn", {0}, n=2)
    files = [src / "A00001.mat", src / "A00002.mat"]
    rows = predict_files(StubPredictor("drop_record", 1), files, 8, "mean", None)
    assert [bool(r.error) for r in rows] == [True, False]
    assert rows[0].error.startswith("150 missing (NaN/inf) sample(s)")
    assert "drop_record" in rows[0].error
    rows = predict_files(StubPredictor("zero_and_mask", 2), files, 8, "mean", None)
    assert [r.error for r in rows] == ["", ""] and all(r.output is not None for r in rows)
