"""What a run leaves behind: metrics.json (atomically), the printed summary, and the artifacts and
exported model logged to its MLflow run.

The exported model says what it takes and returns: its MLflow signature gives the input's float32
shape (`(-1, 1, 28, 28)`) and names the output by what it holds (`probabilities (batch, 2) of
classes: no lesion, lesion`); its MLmodel metadata (`medpipe`) adds the input in words (`image
intensities (batch, C=1, H=28, W=28), stored scale 0-255 (the uint8 values as float32)`), the
classes and shapes; its description (the LoggedModel's `mlflow.note.content` tag, which the UI
shows as the model's description) says how to load and call it."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medpipe.data.datamodule import MedDataModule
from medpipe.data.processed import DatasetMeta
from medpipe.data.sources import reading_of
from medpipe.evaluation.settings import threshold_text
from medpipe.tasks.base import MedTask
from medpipe.tracking.provenance import hydra_overrides


def floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)


CI_SUFFIXES = ("_ci_low", "_ci_high")


def with_interval(metrics: dict[str, float], key: str) -> str:
    """`0.956 [0.941, 0.969]` when the metric has an interval, else `0.9560`."""
    low, high = metrics.get(key + "_ci_low"), metrics.get(key + "_ci_high")
    if low is None or high is None:
        return f"{metrics[key]:.4f}"
    return f"{metrics[key]:.3f} [{low:.3f}, {high:.3f}]"


def print_metrics(title: str, metrics: dict[str, float]) -> None:
    """One line per metric; a metric's interval beside it (`test/auroc 0.956 [0.941, 0.969]`)."""
    print(title)
    for k in sorted(metrics):
        if not k.endswith(CI_SUFFIXES):
            print(f"  {k:<28} {with_interval(metrics, k)}")


def print_operating_point(op: dict[str, Any]) -> None:
    """`threshold 0.431 (youden, chosen on the validation split); temperature 1.27`."""
    if not op:
        return
    t = op.get("threshold")
    if t is None:
        text = "decision: argmax over the classes"
    else:
        text = f"threshold {threshold_text(t)} ({op.get('threshold_rule')}, chosen on the validation split)"
    print(f"{text}; temperature {op.get('temperature', 1.0):.3g}")


def print_warnings(warnings: list[str]) -> None:
    for w in warnings:
        print(f"warning: {w}")


def best_row(rows: list[dict[str, float]], monitor: str, mode: str) -> dict[str, float]:
    """The history row of the best epoch on `monitor` (the last row if none has it)."""
    scored = [r for r in rows if monitor in r and not math.isnan(r[monitor])]
    if not scored:
        return rows[-1] if rows else {}
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: r[monitor])


def input_example(dm: MedDataModule) -> np.ndarray:
    return np.asarray(dm.split_arrays("test").x[:2]).astype(np.float32)


NOTE_TAG = "mlflow.note.content"  # a LoggedModel's (and a run's) description in the MLflow UI
AXES = {"image": "CHW", "volume": "CDHW", "signal": "CT", "frames": "CTHW"}  # one sample
WHAT = {
    "image": "image intensities",
    "volume": "volume intensities",
    "signal": "signal samples",
    "frames": "frame intensities",
}


def _shape_text(shape: Sequence[int], axes: str = "") -> str:
    """(batch, C=1, H=28, W=28) with the data kind's axis letters, (batch, 2) without; -1: T."""
    named = len(axes) == len(shape)
    dims = ["batch"]
    for i, d in enumerate(shape):
        if d == -1:
            dims.append(axes[i] if named else "n")
        else:
            dims.append(f"{axes[i]}={d}" if named else str(d))
    return f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"


