"""Signal preprocessing from a data config's `preprocess:` block (numpy and scipy only).

Each record, an array (channels, samples), goes through, in this order:

1. `missing`: what a missing sample (NaN or inf: a lead-off gap, an empty table cell) does:
   - `error` (the default): a DataError naming the record;
   - `drop_record`: the record is left out (the source counts the records dropped per split and
     fails when a split loses every record; predict reports the file as failed);
   - `interpolate`: each gap is filled per channel by linear interpolation between the observed
     samples around it (a leading or trailing gap takes the nearest observed value); a channel
     with no observed sample is a DataError;
   - `zero_and_mask`: as interpolate for steps 2-4 (so the band-pass does not smear a step into
     the signal), then the gap samples are set to 0 in the final signal and the record gets one
     more, last, channel: the observation mask (1.0 observed, 0.0 missing in any channel). Every
     record gets it, with or without gaps, so the data's `channels` includes the mask (C + 1).
     Through resampling the mask is max-pooled (`resample_mask`): a resampled sample is observed
     only when every raw sample closer in time than max(one raw period, half an output period)
     is observed, so a gap never shrinks;
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
   - `mode: random`: the whole record, padded to the longest record and to at least `length`;
     the task reads windows of `length` from it (medpipe.models.windows): one at a random place
     per record and training step, and at inference every window `stride` apart covering the
     record (as sliding mode cuts them), their outputs combined by `aggregate` (mean | max).
   A record shorter than the window is zero-padded at the end and its sample carries its true
   length; no record is dropped, and mode none rejects a record longer than `length`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

from medpipe.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SIGNAL_VERSION = 1  # part of every signal source's fingerprint: bump when the output changes
MISSING_RULES = ("error", "drop_record", "interpolate", "zero_and_mask")


@dataclass
class Windows:
    """The samples cut from one record: x (n, C, length), true lengths (n,), start offsets (n,)."""

    x: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray


class DroppedRecord(DataError):
    """A record left out by data.preprocess.missing=drop_record: it has missing samples."""


def check_finite(x: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        ch, t = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(
            f"{name}: {int(bad.sum())} NaN/inf value(s) in the signal (first at channel {ch}, "
            f"sample {t}); expected finite samples (or set data.preprocess.missing to "
            "drop_record, interpolate or zero_and_mask)"
        )


def missing_rule(cfg: dict[str, Any] | None) -> str:
    """The preprocess block's `missing` rule (error when unset)."""
    rule = str((cfg or {}).get("missing") or "error")
    if rule not in MISSING_RULES:
        raise ConfigError(f"data.preprocess.missing: '{rule}'; use {', '.join(MISSING_RULES)}")
    return rule


def count_missing(x: np.ndarray) -> int:
    """The number of NaN/inf samples of a record."""
    return int((~np.isfinite(np.asarray(x))).sum())


