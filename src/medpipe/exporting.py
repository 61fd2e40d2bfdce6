"""Export a saved checkpoint's model (`python -m medpipe.export`) to ONNX or to a torch.export
program, and check it before keeping it.

The model is the one medpipe.train logs to MLflow (`task.inference_model()`): raw float32 samples
in the stored scale in, probabilities or values out. Its batch axis is dynamic; a model of padded
signals also takes their `lengths` (int64, one per record), and its time axis is dynamic where
the exporter keeps it open and the exported model still agrees with PyTorch on shorter records
(else it is fixed at the stored length, shorter records zero-padded to it). Before anything is
kept, the exported file is loaded (ONNX Runtime on the CPU, or `torch.export.load`) and run on the
checkpoint's whole test split beside the eager model; a difference above `tolerance` is an error.
The model and its metadata (`<out>.json`) are written to temporary files and moved into place.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from medpipe.data.processed import Split, file_digest, pooled_split, read_split
from medpipe.errors import DataError
from medpipe.evaluating import data_info, restore
from medpipe.outputs import AXES, describe_model
from medpipe.tasks.kinds import TASK_KINDS

SUFFIXES = {"onnx": ".onnx", "torch_export": ".pt2"}
OTHER = {"onnx": "torch_export", "torch_export": "onnx"}
EXAMPLE_BATCH = 2  # torch.export specialises sizes 0 and 1: the traced batch holds two samples
OUTPUT_NAMES = {"probabilities": "probabilities", "probability": "probability"}  # else values

# (x float32, lengths int64 or None) -> the model's output as numpy
Runner = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


class ExportFailed(Exception):
    """The exporter or the runtime could not handle the model (reported with the other format)."""


@dataclass
class Inputs:
    """What the model takes: `x` (and `lengths` for padded records, time along `time_axis`)."""

    variable_length: bool
    time_axis: int | None  # the axis of x (batch first) that `lengths` counts along
    stored_time: int | None  # its size in the processed data

    def names(self) -> list[str]:
        return ["x", "lengths"] if self.variable_length else ["x"]


def first_line(err: BaseException, limit: int = 240) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The exporters' warnings, log lines and what they print on stderr (torch.export prints
    the partial graph of a failed trace) are not for the user: the self-check is, and a failure
    is reported in one line."""
    disabled = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)


def checkpoint_test_split(folder: Path, folds: dict | None) -> Split:
    """The checkpoint's test split: its fold's rows in cross-validation, else the test split."""
    if folds is not None:
        return pooled_split(folder).take(folds["test"])
    return read_split(folder, "test")