def describe_model(
    meta: DatasetMeta,
    stored_dtype: np.dtype,
    output_shape: Sequence[int],
    variable_length: bool,
) -> dict[str, Any]:
    """What the exported model takes and returns, in words and as fields: `input` and `output`
    (sentences; `output` also names the signature's output tensor), `input_shape` and
    `output_shape` (one sample; -1: any length), `stored_shape` (one sample as stored), `classes`,
    `task`, `kind`, `scale`, `output_kind` (probabilities | probability | values) and
    `variable_length` (padded records: the model also takes their `lengths`)."""
    stored = [int(d) for d in meta.sample_shape]
    axes = AXES.get(meta.kind, "")
    shape = list(stored)
    time = axes.index("T") if "T" in axes and len(axes) == len(shape) else len(shape) - 1
    if variable_length:  # padded records: the time axis is open
        shape[time] = -1
    dtype = np.dtype(stored_dtype)
    if dtype == np.uint8:
        scale = f"stored scale 0-{meta.scale:g} (the uint8 values as float32)"
    else:
        scale = "float32 values as stored in the processed data"
    inp = f"{WHAT.get(meta.kind, 'samples')} {_shape_text(shape, axes)}, {scale}"
    if variable_length:
        inp += (
            f"; {axes[time] if axes else 'the last axis'} = {stored[time]} in the training data "
            "(shorter records zero-padded, given with their lengths)"
        )
    classes = [str(c) for c in meta.classes]
    out_shape = [int(d) for d in output_shape]
    k = out_shape[0] if len(out_shape) == 1 else None
    if meta.task == "regression" and not out_shape:
        kind = "values"
        out = f"{classes[0] if classes else 'target'} (batch,), in the target's units"
    elif meta.task in ("binary", "multiclass") and k == len(classes):
        kind = "probabilities"
        out = f"probabilities (batch, {k}) of classes: {', '.join(classes)}"
    elif meta.task == "binary" and k == 1 and len(classes) == 2:
        kind = "probability"
        out = f"probability (batch, 1) of class {classes[1]} (1 - it: {classes[0]})"
    elif meta.task == "multilabel" and k == len(classes):
        kind = "probabilities"
        out = f"probabilities (batch, {k}), one per label, independent: {', '.join(classes)}"
    else:  # a task kind of one's own
        kind = "values"
        out = f"outputs {_shape_text(out_shape)} ({meta.task}: {', '.join(classes)})"
    return {
        "input": inp,
        "input_shape": shape,
        "stored_shape": stored,
        "output": out,
        "output_shape": out_shape,
        "output_kind": kind,
        "classes": classes,
        "task": meta.task,
        "kind": meta.kind,
        "scale": float(meta.scale),
        "variable_length": variable_length,
    }


def model_signature(card: dict[str, Any]):
    """An MLflow signature: the input tensor's float32 shape (batch first, -1 = any size) and the
    output tensor, named by what it holds (`probabilities (batch, 2) of classes: a, b`).

    The input tensor stays unnamed: MLflow turns a named input into a dict, which the PyTorch
    flavour refuses, so pyfunc and `mlflow models serve` could no longer call the model. Its words
    (`card["input"]`) are in the model's metadata and description instead."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    f32 = np.dtype(np.float32)
    return ModelSignature(
        inputs=Schema([TensorSpec(f32, (-1, *card["input_shape"]))]),
        outputs=Schema([TensorSpec(f32, (-1, *card["output_shape"]), card["output"])]),
    )


def model_description(card: dict[str, Any], run_id: str, title: str) -> str:
    """Markdown for the LoggedModel's description: what goes in and out, how to load and call."""
    example = ", ".join(str(d) for d in [4, *card["stored_shape"]])
    result = {"probabilities": "probs", "probability": "prob"}.get(card["output_kind"], "values")
    rows_sum = card["output_kind"] == "probabilities" and card["task"] != "multilabel"
    lines = [
        f"**{title}**: raw samples in, {card['output_kind']} out; the normalisation is inside "
        "the model.",
        "",
        f"- **input**: a float32 tensor, {card['input']}",
        f"- **output**: {card['output']}{'; each row sums to 1' if rows_sum else ''}",
    ]
    op = card.get("operating_point") or {}
    if op.get("threshold") is not None:
        t = op["threshold"]
        shown = f"{t:.4g}" if isinstance(t, float) else ", ".join(f"{v:.4g}" for v in t)
        lines.append(
            f"- **decision**: positive when the probability is at least {shown} (rule "
            f"`{op.get('threshold_rule')}`, chosen on the validation split; `model.threshold`)"
        )
    if op.get("temperature", 1.0) != 1.0:
        lines.append(
            f"- **calibrated**: logits divided by the temperature {op['temperature']:.4g} fitted "
            "on the validation split (`model.temperature`)"
        )
    if card["variable_length"]:
        lines.append(
            "- **padded records**: pass their true lengths too, "
            "`model(x, lengths=torch.tensor([...]))`, and the padding is masked"
        )
    if card["kind"] == "signal":
        lines.append(
            "- signals as the processed data holds them: resampling, filtering, windowing and "
            "per-record z-scoring (`data.preprocess`) happen when the data is prepared, not in "
            "the model"
        )
    lines += [
        "",
        "```python",
        "import mlflow, torch",
        f'model = mlflow.pytorch.load_model("runs:/{run_id}/model")  # or "models:/<model_id>"',
        f"{result} = model(torch.zeros({example}))  # a batch of 4 raw samples",
        "```",
        "",
        "`mlflow.pyfunc.load_model(uri).predict(x)` takes the same input as a float32 numpy "
        "array (without lengths).",
    ]
    return "\n".join(lines)


