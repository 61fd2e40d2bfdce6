"""ECG sources: PhysioNet/CinC 2017 (.mat + REFERENCE.csv), WFDB records with beat annotations
(MIT-BIH: beat classes or heart rate) and synthetic ECG with a known heart rate (neurokit2).

Every source reads its records, preprocesses them with medpipe.data.signal (the data config's
`preprocess:` block) and returns signals (N, C, T) float32 with their true lengths.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medpipe.data import signal
from medpipe.data.processed import SPLITS, Split, fingerprint, sha256_file
from medpipe.data.sources.base import (
    DataOptions,
    NonNegInt,
    PosInt,
    Source,
    SourceData,
    register_source,
)
from medpipe.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_SPLIT = (0.7, 0.1, 0.2)


# -- options shared by the signal sources --------------------------------------------------------
Fractions = Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=3, max_length=3)]
PosFloat = Annotated[float, Field(gt=0)]


class SignalWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["fixed", "sliding", "none", "random"] = "none"
    length: PosInt | None = None  # samples at the final rate (a maximum for mode none)
    stride: PosInt | None = None  # sliding: between samples; random: between inference windows
    aggregate: Literal["mean", "max"] = "mean"  # random: how the windows' outputs are combined


class SignalPreprocess(BaseModel):
    """The data config's `preprocess:` block, read by medpipe.data.signal."""

    model_config = ConfigDict(extra="forbid")

    resample_hz: PosFloat | None = None
    bandpass: Annotated[list[PosFloat], Field(min_length=2, max_length=2)] | None = None
    bandpass_order: Annotated[int, Field(ge=1, le=10)] = 3
    zscore: bool = False
    # NaN/inf samples (medpipe.data.signal step 1): zero_and_mask adds a mask channel (C + 1)
    missing: Literal["error", "drop_record", "interpolate", "zero_and_mask"] = "error"
    window: SignalWindow = SignalWindow()


class SignalOptions(DataOptions):
    """Options of every signal source: the preprocessing block and its checks."""

    kind: Literal["signal"]
    preprocess: SignalPreprocess = SignalPreprocess()

    def _native_fs(self) -> float | None:
        return None

    def _split_problem(self, split: list[float] | None) -> None:
        if split is None:
            return
        if abs(sum(split) - 1) > 1e-6 or split[0] <= 0 or split[2] <= 0:
            raise ValueError(
                f"split: train/val/test fractions {split} must be positive (val may be 0 only "
                "with a test file) and sum to 1"
            )

    @model_validator(mode="after")
    def _check_preprocess(self):
        p, w = self.preprocess, self.preprocess.window
        if p.bandpass is not None:
            low, high = p.bandpass
            if not low < high:
                raise ValueError(f"preprocess.bandpass: low {low} Hz must be below high {high} Hz")
            fs = p.resample_hz or self._native_fs()
            if fs is not None and high >= fs / 2:
                raise ValueError(
                    f"preprocess.bandpass: high {high} Hz must be below fs/2 = {fs / 2:g} Hz "
                    f"(fs {fs:g} Hz after resampling)"
                )
        if w.mode in ("fixed", "sliding", "random") and w.length is None:
            raise ValueError(f"preprocess.window.length: required by window.mode={w.mode}")
        if w.mode == "sliding" and w.stride is None:
            raise ValueError("preprocess.window.stride: required by window.mode=sliding")
        if w.mode == "random" and w.stride is not None and w.stride > (w.length or 0):
            raise ValueError(
                f"preprocess.window.stride: {w.stride} leaves samples between the inference "
                f"windows of length {w.length}; use a stride of at most the length"
            )
        if w.aggregate != "mean" and w.mode != "random":
            raise ValueError(
                f"preprocess.window.aggregate: {w.aggregate} combines the windows of "
                "window.mode=random only"
            )
        return self


