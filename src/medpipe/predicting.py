"""Apply a trained model to new files:  python -m medpipe.predict ckpt_path=... inputs=...

The model is a medpipe checkpoint or an MLflow model (`runs:/<id>/model`, `models:/<name>@<alias>`);
either way it is the exported inference model (raw stored-scale samples in, calibrated probabilities
or values out) and the description of the data it learnt from: the sample shape, classes, operating
point and how a file is read (`reading`: the data keys of medpipe.data.sources.base.READING_KEYS).
Files are read exactly as the training data was prepared (medpipe.data.files for images and
volumes, medpipe.data.signal for signals), predicted in batches, and written to predictions.csv
(atomically), one row per sample; an input that cannot be read gets a row with its reason and the
others are still predicted. The `input` column names each file as found, or, under
`privacy.hash_ids=true`, holds its salted hash (`hash_inputs`).
"""

from __future__ import annotations

import contextlib
import csv
import glob
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medpipe.data.files import InputSpec, file_format, samples_of
from medpipe.data.sources import reading_of
from medpipe.errors import ConfigError, DataError
from medpipe.evaluation.stats import class_key

log = logging.getLogger(__name__)
SIGNAL_SUFFIXES = (".hea", ".mat", ".csv", ".tsv", ".txt", ".npy")


@dataclass
class Predictor:
    """A model ready to predict: `model(x[, lengths])` on float32 stored-scale samples; `card`:
    what it takes and returns (medpipe.outputs.describe_model) with its operating point and
    `reading` (how files are read)."""

    model: torch.nn.Module
    card: dict[str, Any]
    source: str  # the checkpoint or model URI, for messages and the output's header

    @property
    def kind(self) -> str:
        return str(self.card["kind"])

    @property
    def task(self) -> str:
        return str(self.card["task"])

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.card["classes"]]

    @property
    def reading(self) -> dict[str, Any]:
        return dict(self.card.get("reading") or {})

    def spec(self) -> InputSpec:
        return InputSpec.from_options(self.kind, self.card["stored_shape"], self.reading)

    @torch.no_grad()
    def __call__(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if lengths is None:
            out = self.model(t)
        else:
            out = self.model(t, lengths=torch.from_numpy(np.asarray(lengths, np.int64)))
        return out.detach().cpu().numpy().astype(np.float64)


def from_checkpoint(path: str) -> Predictor:
    from medpipe.checkpoints import load_checkpoint
    from medpipe.evaluating import trained_task
    from medpipe.outputs import describe_model

    ckpt = load_checkpoint(path)
    run_cfg = ckpt["medpipe"]["config"]
    task = trained_task(ckpt)
    meta = task.meta
    if getattr(task, "export_card", None) is not None:  # its model takes no samples (a GAN)
        raise DataError(
            f"{path}: a {run_cfg.get('task_kind', meta.task)} model: it takes no input files "
            "(predict applies models that read samples: classifiers and regressors)"
        )
    model = task.inference_model().cpu().eval()
    signal = meta.kind == "signal"
    dtype = np.float32 if signal or meta.scale == 1.0 else np.uint8
    example = torch.zeros((1, *meta.sample_shape))
    with torch.no_grad():
        shape = tuple(model(example).shape[1:])
    card = describe_model(meta, np.dtype(dtype), shape, signal)
    card["operating_point"] = task.operating_point()
    card["reading"] = reading_of(run_cfg["data"])
    return Predictor(model, card, str(path))


def from_mlflow(uri: str, tracking_uri: str | None) -> Predictor:
    import mlflow

    from medpipe.tracking.store import open_client

    if tracking_uri:
        open_client(tracking_uri)  # a server that answers; runs of dead processes marked KILLED
        mlflow.set_tracking_uri(tracking_uri)
    try:
        info = mlflow.models.get_model_info(uri)
        model = mlflow.pytorch.load_model(uri, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - MLflow raises many types for a bad URI
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"model_uri: cannot load '{uri}' ({msg})") from None
    card = (info.metadata or {}).get("medpipe")
    if not card or "stored_shape" not in card:
        raise DataError(
            f"model_uri: '{uri}' is not a model logged by medpipe (no medpipe metadata)"
        )
    if card.get("output_kind") not in ("probabilities", "probability", "values"):
        raise DataError(f"model_uri: '{uri}' takes no input files (a generator?)")
    if "reading" not in card:  # logged before models carried it: the sample shape alone
        card["reading"] = {"kind": card["kind"]}
    with contextlib.suppress(NotImplementedError):  # a torch.export program: already for inference
        model.eval()
    return Predictor(model, card, uri)


def load_predictor(c: dict[str, Any]) -> Predictor:
    if c.get("ckpt_path"):
        return from_checkpoint(str(c["ckpt_path"]))
    from medpipe.tracking.store import tracking_uri

    uri = tracking_uri(c.get("tracking_uri"), c["paths"]["mlflow_dir"])
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ConfigError(
            f"model_uri: no MLflow store at {uri.removeprefix('sqlite:///')}; give "
            "tracking_uri=<the store the run logged to> (or set MLFLOW_TRACKING_URI)"
        )
    return from_mlflow(str(c["model_uri"]), uri)


# -- inputs ----------------------------------------------------------------------------------------
def readable(path: Path, kind: str) -> bool:
    if kind == "signal":
        return path.name.lower().endswith(SIGNAL_SUFFIXES)
    return file_format(path) is not None


def expand_inputs(inputs: str, kind: str) -> list[Path]:
    """A file, every readable file below a folder, or a glob's matches; sorted."""
    path = Path(inputs).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and readable(p, kind))
        what = f"folder {path}"
    else:
        found = sorted(
            Path(p)
            for p in glob.glob(str(path), recursive=True)
            if Path(p).is_file() and readable(Path(p), kind)
        )
        what = f"pattern {inputs}"
    if kind == "signal":  # PhysioNet ships a .hea beside each .mat: the WFDB record is read once
        headers = {p.with_suffix("") for p in found if p.suffix == ".hea"}
        found = [p for p in found if p.suffix != ".mat" or p.with_suffix("") not in headers]
    if not found:
        allowed = (
            ", ".join(SIGNAL_SUFFIXES) if kind == "signal" else "PNG, JPEG, TIFF, BMP, DICOM, NIfTI"
        )
        raise ConfigError(f"inputs: no {kind} files in {what} (readable: {allowed})")
    return found


