"""Signal files read for prediction, and cut the way the training data was (medpipe.predicting).

Formats: a WFDB record (its `.hea`, with the `.dat` beside it), a PhysioNet/CinC 2017 `.mat`
(`val` in units of 1/1000 mV), a delimited table of rows (`.csv`, `.tsv`, `.txt`: one
single-channel record per row; a row one value longer than the training records, in a model
trained on a table, has its label column dropped), and `.npy` ((T,), (C, T) or (N, C, T)).

A record's rate comes from its WFDB header, else from `fs=` of the predict command, else the
training data's (`reading["fs"]`); it is then put through the training data's preprocessing
(`data.preprocess`: resampling to the training rate, band-pass, z-score) and windowing: a record
longer than the training window is cut into windows of the training length (the training
stride, or back to back) whose outputs predict aggregates (mean by default).

Missing samples (NaN/inf, an empty table cell) follow the training data's `preprocess.missing`
rule: error and drop_record make the record a failed row (with the reason), interpolate fills
them, zero_and_mask fills them and adds the mask channel the model was trained with (a model of
C + 1 stored channels then reads C channels from the file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medpipe.data import signal
from medpipe.errors import DataError


def _channels(x: np.ndarray, want: int, path: Path) -> np.ndarray:
    if x.shape[0] < want:
        raise DataError(f"{path}: {x.shape[0]} channel(s); the model reads {want}")
    return x[:want]


def _rate(path: Path, reading: dict[str, Any], fs: float | None) -> float:
    rate = fs if fs is not None else reading.get("fs")
    if rate is None:
        raise DataError(f"{path}: its sampling rate is unknown; give fs=<Hz>")
    return float(rate)


def _wfdb(path: Path, reading: dict[str, Any], want: int) -> tuple[np.ndarray, float]:
    import wfdb

    base = str(path.with_suffix(""))
    try:
        header = wfdb.rdheader(base)
        channel = reading.get("channel")
        names = list(header.sig_name or [])
        chosen = (
            channel if isinstance(channel, list) else [channel] if channel is not None else None
        )
        if chosen is not None:
            idx = [names.index(c) if isinstance(c, str) else int(c) for c in chosen]
        else:
            idx = list(range(min(want, header.n_sig)))
        rec = wfdb.rdrecord(base, channels=idx)
    except (ValueError, IndexError) as err:
        raise DataError(
            f"{path}: channel {reading.get('channel')} not in the record ({err})"
        ) from None
    except Exception as err:  # noqa: BLE001 - wfdb raises many types for a bad record
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: unreadable WFDB record ({msg})") from None
    return np.asarray(rec.p_signal, np.float64).T, float(rec.fs)


def _table(path: Path, reading: dict[str, Any], length: int) -> list[np.ndarray]:
    from medpipe.data.sources.table import sniff_delimiter

    with open(path, errors="replace") as f:
        first = next((line for line in f if line.strip()), "")
    delim = {"tab": "\t", "whitespace": None, ",": ","}.get(str(reading.get("delimiter")))
    if reading.get("delimiter") in (None, "auto"):
        delim = sniff_delimiter(first)
    rows = []
    skip = bool(reading.get("header"))
    missing = signal.missing_rule(reading.get("preprocess")) != "error"
    for i, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        if skip:
            skip = False
            continue
        cells = line.split(delim) if delim else line.split()
        if missing:  # an empty cell is a missing sample, as the table source reads it
            cells = [v if v.strip() else "nan" for v in cells]
        try:
            values = np.array([float(v) for v in cells])
        except ValueError:
            raise DataError(f"{path}:{i}: a non-number in the row") from None
        if reading.get("source") == "table" and len(values) == length + 1:
            values = values[1:] if reading.get("label_column") == "first" else values[:-1]
        rows.append(values[None])
    return rows


def read_signal_file(
    path: Path, reading: dict[str, Any], stored_shape: list[int], fs: float | None
) -> list[tuple[str, np.ndarray, float]]:
    """(name, record (C, T) float64, rate) for each record of a signal file."""
    want, length = int(stored_shape[0]), int(stored_shape[-1])
    if signal.missing_rule(reading.get("preprocess")) == "zero_and_mask":
        want -= 1  # the last stored channel is the mask preprocessing adds
    suffix = path.suffix.lower()
    if suffix == ".hea":
        x, rate = _wfdb(path, reading, want)
        return [(str(path.with_suffix("")), _channels(x, want, path), rate)]
    if suffix == ".mat":
        from medpipe.data.sources.ecg import PhysioNet2017Source

        x = PhysioNet2017Source.read_record(path).astype(np.float64)
        rate = fs if fs is not None else _header_rate(path) or reading.get("fs") or 300.0
        return [(str(path), _channels(x, want, path), float(rate))]
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise DataError(f"{path}: unreadable .npy ({err})") from None
        if not np.issubdtype(arr.dtype, np.number) or arr.ndim not in (1, 2, 3):
            raise DataError(
                f"{path}: .npy of {arr.dtype} {arr.shape}; expected numbers (T,), (C, T) or (N, C, T)"
            )
        arr = arr.astype(np.float64)
        rate = _rate(path, reading, fs)
        if arr.ndim == 1:
            return [(str(path), _channels(arr[None], want, path), rate)]
        if arr.ndim == 2:
            return [(str(path), _channels(arr, want, path), rate)]
        return [(f"{path}#{i}", _channels(a, want, path), rate) for i, a in enumerate(arr)]
    rows = _table(path, reading, length)
    if not rows:
        raise DataError(f"{path}: no rows")
    rate = _rate(path, reading, fs)
    return [(f"{path}#{i}", _channels(r, want, path), rate) for i, r in enumerate(rows)]


def _header_rate(path: Path) -> float | None:
    """The rate in a WFDB header beside a .mat (PhysioNet ships A00001.hea with A00001.mat)."""
    hea = path.with_suffix(".hea")
    if not hea.is_file():
        return None
    import wfdb

    try:
        return float(wfdb.rdheader(str(hea.with_suffix(""))).fs)
    except Exception:  # noqa: BLE001 - no usable header: the training rate is used
        return None


def windows_for_prediction(
    x: np.ndarray, rate: float, reading: dict[str, Any], stored_shape: list[int], name: str
) -> tuple[np.ndarray, np.ndarray]:
    """One record through the training preprocessing: (windows (n, C, T) float32, lengths (n,)).
    Resampled to the training data's rate; a fixed or sliding training window becomes sliding
    windows over the whole record (the training stride, else back to back)."""
    pre = dict(reading.get("preprocess") or {})
    train_rate = signal.final_rate(float(reading.get("fs") or rate), pre)
    pre["resample_hz"] = train_rate if abs(train_rate - rate) > 1e-9 else None
    window = dict(pre.get("window") or {})
    mode = window.get("mode") or "none"
    if mode in ("fixed", "sliding"):
        length = int(window["length"])
        window = {
            "mode": "sliding",
            "length": length,
            "stride": int(window.get("stride") or length),
        }
    elif mode == "random":  # the whole record: the model reads its windows (models/windows.py)
        window = {"mode": "random", "length": int(window["length"])}
    else:
        window = {"mode": "none", "length": None}
    pre["window"] = window
    if signal.missing_rule(pre) == "drop_record" and (n := signal.count_missing(x)):
        # preprocess_records would leave the record out silently; here it is the row's error
        raise DataError(
            f"{name}: {n} missing (NaN/inf) sample(s); the model's data was prepared with "
            "preprocess.missing=drop_record, which leaves such a record out"
        )
    out, lengths, _ = signal.preprocess_records([x], rate, pre, names=[name])
    if mode == "none" and out.shape[-1] < int(stored_shape[-1]):  # pad to the training length
        padded = np.zeros((*out.shape[:2], int(stored_shape[-1])), np.float32)
        padded[..., : out.shape[-1]] = out
        out = padded
    return out, lengths
