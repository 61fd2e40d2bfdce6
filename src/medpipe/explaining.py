"""Explain a saved checkpoint (`python -m medpipe.explain`): attribution figures over a split of
its data, or over samples of your own, and, where the data knows its lesions, the pointing game
(the methods and checks live in medpipe.evaluation.explain)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from medpipe.data.processed import DatasetMeta, Split, pooled_split, read_split
from medpipe.errors import ConfigError, DataError
from medpipe.evaluating import restore
from medpipe.evaluation.explain import explain_run, predict_probabilities, resolve_method
from medpipe.outputs import print_metrics, write_json


def load_inputs(path: str | Path, meta: DatasetMeta) -> np.ndarray:
    """Samples (N, C, ...) from a .npy file, checked against the checkpoint's sample shape."""
    expected = tuple(int(v) for v in meta.sample_shape)
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"inputs: {path}: not a readable .npy array ({err})") from None
    if x.ndim != 1 + len(expected) or tuple(x.shape[1:]) != expected or len(x) == 0:
        raise DataError(
            f"inputs: {path}: samples of shape {tuple(x.shape)}; the checkpoint expects "
            f"(N, {', '.join(map(str, expected))}) ({meta.kind}, channels first, stored format)"
        )
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"inputs: {path}: dtype {x.dtype} is not a real number type")
    return x


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device: {name!r} is not a torch device ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} asked for, but no CUDA device is available here")
    return device


def _threshold(c: dict[str, Any], task) -> Any:
    """The configured threshold, else the checkpoint's operating point, else 0.5."""
    if c.get("threshold") is not None:
        return float(c["threshold"])
    stored = getattr(task, "threshold", None)
    if isinstance(stored, torch.Tensor) and stored.numel():
        return stored.detach().cpu().numpy()
    return 0.5


def explain(c: dict[str, Any]) -> dict[str, float]:
    """Explain the checkpoint `c["ckpt_path"]` (a resolved conf/explain.yaml): write the figures
    and, with metrics to report, explanations.json under `c["output_dir"]`; return the metrics."""
    run_cfg, folder, folds, task = restore(c)
    meta = task.meta
    if meta.task == "regression":
        raise DataError(
            f"ckpt_path: {c['ckpt_path']}: {meta.name} is a regression task; "
            "explanations need classes (binary, multiclass or multilabel data)"
        )
    method = str(c.get("method") or "auto")
    try:
        resolve_method(task, method)  # before any work: a method the net cannot take
    except ValueError as err:
        raise ConfigError(str(err)) from None
    task.to(_device(str(c.get("device") or "cpu"))).eval()
    if c.get("inputs"):
        split = Split(load_inputs(c["inputs"], meta), None)  # no labels: no right or wrong
        what, prefix = f"inputs {c['inputs']}", "inputs"
    else:
        name = c.get("split") or "test"
        if folds is not None:  # a fold's checkpoint: that fold's rows of the pooled data
            split = pooled_split(folder).take(folds[name])
        else:
            split = read_split(folder, name, mmap=False)
        what, prefix = f"{name} split", name
    out_dir = Path(c["output_dir"])
    probs = predict_probabilities(task, split.x, split.lengths)
    metrics, paths = explain_run(
        task,
        split,
        probs,
        out_dir,
        threshold=_threshold(c, task),
        n=int(c.get("n") or 16),
        method=method,
        max_samples=int(c.get("max_samples") or 256),
        seed=int(c.get("seed") or 0),
        prefix=prefix,
    )
    if metrics:
        write_json(out_dir / "explanations.json", metrics)
        print_metrics(f"explanations of {c['ckpt_path']} ({meta.name}, {what}):", metrics)
    for path in paths.values():
        print(f"figure: {path}")
    print(f"outputs: {out_dir}")
    return metrics