@dataclass
class Row:
    input: str
    error: str = ""
    output: np.ndarray | None = None  # one sample's model output
    windows: int = 0
    notes: list[str] = field(default_factory=list)


def _signal_samples(
    path: Path, p: Predictor, fs: float | None
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, windows (n, C, T), lengths (n,)) per record of a signal file."""
    from medpipe.data.signal_files import read_signal_file, windows_for_prediction

    reading = p.reading
    for name, x, rate in read_signal_file(path, reading, p.card["stored_shape"], fs):
        w, lengths = windows_for_prediction(x, rate, reading, p.card["stored_shape"], name)
        yield name, w, lengths


def _pad_to(x: np.ndarray, t: int) -> np.ndarray:
    """Zero-pad the last axis of (n, C, T) to t samples."""
    short = t - x.shape[-1]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, short)]) if short > 0 else x


def predict_files(
    p: Predictor, files: list[Path], batch_size: int, aggregate: str, fs: float | None
) -> list[Row]:
    from medpipe.data.signal import window_starts
    from medpipe.models.windows import WindowReading

    rows: list[Row] = []
    pending: list[tuple[Row, np.ndarray, np.ndarray | None]] = []  # one row per sample
    signal = p.kind == "signal"
    reading = WindowReading.of(p.reading) if signal else None
    window = (reading.length, reading.stride) if reading is not None else None

    def flush() -> None:
        if not pending:
            return
        t = max(s.shape[-1] for _, s, _ in pending)  # whole records differ in length
        x = np.concatenate([_pad_to(s, t) for _, s, _ in pending]).astype(np.float32, copy=False)
        lengths = np.concatenate([n for _, _, n in pending]) if signal else None
        out = p(x, lengths)
        i = 0
        for row, s, n in pending:
            k = len(s)
            part = out[i : i + k]
            i += k
            # a record read whole is windowed by the model itself (window.mode=random)
            row.windows = k if window is None else len(window_starts(int(n[0]), *window))
            if k == 1 or aggregate == "first":
                row.output = part[0]
            elif aggregate == "max":
                row.output = part.max(0)
            else:
                row.output = part.mean(0)
        pending.clear()

    spec = None if signal else p.spec()
    for path in files:
        try:
            if signal:
                got = [(name, w, n) for name, w, n in _signal_samples(path, p, fs)]
                for name, w, n in got:
                    row = Row(name)
                    rows.append(row)
                    pending.append((row, w, n))
            else:
                samples, notes = samples_of(path, spec)
                for k, s in enumerate(samples):
                    row = Row(str(path) if len(samples) == 1 else f"{path}#{k}", notes=notes)
                    rows.append(row)
                    pending.append((row, s[None], None))
        except DataError as err:
            rows.append(Row(str(path), error=str(err).removeprefix(f"{path}: ")))
            continue
        if len(pending) >= batch_size or (
            signal and sum(len(s) for _, s, _ in pending) >= batch_size
        ):
            flush()
    flush()
    return rows


# -- output ------------------------------------------------------------------------------------
def decide(p: Predictor, out: np.ndarray, threshold: Any) -> tuple[list[float], str]:
    """(probability per class, the predicted class at the operating point); regression: the
    value and ''."""
    task, classes = p.task, p.classes
    if task == "regression":
        return [float(np.ravel(out)[0])], ""
    probs = np.ravel(out)
    if task == "binary" and len(probs) == 1:  # one-logit binary: P(positive)
        probs = np.array([1 - probs[0], probs[0]])
    if task == "binary":
        t = 0.5 if threshold is None else float(threshold)
        return probs.tolist(), classes[int(probs[1] >= t)]
    if task == "multilabel":
        t = np.full(len(classes), 0.5) if threshold is None else np.asarray(threshold, float)
        return probs.tolist(), ";".join(
            c for c, v, tt in zip(classes, probs, t, strict=True) if v >= tt
        )
    return probs.tolist(), classes[int(np.argmax(probs))]


def write_predictions(path: Path, p: Predictor, rows: list[Row], threshold: Any) -> None:
    """predictions.csv, written to a temporary file and renamed into place."""
    keys = [class_key(c) for c in p.classes]
    value_cols = (
        [keys[0] if keys else "value"] if p.task == "regression" else [f"prob_{k}" for k in keys]
    )
    header = ["input", "status", *value_cols]
    header += [] if p.task == "regression" else ["predicted"]
    signal = p.kind == "signal"
    header += ["windows"] if signal else []
    header += ["note", "error"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            for r in rows:
                if r.output is None:
                    blank = [""] * (len(header) - 4)
                    w.writerow([r.input, "failed", *blank, "", r.error])
                    continue
                values, predicted = decide(p, r.output, threshold)
                line = [r.input, "ok", *(f"{v:.9g}" for v in values)]
                line += [] if p.task == "regression" else [predicted]
                line += [r.windows] if signal else []
                w.writerow([*line, "; ".join(r.notes), ""])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def hash_inputs(rows: list[Row], privacy: dict[str, Any] | None, inputs: str) -> None:
    """Under privacy.hash_ids=true, each row's input (and its mention in an error) becomes its
    salted hash (medpipe.privacy.hashing). With inputs=DIR the path under DIR is hashed: for a
    folder of class subfolders, the same string a training on it stores as the record id, so
    the same salt gives the same hash in both. Otherwise the path as found is hashed."""
    from medpipe.privacy.hashing import hasher_of

    hasher = hasher_of(privacy)
    if hasher is None:
        return
    base = Path(inputs).expanduser()
    prefix = f"{base}{os.sep}" if base.is_dir() else None
    for r in rows:
        name = r.input
        key = name.removeprefix(prefix) if prefix and name.startswith(prefix) else name
        r.input = hasher(key)
        r.error = r.error.replace(name, r.input)


def predict(c: dict[str, Any]) -> int:
    """Run a predict config; returns the number of inputs that failed."""
    torch.set_grad_enabled(False)
    p = load_predictor(c)
    files = expand_inputs(str(c["inputs"]), p.kind)
    rows = predict_files(p, files, int(c["batch_size"]), str(c["aggregate"]), c.get("fs"))
    hash_inputs(rows, c.get("privacy"), str(c["inputs"]))
    op = p.card.get("operating_point") or {}
    threshold = c.get("threshold") if c.get("threshold") is not None else op.get("threshold")
    out = Path(c["output"])
    write_predictions(out, p, rows, threshold)
    failed = [r for r in rows if r.output is None]
    for r in failed:
        print(f"failed: {r.input}: {r.error}")
    decision = (
        ""
        if p.task in ("regression", "multiclass")
        else f", decided at threshold {threshold if threshold is not None else 0.5}"
    )
    print(
        f"predicted {len(rows) - len(failed)} of {len(rows)} inputs ({len(failed)} failed) with "
        f"{p.source}{decision} -> {out}"
    )
    return len(failed)