def log_run_outputs(
    run,
    c: dict[str, Any],
    dm: MedDataModule,
    task: MedTask,
    files: list[Path],
    report: dict[str, Path],
    best_path: str,
    predictions: Sequence[Path] = (),
) -> None:
    """Config, overrides, metrics, history, report, kept predictions, best checkpoint and the
    exported model (with the run's operating point)."""
    run.log_artifact(files[1], "config")
    overrides = files[1].parent / "overrides.yaml"
    overrides.write_text("\n".join(f"- {o}" for o in hydra_overrides()) + "\n")
    run.log_artifact(overrides, "config")
    for f in files:
        if f.name != "config.yaml":
            run.log_artifact(f)
    for f in report.values():
        if f.suffix == ".html":  # at the top: MLflow's artifact viewer opens it
            run.log_artifact(f)
        else:
            run.log_artifact(f, "plots" if f.suffix == ".png" else "reports")
    for f in predictions:
        run.log_artifact(f, "predictions")
    if best_path:
        run.log_artifact(Path(best_path), "checkpoints")
    if c.get("log_model", True):
        from importlib.metadata import version  # not `import monai`: ~2 s for its version

        model = task.inference_model().cpu().eval()
        reqs = [
            f"torch=={torch.__version__.split('+')[0]}",
            f"monai=={version('monai')}",
            f"numpy=={np.__version__}",
            *getattr(task.net, "pip_requirements", ()),  # a net's own (MiniRocket: sktime, numba)
        ]
        title = f"medpipe {c['model']['name']} on {task.meta.name} ({task.meta.task})"
        # A task kind whose model does not take the data's samples (a GAN's generator takes
        # noise and a class) gives its own input example, card and description.
        export_card = getattr(task, "export_card", None)
        if export_card is not None:
            example, card, note = export_card(run.run_id, title)
        else:
            example = input_example(dm)
            test = dm.split_arrays("test")
            with torch.no_grad():
                output_shape = tuple(model(torch.from_numpy(example)).shape[1:])
            card = describe_model(task.meta, test.x.dtype, output_shape, test.lengths is not None)
            card["operating_point"] = task.operating_point()
            card["reading"] = reading_of(c["data"])  # how predict reads a new file
            note = model_description(card, run.run_id, title)
        # a net torch.export cannot trace (MiniRocket's numba transform) is pickled instead
        traced = getattr(type(task.net), "exportable", True)
        run.log_model(
            model,
            example,
            reqs,
            signature=model_signature(card),
            metadata={"medpipe": card},
            tags={NOTE_TAG: note},
            **({} if traced else {"serialization_format": "pickle"}),
        )