def batch_of(
    split: Split, rows: slice, inputs: Inputs, time: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Samples `rows` as the exported model takes them: float32 in the stored scale (and int64
    lengths); `time`: the records cut to their first `time` steps."""
    x = np.array(split.x[rows], dtype=np.float32)  # a copy: the split may be memory-mapped
    lengths = None
    if inputs.variable_length:
        lengths = np.asarray(split.lengths[rows], dtype=np.int64)  # type: ignore[index]
        if time is not None:
            cut = [slice(None)] * x.ndim
            cut[inputs.time_axis] = slice(0, time)  # type: ignore[index]
            x, lengths = x[tuple(cut)], np.minimum(lengths, time)
    return np.ascontiguousarray(x), lengths


def example_batch(split: Split, inputs: Inputs) -> tuple[np.ndarray, np.ndarray | None]:
    x, lengths = batch_of(split, slice(0, EXAMPLE_BATCH), inputs)
    if len(x) < EXAMPLE_BATCH:  # a one-sample test split: the sample twice
        x = np.concatenate([x] * EXAMPLE_BATCH)[:EXAMPLE_BATCH]
        lengths = None if lengths is None else np.resize(lengths, EXAMPLE_BATCH)
    return x, lengths


def eager(model: nn.Module, x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    with torch.no_grad():
        xt = torch.from_numpy(x)
        out = model(xt) if lengths is None else model(xt, lengths=torch.from_numpy(lengths))
    return out.numpy()


# -- exporting ----------------------------------------------------------------------------------
def trace(
    model: nn.Module, x: np.ndarray, lengths: np.ndarray | None, inputs: Inputs, open_time: bool
) -> torch.export.ExportedProgram:
    """torch.export of `model` with a dynamic batch axis; `open_time`: the time axis too, where
    the exporter can keep it open (Dim.AUTO: it specialises what the net's code fixes)."""
    batch = torch.export.Dim("batch")
    args = (torch.from_numpy(x),)
    if lengths is None:
        return torch.export.export(model, args, dynamic_shapes={"x": {0: batch}})
    x_axes: dict[int, Any] = {0: batch}
    if open_time:
        x_axes[inputs.time_axis] = torch.export.Dim.AUTO  # type: ignore[index]
    shapes = {"x": x_axes, "lengths": {0: batch}}
    return torch.export.export(
        model, args, {"lengths": torch.from_numpy(lengths)}, dynamic_shapes=shapes
    )


def time_is_open(program: torch.export.ExportedProgram, inputs: Inputs) -> bool:
    if not inputs.variable_length:
        return False
    for node in program.graph.nodes:  # user inputs keep their argument names
        if node.op == "placeholder" and node.name == "x":
            return not is_concrete_int(node.meta["val"].shape[inputs.time_axis])
    return False


def rename_dims(proto, names: dict[str, str]) -> None:
    """ONNX symbolic dims named as the user reads them (batch, time) wherever they occur."""
    graph = proto.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def write_onnx(
    program: torch.export.ExportedProgram,
    x: np.ndarray,
    lengths: np.ndarray | None,
    inputs: Inputs,
    output_name: str,
    path: Path,
) -> tuple[Runner, dict[str, Any]]:
    """The program as ONNX at `path` (one file, weights inside) and its ONNX Runtime session."""
    import onnx
    import onnxruntime as ort

    kwargs = {"lengths": torch.from_numpy(lengths)} if lengths is not None else None
    try:
        with quiet():
            onnx_program = torch.onnx.export(
                program,
                (torch.from_numpy(x),),
                kwargs=kwargs,
                input_names=inputs.names(),
                output_names=[output_name],
                dynamo=True,
                verbose=False,
            )
        proto = onnx_program.model_proto
    except Exception as err:  # noqa: BLE001 - any exporter failure is reported the same way
        raise ExportFailed(f"torch.onnx.export: {first_line(err)}") from None
    x_dims = proto.graph.input[0].type.tensor_type.shape.dim
    names = {x_dims[0].dim_param: "batch"} if x_dims[0].dim_param else {}
    if inputs.time_axis is not None and x_dims[inputs.time_axis].dim_param:
        names[x_dims[inputs.time_axis].dim_param] = "time"
    rename_dims(proto, names)
    onnx.save_model(proto, str(path))
    try:
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3  # ORT's own warnings are not the user's
        session = ort.InferenceSession(
            str(path), session_options, providers=["CPUExecutionProvider"]
        )
        options = ort.RunOptions()
        options.log_severity_level = 4  # a failing run is reported in one line by the caller
    except Exception as err:  # noqa: BLE001
        raise ExportFailed(f"ONNX Runtime cannot load it: {first_line(err)}") from None

    def run(xb: np.ndarray, lb: np.ndarray | None) -> np.ndarray:
        feed = {"x": xb} if lb is None else {"x": xb, "lengths": lb}
        return session.run([output_name], feed, options)[0]

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return run, {"opset": opset, "runtime": "onnxruntime CPUExecutionProvider"}


def write_program(
    program: torch.export.ExportedProgram, path: Path
) -> tuple[Runner, dict[str, Any]]:
    """The program saved with torch.export.save at `path`, and the module loaded back from it."""
    try:
        with quiet():
            torch.export.save(program, path)
            module = torch.export.load(path).module()
    except Exception as err:  # noqa: BLE001 - e.g. a value that cannot be serialised
        raise ExportFailed(f"torch.export.save/load: {first_line(err)}") from None

    def run(xb: np.ndarray, lb: np.ndarray | None) -> np.ndarray:
        with torch.no_grad():
            xt = torch.from_numpy(xb)
            out = module(xt) if lb is None else module(xt, lengths=torch.from_numpy(lb))
        return out.numpy()

    return run, {"opset": None, "runtime": "torch.export.load(...).module()"}


def export_file(
    fmt: str,
    model: nn.Module,
    example: tuple[np.ndarray, np.ndarray | None],
    inputs: Inputs,
    output_name: str,
    path: Path,
    open_time: bool,
) -> tuple[Runner, dict[str, Any], bool]:
    """Trace, write and load back: (runner, format facts, whether the time axis is open)."""
    x, lengths = example
    try:
        with quiet():
            program = trace(model, x, lengths, inputs, open_time)
    except Exception as err:  # noqa: BLE001
        raise ExportFailed(f"torch.export: {first_line(err)}") from None
    open_now = time_is_open(program, inputs)
    if fmt == "onnx":
        run, facts = write_onnx(program, x, lengths, inputs, output_name, path)
    else:
        run, facts = write_program(program, path)
    return run, facts, open_now


# -- the self-check ---------------------------------------------------------------------------
def differences(
    run: Runner,
    model: nn.Module,
    split: Split,
    inputs: Inputs,
    batches: list[slice],
    time: int | None = None,
) -> tuple[float, float]:
    """(max |exported - eager|, max |exported - eager| / max(1, |eager|)) over the batches; inf
    where shapes or NaNs disagree. The second is what `tolerance` bounds: the absolute difference
    for probabilities and values up to 1, relative above, where float32 itself cannot resolve
    1e-5 (its spacing is 7.6e-6 between 64 and 128, a heart rate in bpm)."""
    worst = scaled = 0.0
    for rows in batches:
        x, lengths = batch_of(split, rows, inputs, time)
        expected = eager(model, x, lengths).astype(np.float64)
        got = np.asarray(run(x, lengths), dtype=np.float64)
        if got.shape != expected.shape:
            return math.inf, math.inf
        nan = np.isnan(expected)
        if (np.isnan(got) != nan).any():
            return math.inf, math.inf
        if (~nan).any():
            diff = np.abs(got - expected)[~nan]
            worst = max(worst, float(diff.max()))
            scaled = max(scaled, float((diff / np.maximum(1.0, np.abs(expected[~nan]))).max()))
    return worst, scaled


def batches_of(n: int, batch_size: int) -> list[slice]:
    """The test split in batches, and its first sample alone (the smallest dynamic batch)."""
    return [slice(0, 1)] + [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def export_checked(
    fmt: str,
    model: nn.Module,
    split: Split,
    inputs: Inputs,
    output_name: str,
    path: Path,
    batch_size: int,
    tolerance: float,
    net: str,
) -> tuple[dict[str, Any], bool, dict[str, Any]]:
    """Export to `path` and check it on the whole split: (format facts, time axis open, check).
    The time axis stays open only where the file also agrees with PyTorch on records cut to
    three quarters of their stored length; else it is exported again, fixed."""
    example = example_batch(split, inputs)
    batches = batches_of(len(split), batch_size)
    times = [inputs.stored_time] if inputs.variable_length else []
    try:
        run, facts, time_open = export_file(
            fmt, model, example, inputs, output_name, path, open_time=True
        )
        if time_open:
            short = inputs.stored_time - max(1, inputs.stored_time // 4)  # type: ignore[operator]
            try:
                probe = differences(run, model, split, inputs, batches[1:2], short)[1]
            except Exception:  # noqa: BLE001 - e.g. a shape guard of the exported program
                probe = math.inf
            if probe <= tolerance:
                times.append(short)
            else:
                run, facts, time_open = export_file(
                    fmt, model, example, inputs, output_name, path, open_time=False
                )
    except ExportFailed as err:
        raise DataError(
            f"format={fmt}: the exporter cannot handle the net {net} ({err}); "
            f"try format={OTHER[fmt]}"
        ) from None
    try:
        worst, scaled = differences(run, model, split, inputs, batches)
    except Exception as err:  # noqa: BLE001
        raise DataError(
            f"format={fmt}: the exported model fails on the test split ({first_line(err)}); "
            f"try format={OTHER[fmt]}"
        ) from None
    if not scaled <= tolerance:
        raise DataError(
            f"format={fmt}: the exported model differs from the PyTorch model by up to "
            f"{worst:.3g} on the {len(split)} test samples (tolerance {tolerance:g}); "
            f"nothing written; try format={OTHER[fmt]}"
        )
    check = {
        "split": "test",
        "n_checked": len(split),
        "max_abs_diff": worst,
        "max_diff": scaled,
        "rule": "max |exported - eager| / max(1, |eager|) <= tolerance",
        "tolerance": tolerance,
        "batch_size": batch_size,
        "time_lengths": times,
        "runtime": facts["runtime"],
        "reference": "the PyTorch eager inference model on the CPU, float32",
    }
    return facts, time_open, check


# -- the command ------------------------------------------------------------------------------
def output_path(c: dict[str, Any], fmt: str) -> Path:
    out = Path(c["out"]).expanduser() if c.get("out") else None
    if out is None:
        out = Path(c["output_dir"]) / f"model{SUFFIXES[fmt]}"
    if out.is_dir():
        raise DataError(f"out: {out} is a folder; name the model file (e.g. {out}/model.onnx)")
    return out


def kind_name(task: nn.Module) -> str:
    return next((n for n, k in TASK_KINDS.items() if k.module is type(task)), type(task).__name__)


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in ("torch", "onnx", "onnxruntime", "onnxscript", "medpipe"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    found["torch"] = torch.__version__
    return found


def export(c: dict[str, Any]) -> dict[str, float]:
    """Export the checkpoint `c["ckpt_path"]` (a resolved conf/export.yaml); return the check's
    numbers. Raises DataError (one line) when the model cannot be exported or differs."""
    fmt, tolerance = str(c["format"]), float(c["tolerance"])
    out = output_path(c, fmt)
    run_cfg, folder, folds, task = restore(c)
    meta = task.meta
    if getattr(task, "export_card", None) is not None:  # its model does not take the samples
        raise DataError(
            f"ckpt_path: {c['ckpt_path']}: task kind {kind_name(task)} is not exported here: "
            "its model takes noise and a class, not samples, so the test split cannot check it; "
            "medpipe.train logs it to MLflow as a torch.export program (runs:/<run id>/model)"
        )
    if getattr(type(task.net), "exportable", True) is False:  # e.g. MiniRocket's numba transform
        raise DataError(
            f"ckpt_path: {c['ckpt_path']}: {type(task.net).__name__} computes in numpy, which "
            f"{fmt} cannot trace; use the model medpipe.train logged to MLflow (runs:/<run id>/model)"
        )
    split = checkpoint_test_split(folder, folds)
    if len(split) == 0:
        raise DataError(f"{folder}: the test split is empty; nothing to check the export on")
    model = task.inference_model().cpu().eval()
    variable = split.lengths is not None
    axes = AXES.get(meta.kind, "")
    time_axis = (1 + axes.index("T") if "T" in axes else split.x.ndim - 1) if variable else None
    inputs = Inputs(variable, time_axis, int(split.x.shape[time_axis]) if variable else None)
    output_shape = [int(d) for d in eager(model, *example_batch(split, inputs)).shape[1:]]
    card = describe_model(meta, split.x.dtype, output_shape, variable)
    output_name = OUTPUT_NAMES.get(card["output_kind"], "values")
    net = f"{run_cfg['model'].get('name', '?')} ({type(task.net).__name__})"

    out.parent.mkdir(parents=True, exist_ok=True)
    meta_path = out.with_name(out.name + ".json")
    # torch.export.load wants a .pt2 name: the temporary file has the format's suffix
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp{SUFFIXES[fmt]}")
    meta_tmp = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    try:
        facts, time_open, check = export_checked(
            fmt, model, split, inputs, output_name, tmp, int(c["batch_size"]), tolerance, net
        )
        metadata = describe_export(
            c, fmt, out, task, card, inputs, output_name, facts, time_open, check, split.x.dtype
        )
        meta_tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, out)
        os.replace(meta_tmp, meta_path)
    finally:
        tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)
    dynamic = "batch and time" if time_open else "batch"
    print(
        f"exported: {out} (format {fmt}, dynamic {dynamic}; {check['n_checked']} test samples "
        f"checked, max abs diff {check['max_abs_diff']:.2e}); metadata {meta_path.name}"
    )
    return {
        "export/max_abs_diff": check["max_abs_diff"],
        "export/n_checked": float(check["n_checked"]),
    }


def describe_export(
    c: dict[str, Any],
    fmt: str,
    out: Path,
    task,
    card: dict[str, Any],
    inputs: Inputs,
    output_name: str,
    facts: dict[str, Any],
    time_open: bool,
    check: dict[str, Any],
    stored_dtype: np.dtype,
) -> dict[str, Any]:
    """The metadata beside the model: what goes in and out, where it came from, how it was
    checked and with which libraries."""
    meta = task.meta
    stored = [int(d) for d in meta.sample_shape]
    x_shape: list[Any] = ["batch", *stored]
    x_text = card["input"]
    if inputs.variable_length:
        t = inputs.time_axis
        if time_open:
            x_shape[t] = "time"  # type: ignore[index]
        else:
            fixed = describe_model(meta, stored_dtype, card["output_shape"], False)
            x_text = (
                f"{fixed['input']}; T fixed at {inputs.stored_time}: shorter records zero-padded "
                "to it, with their true lengths"
            )
    model_inputs = [{"name": "x", "shape": x_shape, "dtype": "float32", "description": x_text}]
    if inputs.variable_length:
        model_inputs.append(
            {
                "name": "lengths",
                "shape": ["batch"],
                "dtype": "int64",
                "description": "each record's true length (samples along T); the padding after "
                "it is masked",
            }
        )
    return {
        "format": fmt,
        "file": out.name,
        "opset": facts["opset"],
        "inputs": model_inputs,
        "output": {
            "name": output_name,
            "shape": ["batch", *card["output_shape"]],
            "dtype": "float32",
            "description": card["output"],
        },
        "dynamic_axes": {
            "x": {"0": "batch", **({str(inputs.time_axis): "time"} if time_open else {})},
            **({"lengths": {"0": "batch"}} if inputs.variable_length else {}),
        },
        "classes": card["classes"],
        "task": meta.task,
        "task_kind": kind_name(task),
        "kind": meta.kind,
        "stored_shape": stored,
        "scale": float(meta.scale),
        "operating_point": task.operating_point(),
        "checkpoint": {
            "path": str(Path(c["ckpt_path"]).resolve()),
            "sha256": file_digest(c["ckpt_path"]),
        },
        "data": data_info(meta),
        "n_checked": check["n_checked"],
        "max_abs_diff": check["max_abs_diff"],
        "tolerance": check["tolerance"],
        "check": check,
        "versions": versions(),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
