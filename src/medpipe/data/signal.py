"""Signal preprocessing from a data config's `preprocess:` block (numpy and scipy only).

Each record, an array (channels, samples), goes through, in this order:

1. a check that every value is finite (NaN or inf is a DataError naming the record);
2. `resample_hz`: polyphase resampling to that rate (null keeps the rate);
3. `bandpass: [low_hz, high_hz]`: a zero-phase Butterworth band-pass of order `bandpass_order`;
4. `zscore: true`: each channel scaled to mean 0, std 1 over the whole record (a flat channel is
   only centred);
5. `window`: cut into samples of one length (in samples at the final rate):
   - `mode: fixed`: the first `length` samples of each record (one sample per record);
   - `mode: sliding`: windows of `length` every `stride` samples (overlap = length - stride); when
     the last stride does not reach the end of the record, one more window ends at the last sample,
     so every sample of the record lies in some window;
   - `mode: none`: the whole record, padded to the longest record (or to `length`, a maximum).
   A record shorter than the window is zero-padded at the end and its sample carries its true
   length; no record is dropped, and mode none rejects a record longer than `length`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

from medpipe.errors import ConfigError, DataError

SIGNAL_VERSION = 1  # part of every signal source's fingerprint: bump when the output changes


@dataclass
class Windows:
    """The samples cut from one record: x (n, C, length), true lengths (n,), start offsets (n,)."""

    x: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray


def check_finite(x: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        ch, t = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(
            f"{name}: {int(bad.sum())} NaN/inf value(s) in the signal (first at channel {ch}, "
            f"sample {t}); expected finite samples"
        )


def resample(x: np.ndarray, fs: float, target_hz: float | None) -> tuple[np.ndarray, float]:
    """Polyphase resampling along the last axis to `target_hz`; returns (x, new fs)."""
    if not target_hz or float(target_hz) == float(fs):
        return x, float(fs)
    from scipy.signal import resample_poly

    ratio = Fraction(float(target_hz) / float(fs)).limit_denominator(1000)
    y = resample_poly(x.astype(np.float64), ratio.numerator, ratio.denominator, axis=-1)
    return y, float(fs) * ratio.numerator / ratio.denominator


@lru_cache(maxsize=32)
def bandpass_sos(fs: float, low: float, high: float, order: int = 3) -> np.ndarray:
    from scipy.signal import butter

    if not 0 < low < high < fs / 2:
        raise ConfigError(
            f"data.preprocess.bandpass: [{low}, {high}] Hz needs 0 < low < high < fs/2 = "
            f"{fs / 2:g} Hz (fs {fs:g} Hz after resampling)"
        )
    return butter(int(order), [low, high], btype="bandpass", fs=fs, output="sos")


def bandpass(x: np.ndarray, fs: float, low: float, high: float, order: int = 3) -> np.ndarray:
    """Zero-phase (forward-backward) Butterworth band-pass along the last axis."""
    from scipy.signal import sosfiltfilt

    sos = bandpass_sos(fs, low, high, order)
    n = x.shape[-1]
    if n < 2:
        return x.astype(np.float64)
    padlen = min(3 * (2 * len(sos) + 1), n - 1)
    return sosfiltfilt(sos, x.astype(np.float64), axis=-1, padlen=padlen)


def zscore(x: np.ndarray) -> np.ndarray:
    """Per channel over the last axis; a constant channel becomes zeros."""
    x = x.astype(np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return (x - mean) / np.where(std > 0, std, 1.0)


def filter_record(
    x: np.ndarray, fs: float, cfg: dict[str, Any] | None, name: str
) -> tuple[np.ndarray, float]:
    """Steps 1-4 (finite check, resample, band-pass, z-score) of one record (C, T)."""
    cfg = cfg or {}
    x = np.asarray(x)
    if x.ndim != 2:
        raise DataError(f"{name}: signal of shape {x.shape}; expected (channels, samples)")
    check_finite(x, name)
    x, fs = resample(x, fs, cfg.get("resample_hz"))
    band = cfg.get("bandpass")
    if band:
        x = bandpass(x, fs, float(band[0]), float(band[1]), int(cfg.get("bandpass_order", 3)))
    if cfg.get("zscore"):
        x = zscore(x)
    return x.astype(np.float32), fs


def window_starts(n: int, length: int, stride: int) -> np.ndarray:
    """Sliding-window starts covering [0, n): every `stride`, plus one ending at n if needed."""
    if n <= length:
        return np.zeros(1, np.int64)
    starts = np.arange(0, n - length + 1, stride, dtype=np.int64)
    if starts[-1] + length < n:
        starts = np.append(starts, n - length)
    return starts


def window_record(x: np.ndarray, window: dict[str, Any] | None, name: str) -> Windows:
    """Step 5 for one record (C, T); mode none returns the record unpadded (see pad_stack)."""
    window = window or {}
    mode = window.get("mode", "none") or "none"
    n = x.shape[-1]
    if mode == "none":
        limit = window.get("length")
        if limit is not None and n > int(limit):
            raise DataError(
                f"{name}: {n} samples, longer than data.preprocess.window.length={limit} "
                "(the maximum for window.mode=none); raise it or use mode fixed or sliding"
            )
        return Windows(x[None], np.array([n], np.int64), np.zeros(1, np.int64))
    length = int(window["length"])
    if mode == "fixed":
        starts = np.zeros(1, np.int64)
    elif mode == "sliding":
        starts = window_starts(n, length, int(window["stride"]))
    else:
        raise ConfigError(f"data.preprocess.window.mode: '{mode}'; use fixed, sliding or none")
    out = np.zeros((len(starts), x.shape[0], length), np.float32)
    lengths = np.empty(len(starts), np.int64)
    for i, s in enumerate(starts):
        seg = x[:, s : s + length]
        out[i, :, : seg.shape[-1]] = seg
        lengths[i] = seg.shape[-1]
    return Windows(out, lengths, starts)


def pad_stack(arrays: Sequence[np.ndarray], length: int | None = None) -> np.ndarray:
    """Stack (n_i, C, T_i) arrays into (sum n_i, C, T), zero-padding at the end to T."""
    t = length if length is not None else max((a.shape[-1] for a in arrays), default=0)
    c = arrays[0].shape[1] if arrays else 1
    out = np.zeros((sum(len(a) for a in arrays), c, t), np.float32)
    i = 0
    for a in arrays:
        out[i : i + len(a), :, : a.shape[-1]] = a
        i += len(a)
    return out


def output_length(window: dict[str, Any] | None) -> int | None:
    """The fixed sample length a window config gives (None: the longest record decides)."""
    window = window or {}
    if (window.get("mode") or "none") == "none":
        return int(window["length"]) if window.get("length") is not None else None
    return int(window["length"])


def preprocess_records(
    records: Sequence[np.ndarray],
    fs: float,
    cfg: dict[str, Any] | None,
    names: Sequence[str] | None = None,
    length: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Preprocess records (each (C, T_i)) into (x (N, C, T) float32, lengths (N,), record (N,)).

    `record[i]` is the index in `records` of the record sample i was cut from. `length` forces T
    for mode none (so that every split of a dataset shares one length); names label errors.
    """
    cfg = cfg or {}
    names = list(names) if names is not None else [f"record {i}" for i in range(len(records))]
    window = cfg.get("window") or {}
    parts, lengths, index = [], [], []
    for i, rec in enumerate(records):
        y, _ = filter_record(rec, fs, cfg, names[i])
        w = window_record(y, window, names[i])
        parts.append(w.x)
        lengths.append(w.lengths)
        index.append(np.full(len(w.x), i, np.int64))
    if not parts:
        return (
            np.zeros((0, 1, length or 0), np.float32),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
        )
    t = length if length is not None else output_length(window)
    x = pad_stack(parts, t)
    return x, np.concatenate(lengths), np.concatenate(index)


def final_rate(fs: float, cfg: dict[str, Any] | None) -> float:
    """The sampling rate after the preprocess block's resampling."""
    target = (cfg or {}).get("resample_hz")
    if not target:
        return float(fs)
    ratio = Fraction(float(target) / float(fs)).limit_denominator(1000)
    return float(fs) * ratio.numerator / ratio.denominator