def fill_gaps(x: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(x (C, T) float64 with its NaN/inf samples interpolated, observed mask (C, T) bool).

    Linear interpolation per channel over the observed samples (numpy.interp), so a leading or
    trailing gap takes the nearest observed value; a channel with none is a DataError.
    """
    x = np.asarray(x, np.float64)
    observed = np.isfinite(x)
    if observed.all():
        return x, observed
    out = x.copy()
    t = np.arange(x.shape[-1])
    for c in range(x.shape[0]):
        ok = observed[c]
        if ok.all():
            continue
        if not ok.any():
            raise DataError(
                f"{name}: channel {c} has no finite sample (all {x.shape[-1]} missing); nothing "
                "to fill its gaps from"
            )
        out[c, ~ok] = np.interp(t[~ok], t[ok], x[c, ok])
    return out, observed


def resample_mask(observed: np.ndarray, fs: float, target_hz: float | None) -> np.ndarray:
    """The observation mask (C, T) bool at the rate `resample` gives it, by max-pooling the gaps.

    Resampled sample j (at raw position p = j * down / up) is observed only when every raw sample
    i it draws on is: |i - p| < 1 (the two raw samples it lies between) or, when downsampling,
    |i - p| <= down / (2 up) (the raw samples within half an output period, which it stands for).
    A gap thus never shrinks; its edges may grow by an output sample.
    """
    if not target_hz or float(target_hz) == float(fs):
        return observed
    ratio = Fraction(float(target_hz) / float(fs)).limit_denominator(1000)
    up, down = ratio.numerator, ratio.denominator
    n = observed.shape[-1]
    m = -(-n * up // down)  # resample_poly's output length, ceil(n * up / down)
    j = np.arange(m, dtype=np.int64)
    # integers only, in units of 1 / (2 up) raw samples: 2 up p = 2 j down
    if down >= 2 * up:  # |2 up i - 2 j down| <= down
        lo = -(-(2 * j * down - down) // (2 * up))
        hi = (2 * j * down + down) // (2 * up)
    else:  # |2 up i - 2 j down| < 2 up
        lo = (2 * j * down - 2 * up) // (2 * up) + 1
        hi = -(-(2 * j * down + 2 * up) // (2 * up)) - 1
    lo, hi = np.clip(lo, 0, n), np.clip(hi, -1, n - 1)  # hi inclusive
    gaps = np.zeros((observed.shape[0], n + 1), np.int64)
    np.cumsum(~observed, axis=-1, out=gaps[:, 1:])
    return gaps[:, hi + 1] - gaps[:, lo] == 0


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
    """Steps 1-4 (missing samples, resample, band-pass, z-score) of one record (C, T).

    Under missing=zero_and_mask the result has C + 1 channels, the last the observation mask;
    under drop_record a record with missing samples raises DroppedRecord.
    """
    cfg = cfg or {}
    x = np.asarray(x)
    if x.ndim != 2:
        raise DataError(f"{name}: signal of shape {x.shape}; expected (channels, samples)")
    rule = missing_rule(cfg)
    observed = None
    if rule == "error":
        check_finite(x, name)
    elif rule == "drop_record":
        if n := count_missing(x):
            raise DroppedRecord(
                f"{name}: {n} missing (NaN/inf) sample(s); data.preprocess.missing=drop_record "
                "leaves such a record out"
            )
    else:
        x, observed = fill_gaps(x, name)
    raw_fs = fs
    x, fs = resample(x, fs, cfg.get("resample_hz"))
    band = cfg.get("bandpass")
    if band:
        x = bandpass(x, fs, float(band[0]), float(band[1]), int(cfg.get("bandpass_order", 3)))
    if cfg.get("zscore"):
        x = zscore(x)
    if rule == "zero_and_mask":
        seen = resample_mask(observed, raw_fs, cfg.get("resample_hz"))
        # each channel's own gaps are zeroed; the one mask channel marks a sample missing when
        # any channel misses it
        mask = seen.all(axis=0, keepdims=True).astype(np.float64)
        x = np.concatenate([np.where(seen, x, 0.0), mask])
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
    if mode == "random":  # the whole record: the task reads windows of it (models/windows.py)
        return Windows(x[None], np.array([n], np.int64), np.zeros(1, np.int64))
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
    if (window.get("mode") or "none") in ("none", "random"):
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
        try:
            y, _ = filter_record(rec, fs, cfg, names[i])
        except DroppedRecord:  # missing=drop_record: the source counts it (missing_summary)
            continue
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
    if (window.get("mode") or "none") == "random" and length is None:
        # whole records, padded to the longest and to at least one window
        t = max(max(p.shape[-1] for p in parts), int(window["length"]))
    x = pad_stack(parts, t)
    return x, np.concatenate(lengths), np.concatenate(index)


def final_rate(fs: float, cfg: dict[str, Any] | None) -> float:
    """The sampling rate after the preprocess block's resampling."""
    target = (cfg or {}).get("resample_hz")
    if not target:
        return float(fs)
    ratio = Fraction(float(target) / float(fs)).limit_denominator(1000)
    return float(fs) * ratio.numerator / ratio.denominator


def missing_summary(
    cfg: dict[str, Any] | None,
    n_missing: Sequence[int],
    groups: Mapping[str, np.ndarray],
    names: Sequence[str],
    what: str,
) -> dict[str, Any] | None:
    """A source's `info["missing"]`: the rule and, per group of records (a split, by index into
    `n_missing`, each record's count_missing), the records with missing samples, the missing
    samples, the samples filled and the records dropped.

    None under the rule error (nothing is missing then). Under drop_record the dropped records
    are logged by name, and a group left without a record is a DataError naming it (`what`: the
    data, for the message).
    """
    rule = missing_rule(cfg)
    if rule == "error":
        return None
    n_missing = np.asarray(n_missing, np.int64)
    info: dict[str, Any] = {
        "rule": rule,
        "records_with_gaps": {},
        "missing_samples": {},
        "filled_samples": {},
        "dropped_records": {},
    }
    if rule == "zero_and_mask":
        info["mask_channel"] = "last"  # medpipe.data.prepare keeps it 0/1 through normalisation
    for group, idx in groups.items():
        idx = np.asarray(idx, np.int64)
        gaps = n_missing[idx] > 0
        dropped = int(gaps.sum()) if rule == "drop_record" else 0
        info["records_with_gaps"][group] = int(gaps.sum())
        info["missing_samples"][group] = int(n_missing[idx].sum())
        info["filled_samples"][group] = 0 if rule == "drop_record" else int(n_missing[idx].sum())
        info["dropped_records"][group] = dropped
        if dropped and dropped == len(idx):
            raise DataError(
                f"{what}: every one of the {len(idx)} {group} record(s) has missing samples, and "
                "data.preprocess.missing=drop_record leaves them all out; use interpolate or "
                "zero_and_mask"
            )
    if rule == "drop_record" and (n_missing > 0).any():
        dropped_names = [names[i] for i in np.nonzero(n_missing > 0)[0]]
        shown = ", ".join(dropped_names[:10]) + (", ..." if len(dropped_names) > 10 else "")
        counts = ", ".join(f"{g} {n}" for g, n in info["dropped_records"].items())
        log.warning(
            "%s: data.preprocess.missing=drop_record left out %d record(s) with missing "
            "samples (%s): %s",
            what,
            len(dropped_names),
            counts,
            shown,
        )
    return info