# -- shared helpers --------------------------------------------------------------------------------
def folder_of(cfg: dict[str, Any], key: str = "path") -> Path:
    value = cfg.get(key)
    if not value:
        raise DataError(f"data.{key}: not set; give the folder holding the records")
    folder = Path(str(value)).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"data.{key}: folder not found: {folder}")
    return folder


def files_digest(files: list[Path]) -> str:
    """One hash of many files: sha256 of the sorted (name, sha256) list."""
    return fingerprint(sorted((f.name, sha256_file(f)) for f in files))


def _stratify_labels(labels: np.ndarray, n_test: int) -> np.ndarray | None:
    """Labels usable by train_test_split(stratify=...): classes with fewer than 2 members are
    merged into the most common class; None when stratifying is impossible."""
    values, counts = np.unique(labels, return_counts=True)
    major = values[np.argmax(counts)]
    rare = values[counts < 2]
    strat = np.where(np.isin(labels, rare), major, labels)
    n_classes = len(np.unique(strat))
    if n_classes < 2 or n_test < n_classes or len(labels) - n_test < n_classes:
        return None
    return strat


def split_indices(
    n: int,
    fractions: Any,
    seed: int,
    labels: np.ndarray | None = None,
    what: str = "records",
    classes: list[str] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Seeded train/val/test index sets (sorted), stratified by `labels` where possible.

    Classes with a single member cannot be stratified: they are placed at random (noted in the
    returned info), as is everything when a split is too small to hold every class.
    """
    from sklearn.model_selection import train_test_split

    f_train, f_val, f_test = (float(v) for v in (fractions or DEFAULT_SPLIT))
    if n < 3:
        raise DataError(f"only {n} {what}; a train/val/test split needs at least 3")
    idx = np.arange(n)
    n_test = min(max(1, int(round(f_test * n))), n - 2)
    n_val = min(max(1, int(round(f_val * n))), n - n_test - 1)
    info: dict[str, Any] = {"stratified": labels is not None}
    strat = None if labels is None else _stratify_labels(labels, n_test)
    if labels is not None and strat is None:
        info["stratified"] = False
    rest, test = train_test_split(idx, test_size=n_test, random_state=seed, stratify=strat)
    strat2 = None
    if labels is not None:
        strat2 = _stratify_labels(labels[rest], n_val)
        if strat2 is None:
            info["stratified"] = False
    train, val = train_test_split(rest, test_size=n_val, random_state=seed + 1, stratify=strat2)
    if labels is not None:
        values, counts = np.unique(labels, return_counts=True)
        if (counts < 2).any():
            rare = [v.item() for v in values[counts < 2]]
            info["unstratified_classes"] = [classes[v] for v in rare] if classes else rare
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}, info


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _preprocess_desc(cfg: dict[str, Any]) -> dict[str, Any]:
    pre = dict(cfg.get("preprocess") or {})
    if pre.get("missing", "error") == "error":  # the default output: fingerprints stay as they were
        pre.pop("missing", None)
    window = dict(pre.get("window") or {})
    if "aggregate" in window and window.get("mode") != "random":  # read in random mode only
        del window["aggregate"]
        pre["window"] = window
    return {"preprocess": pre, "signal_version": signal.SIGNAL_VERSION}


# -- PhysioNet/CinC Challenge 2017 -----------------------------------------------------------------
PHYSIONET2017_LABELS = ["N", "A", "O", "~"]
# "~" would become an empty metric key (class_key strips it), so the noisy class is named "noisy".
PHYSIONET2017_CLASSES = ["N", "A", "O", "noisy"]
PHYSIONET2017_FS = 300.0
PHYSIONET2017_GAIN = 1000.0  # adu per mV
PHYSIONET2017_URL = "https://physionet.org/content/challenge-2017/1.0.0/"


@register_source("physionet2017")
class PhysioNet2017Source(Source):
    """Single-lead AliveCor ECGs: <record>.mat (`val` int16 (1, n), 1000 adu/mV, 300 Hz) listed with
    their rhythm label (N normal, A atrial fibrillation, O other, ~ noisy) in REFERENCE.csv.

    Only the records listed in the reference file are read; they are split by record, stratified
    by label and seeded, before any windowing, so no recording contributes to two splits.
    """

    class Options(SignalOptions):
        path: str | None = None
        reference: Annotated[str, Field(min_length=1)] = "REFERENCE.csv"
        split: Fractions = [0.7, 0.1, 0.2]
        seed: int = 0

        def _native_fs(self) -> float | None:
            return 300.0

        @model_validator(mode="after")
        def _check(self):
            if not self.path:
                raise ValueError(
                    "path: required: the folder holding the A*.mat records and REFERENCE.csv; set "
                    f"data.path=FOLDER or PHYSIONET2017_DIR (download: {PHYSIONET2017_URL})"
                )
            self._split_problem(self.split)
            if self.split[1] <= 0:
                raise ValueError("split: the val fraction must be positive")
            return self

    path_keys = {"path": True}

    def _reference(self) -> tuple[Path, list[tuple[str, int]]]:
        folder = folder_of(self.cfg)
        ref = folder / str(self.cfg.get("reference") or "REFERENCE.csv")
        if not ref.is_file():
            raise DataError(
                f"{ref}: reference file not found; expected 'record,label' lines (N, A, O, ~) "
                f"next to the .mat files (PhysioNet 2017: {PHYSIONET2017_URL})"
            )
        rows: list[tuple[str, int]] = []
        seen: set[str] = set()
        for lineno, line in enumerate(ref.read_text(errors="replace").splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 2 or not parts[0]:
                raise DataError(
                    f"{ref}:{lineno}: '{line[:60]}' is not 'record,label'; expected e.g. A00001,N"
                )
            record, label = parts
            if label not in PHYSIONET2017_LABELS:
                raise DataError(
                    f"{ref}:{lineno}: record {record} has unknown label '{label}'; expected one "
                    f"of {', '.join(PHYSIONET2017_LABELS)}"
                )
            if record in seen:
                raise DataError(f"{ref}:{lineno}: record {record} is listed twice")
            seen.add(record)
            rows.append((record, PHYSIONET2017_LABELS.index(label)))
        if not rows:
            raise DataError(f"{ref}: no records listed; expected 'record,label' lines")
        for record, _ in rows:
            if not (folder / f"{record}.mat").is_file():
                raise DataError(
                    f"{folder / (record + '.mat')}: record {record} is listed in {ref.name} but "
                    "its .mat file is missing"
                )
        return ref, rows

    def describe(self) -> dict[str, Any]:
        ref, rows = self._reference()
        folder = ref.parent
        return {
            "source": "physionet2017",
            "reference": ref.name,
            "reference_sha256": sha256_file(ref),
            "records": len(rows),
            "records_sha256": files_digest([folder / f"{r}.mat" for r, _ in rows]),
            "split": list(self.cfg.get("split") or DEFAULT_SPLIT),
            "seed": int(self.cfg.get("seed", 0)),
            "ids": "record",  # each window carries its record's name (kept predictions)
            **_preprocess_desc(self.cfg),
        }

    @staticmethod
    def read_record(path: Path) -> np.ndarray:
        """One record as float32 millivolts (1, n)."""
        from scipy.io import loadmat

        try:
            mat = loadmat(path)
        except Exception as err:  # noqa: BLE001 - scipy raises several types for bad files
            msg = str(err).split(";")[0].splitlines()[0]
            raise DataError(
                f"{path}: unreadable .mat file ({msg}); expected a MATLAB file with a 'val' array"
            ) from None
        if "val" not in mat:
            keys = [k for k in mat if not k.startswith("__")]
            raise DataError(
                f"{path}: no 'val' array in the .mat file (has {', '.join(keys) or 'nothing'}); "
                "expected the PhysioNet 2017 layout val int16 (1, n)"
            )
        val = np.asarray(mat["val"])
        if val.ndim == 1:
            val = val[None]
        if val.ndim != 2 or val.shape[0] != 1 or val.shape[1] == 0:
            raise DataError(
                f"{path}: 'val' has shape {val.shape}; expected one lead (1, n) with n > 0"
            )
        if not np.issubdtype(val.dtype, np.number):
            raise DataError(f"{path}: 'val' holds {val.dtype} values; expected int16 samples")
        return (val.astype(np.float64) / PHYSIONET2017_GAIN).astype(np.float32)

    def load(self) -> SourceData:
        ref, rows = self._reference()
        folder = ref.parent
        records = [self.read_record(folder / f"{r}.mat") for r, _ in rows]
        labels = np.array([lab for _, lab in rows], np.int64)
        pre = self.cfg.get("preprocess") or {}
        x, lengths, rec = signal.preprocess_records(
            records, PHYSIONET2017_FS, pre, names=[str(folder / f"{r}.mat") for r, _ in rows]
        )
        parts, split_info = split_indices(
            len(rows),
            self.cfg.get("split"),
            int(self.cfg.get("seed", 0)),
            labels,
            classes=PHYSIONET2017_CLASSES,
        )
        missing = signal.missing_summary(  # logs the dropped records by name
            pre,
            [signal.count_missing(r) for r in records],
            parts,
            [self.shown(r) for r, _ in rows],
            str(folder),
        )
        names = np.array([r for r, _ in rows])
        splits = {}
        for s in SPLITS:
            keep = np.isin(rec, parts[s])
            splits[s] = Split(x[keep], labels[rec[keep]], lengths[keep], ids=names[rec[keep]])
        raw = np.array([r.shape[1] for r in records])
        return SourceData(
            splits,
            "multiclass",
            "signal",
            list(PHYSIONET2017_CLASSES),
            1.0,
            info={
                "url": PHYSIONET2017_URL,
                "fs": signal.final_rate(PHYSIONET2017_FS, pre),
                "raw_fs": PHYSIONET2017_FS,
                "raw_samples_min_median_max": [
                    int(raw.min()),
                    int(np.median(raw)),
                    int(raw.max()),
                ],
                "records_per_split": {s: len(parts[s]) for s in SPLITS},
                **split_info,
                **({"missing": missing} if missing else {}),
            },
            score_classes=["N", "A", "O"],
        )


# -- WFDB records (MIT-BIH Arrhythmia Database) ----------------------------------------------------
AAMI_CLASSES = ["N", "S", "V", "F", "Q"]
# MIT-BIH beat annotation symbols by AAMI EC57 class; every other symbol (rhythm changes '+',
# noise '~', signal quality, comments, '|' artefacts, '!' flutter waves, '[' ']' ...) is not a beat
# and is skipped.
AAMI_SYMBOLS = {
    **dict.fromkeys("NLRej", 0),
    **dict.fromkeys("AaJS", 1),
    **dict.fromkeys("VE", 2),
    "F": 3,
    **dict.fromkeys("/fQ", 4),
}


@register_source("wfdb")
class WFDBSource(Source):
    """WFDB records (<rec>.hea, its signal files, <rec>.<annotator>) with beat annotations.

    target=beats: one sample per annotated beat, the window [R - window_before, R + window_after]
    seconds, labelled with its AAMI class (N, S, V, F, Q); beats whose window leaves the record are
    left out and counted in the dataset info. Seeded split of the beats, stratified by class (an
    intra-patient split: beats of one record go to every split).

    target=heart_rate: windows of hr_window_s every hr_stride_s seconds, target 60 / mean RR of the
    annotated beats inside the window (bpm). Each record is cut into contiguous time blocks (first
    70% train, next 10% val, last 20% test, per `split`) before windowing, so no window overlaps
    another split. Windows holding fewer than 2 beats have no rate and are counted, not kept.
    """

    class Options(SignalOptions):
        path: str | None = None
        records: Annotated[list[str | int], Field(min_length=1)]
        channel: NonNegInt | str | Annotated[list[NonNegInt | str], Field(min_length=1)] = 0
        annotator: Annotated[str, Field(min_length=1)] = "atr"
        target: Literal["beats", "heart_rate"] = "beats"
        window_before: PosFloat = 0.25
        window_after: PosFloat = 0.45
        hr_window_s: PosFloat = 10.0
        hr_stride_s: PosFloat = 5.0
        split: Fractions = [0.7, 0.1, 0.2]
        seed: int = 0

        @model_validator(mode="after")
        def _check(self):
            if not self.path:
                raise ValueError(
                    "path: required: the folder holding the WFDB records (.hea/.dat/.atr)"
                )
            self._split_problem(self.split)
            if self.split[1] <= 0:
                raise ValueError("split: the val fraction must be positive")
            w = self.preprocess.window
            if w.mode != "none" or w.length is not None:
                raise ValueError(
                    "preprocess.window: not used by source wfdb (beat windows come from "
                    "window_before/window_after, heart-rate windows from hr_window_s/hr_stride_s)"
                )
            return self

    path_keys = {"path": True}

    def _records(self) -> list[str]:
        recs = self.cfg.get("records") or []
        return [str(r) for r in recs]

    def _files(self, folder: Path, record: str) -> tuple[Path, list[Path], Path]:
        import wfdb

        annotator = str(self.cfg.get("annotator") or "atr")
        hea = folder / f"{record}.hea"
        if not hea.is_file():
            raise DataError(
                f"{hea}: record {record} has no header file; expected {record}.hea, its signal "
                f"file(s) and {record}.{annotator} in {folder}"
            )
        try:
            header = wfdb.rdheader(str(folder / record))
        except Exception as err:  # noqa: BLE001 - wfdb raises many types for a bad header
            raise DataError(f"{hea}: unreadable WFDB header ({err}".splitlines()[0] + ")") from None
        dats = [folder / name for name in dict.fromkeys(header.file_name or [])]
        for dat in dats:
            if not dat.is_file():
                raise DataError(
                    f"{dat}: signal file of record {record} (named in {hea.name}) not found"
                )
        atr = folder / f"{record}.{annotator}"
        if not atr.is_file():
            raise DataError(
                f"{atr}: annotation file of record {record} not found; expected beat annotations "
                f"({annotator})"
            )
        return hea, dats, atr

    def describe(self) -> dict[str, Any]:
        folder = folder_of(self.cfg)
        files: list[Path] = []
        for record in self._records():
            hea, dats, atr = self._files(folder, record)
            files += [hea, *dats, atr]
        keys = ("records", "channel", "annotator", "target", "split", "seed")
        target_keys = (
            ("window_before", "window_after")
            if self.cfg.get("target", "beats") == "beats"
            else ("hr_window_s", "hr_stride_s")
        )
        return {
            "source": "wfdb",
            **{k: self.cfg.get(k) for k in keys + target_keys},
            "files_sha256": fingerprint(sorted((f.name, sha256_file(f)) for f in files)),
            **_preprocess_desc(self.cfg),
        }

    def _channels(self, record: str, sig_name: list[str], where: Path) -> list[int]:
        wanted = self.cfg.get("channel", 0)
        wanted = wanted if isinstance(wanted, list | tuple) else [wanted]
        out = []
        for ch in wanted:
            if isinstance(ch, int) and 0 <= ch < len(sig_name):
                out.append(ch)
            elif isinstance(ch, str) and ch in sig_name:
                out.append(sig_name.index(ch))
            elif isinstance(ch, str) and ch.isdigit() and int(ch) < len(sig_name):
                out.append(int(ch))
            else:
                raise DataError(
                    f"{where}: record {record} has no channel {ch!r}; it has {len(sig_name)} channel(s): "
                    f"{', '.join(f'{i} {n}' for i, n in enumerate(sig_name))}"
                )
        return out

    def read(self, folder: Path, record: str) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """Signal (C, T) in physical units, fs, annotation samples and symbols of one record."""
        import wfdb

        hea, dats, atr = self._files(folder, record)
        header = wfdb.rdheader(str(folder / record))
        channels = self._channels(record, list(header.sig_name or []), hea)
        try:
            rec = wfdb.rdrecord(str(folder / record), channels=channels)
        except Exception as err:  # noqa: BLE001 - a truncated .dat gives a broadcast ValueError
            names = ", ".join(d.name for d in dats)
            raise DataError(
                f"{folder / record}: cannot read the samples of record {record} from {names} "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                f"expected {header.sig_len} samples of {header.n_sig} signal(s) as {hea.name} "
                "declares (truncated or corrupt file?)"
            ) from None
        try:
            ann = wfdb.rdann(str(folder / record), atr.suffix[1:])
        except Exception as err:  # noqa: BLE001
            raise DataError(
                f"{atr}: unreadable annotation file of record {record} ({type(err).__name__})"
            ) from None
        x = np.asarray(rec.p_signal, np.float64).T
        return x, float(rec.fs), np.asarray(ann.sample, np.int64), np.asarray(ann.symbol)

    def load(self) -> SourceData:
        folder = folder_of(self.cfg)
        records = self._records()
        if not records:
            raise DataError("data.records: no WFDB records listed; e.g. data.records=[100]")
        pre = self.cfg.get("preprocess") or {}
        target = self.cfg.get("target", "beats")
        seed = int(self.cfg.get("seed", 0))
        fractions = self.cfg.get("split") or DEFAULT_SPLIT
        xs, ys, info = [], [], {"skipped_symbols": {}}
        hr_parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {s: [] for s in SPLITS}
        fs_out = None
        skipped_edge = 0
        windows_without_beats = 0
        n_missing = []
        for record in records:
            x, fs, ann_samples, symbols = self.read(folder, record)
            n_missing.append(signal.count_missing(x))
            try:
                y, fs_out = signal.filter_record(x, fs, pre, f"{folder / record}")
            except signal.DroppedRecord:  # missing=drop_record; counted by missing_summary
                continue
            is_beat = np.array([s in AAMI_SYMBOLS for s in symbols], bool)
            for s in symbols[~is_beat]:
                info["skipped_symbols"][str(s)] = info["skipped_symbols"].get(str(s), 0) + 1
            beat_t = ann_samples[is_beat] / fs  # seconds
            beat_cls = np.array([AAMI_SYMBOLS[s] for s in symbols[is_beat]], np.int64)
            if target == "beats":
                before = int(round(float(self.cfg.get("window_before", 0.25)) * fs_out))
                after = int(round(float(self.cfg.get("window_after", 0.45)) * fs_out))
                peaks = np.round(beat_t * fs_out).astype(np.int64)
                ok = (peaks - before >= 0) & (peaks + after <= y.shape[1])
                skipped_edge += int((~ok).sum())
                idx = peaks[ok][:, None] + np.arange(-before, after)[None, :]
                xs.append(np.ascontiguousarray(y[:, idx].transpose(1, 0, 2)))
                ys.append(beat_cls[ok])
            else:
                win = int(round(float(self.cfg.get("hr_window_s", 10)) * fs_out))
                stride = int(round(float(self.cfg.get("hr_stride_s", 5)) * fs_out))
                bounds = np.round(np.cumsum([0.0, *fractions]) / sum(fractions) * y.shape[1])
                for i, s in enumerate(SPLITS):
                    a, b = int(bounds[i]), int(bounds[i + 1])
                    if b - a < win:
                        raise DataError(
                            f"{folder / record}: the {s} block of record {record} is "
                            f"{(b - a) / fs_out:.1f} s long, shorter than hr_window_s="
                            f"{self.cfg.get('hr_window_s')} s; use a shorter window or a longer "
                            "record"
                        )
                    starts = a + signal.window_starts(b - a, win, stride)
                    t0 = starts / fs_out
                    t1 = (starts + win) / fs_out
                    wins, rates = [], []
                    for k, start in enumerate(starts):
                        inside = beat_t[(beat_t >= t0[k]) & (beat_t < t1[k])]
                        if len(inside) < 2:
                            windows_without_beats += 1
                            continue
                        rates.append(60.0 / float(np.mean(np.diff(inside))))
                        wins.append(y[:, start : start + win])
                    if wins:
                        hr_parts[s].append((np.stack(wins), np.array(rates, np.float32)))
        # every record feeds every split (beats are split at random, heart-rate windows by
        # time), so the counts are of all records
        missing = signal.missing_summary(
            pre, n_missing, {"all": np.arange(len(records))}, records, str(folder)
        )
        if missing:
            info["missing"] = missing
        info["fs"] = fs_out
        if target == "beats":
            x = np.concatenate(xs).astype(np.float32)
            y_all = np.concatenate(ys)
            parts, split_info = split_indices(
                len(y_all), fractions, seed, y_all, what="beats", classes=AAMI_CLASSES
            )
            info.update(split_info)
            info["beats_outside_record"] = skipped_edge
            if skipped_edge:
                log.info("%d beat(s) too close to a record's edge for their window", skipped_edge)
            lengths = np.full(len(x), x.shape[-1], np.int64)
            splits = {s: Split(x[parts[s]], y_all[parts[s]], lengths[parts[s]]) for s in SPLITS}
            return SourceData(splits, "multiclass", "signal", list(AAMI_CLASSES), 1.0, info)
        info["windows_without_beats"] = windows_without_beats
        splits = {}
        for s in SPLITS:
            if not hr_parts[s]:
                raise DataError(
                    f"{folder}: no {s} window of records {', '.join(records)} holds 2 or more "
                    "annotated beats; expected beat annotations throughout the records"
                )
            x = np.concatenate([p[0] for p in hr_parts[s]]).astype(np.float32)
            y_s = np.concatenate([p[1] for p in hr_parts[s]])
            splits[s] = Split(x, y_s, np.full(len(x), x.shape[-1], np.int64))
        return SourceData(splits, "regression", "signal", ["heart_rate_bpm"], 1.0, info)


# -- synthetic ECG ---------------------------------------------------------------------------------
def simulate_ecg(
    heart_rate: float,
    duration_s: float,
    fs: float,
    rng: np.random.Generator,
    noise: float = 0.05,
    baseline_wander: float = 0.2,
) -> tuple[np.ndarray, float]:
    """One single-lead synthetic ECG (T,) in mV-like units and its exact heart rate (bpm).

    neurokit2's `simple` (Daubechies-wavelet) model gives a strictly periodic beat train. It
    places int(duration * rate / 60) beats, which would quantise the rate (6 bpm steps over 10 s);
    here a whole number of beats is simulated over the exact span they take and a random phase is
    cut from it, so the rate is exact. Then: random gain (R peak 0.7-1.3), a baseline wander
    sinusoid (0.05-0.5 Hz, amplitude `baseline_wander`) and white noise of std `noise`.
    """
    import neurokit2 as nk

    n_samples = int(round(duration_s * fs))
    period = 60.0 / heart_rate * fs  # samples per beat
    n_beats = int(np.ceil(n_samples / period)) + 2
    length = int(round(n_beats * period))
    ecg = nk.ecg_simulate(
        duration=(n_beats + 1e-6) * 60.0 / heart_rate,  # int() of it gives n_beats
        length=length,
        sampling_rate=fs,
        heart_rate=heart_rate,
        method="simple",
        noise=0,
        random_state=int(rng.integers(2**31)),
    )
    true_rate = 60.0 * fs * n_beats / length
    offset = int(rng.integers(0, int(period)))
    x = np.asarray(ecg[offset : offset + n_samples], np.float64)
    x = x / np.abs(x).max() * rng.uniform(0.7, 1.3)
    t = np.arange(n_samples) / fs
    f_bw, phase = rng.uniform(0.05, 0.5), rng.uniform(0, 2 * np.pi)
    x = x + baseline_wander * np.sin(2 * np.pi * f_bw * t + phase)
    x = x + noise * rng.standard_normal(n_samples)
    return x.astype(np.float32), float(true_rate)


@register_source("synthetic_ecg")
class SyntheticECGSource(Source):
    """Synthetic single-lead ECGs whose heart rate, drawn uniformly from `heart_rate` [lo, hi] bpm,
    is the regression target; one independent random stream per split."""

    class Options(SignalOptions):
        seed: int
        n_train: Annotated[int, Field(ge=2)]
        n_val: Annotated[int, Field(ge=2)]
        n_test: Annotated[int, Field(ge=2)]
        duration_s: Annotated[float, Field(gt=0, le=600)]
        fs: Annotated[float, Field(ge=50, le=2000)]
        heart_rate: Annotated[
            list[Annotated[float, Field(ge=20, le=250)]], Field(min_length=2, max_length=2)
        ]
        noise: Annotated[float, Field(ge=0)]
        baseline_wander: Annotated[float, Field(ge=0)] = 0.0

        def _native_fs(self) -> float | None:
            return self.fs

        @model_validator(mode="after")
        def _check(self):
            lo, hi = self.heart_rate
            if lo > hi:
                raise ValueError(f"heart_rate: [low, high] bpm, got low {lo} > high {hi}")
            return self

    KEYS = ("seed", "n_train", "n_val", "n_test", "duration_s", "fs", "heart_rate", "noise")

    def describe(self) -> dict[str, Any]:
        return {
            "source": "synthetic_ecg",
            **{k: self.cfg[k] for k in self.KEYS},
            "baseline_wander": self.cfg.get("baseline_wander", 0.0),
            "neurokit2": _package_version("neurokit2"),
            **_preprocess_desc(self.cfg),
        }

    def load(self) -> SourceData:
        c = self.cfg
        lo, hi = (float(v) for v in c["heart_rate"])
        fs, duration = float(c["fs"]), float(c["duration_s"])
        pre = c.get("preprocess") or {}
        splits = {}
        n_missing: list[int] = []  # generated records have none; the counts say so
        groups = {}
        for i, split in enumerate(SPLITS):
            rng = np.random.default_rng([int(c["seed"]), i])
            n = int(c[f"n_{split}"])
            rates = rng.uniform(lo, hi, n)
            records, targets = [], []
            for hr in rates:
                x, true_rate = simulate_ecg(
                    hr, duration, fs, rng, float(c["noise"]), float(c.get("baseline_wander", 0))
                )
                records.append(x[None])
                targets.append(true_rate)
            groups[split] = np.arange(len(n_missing), len(n_missing) + n)
            n_missing += [signal.count_missing(r) for r in records]
            x, lengths, rec = signal.preprocess_records(
                records, fs, pre, names=[f"synthetic_ecg {split} record {j}" for j in range(n)]
            )
            splits[split] = Split(x, np.array(targets, np.float32)[rec], lengths)
        missing = signal.missing_summary(
            pre, n_missing, groups, [str(i) for i in range(len(n_missing))], "synthetic_ecg"
        )
        return SourceData(
            splits,
            "regression",
            "signal",
            ["heart_rate_bpm"],
            1.0,
            info={
                "generator": "neurokit2 ecg_simulate (simple)",
                "fs": signal.final_rate(fs, pre),
                **({"missing": missing} if missing else {}),
            },
        )
