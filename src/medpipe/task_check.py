"""Checks that need the prepared data's metadata but no torch: does the model's loss, class weights
and the monitored metric fit the dataset's task? Run right after preparation, before training."""

from __future__ import annotations

from typing import Any

from medpipe.data.processed import DatasetMeta
from medpipe.evaluation.keys import CLASSIFICATION_METRICS, REGRESSION_METRICS, metric_direction

CLASSIFICATION_LOSSES = ("cross_entropy", "bce")
REGRESSION_LOSSES = ("mse", "mae", "huber")


def task_problems(cfg: dict[str, Any], meta: DatasetMeta) -> list[str]:
    model = cfg.get("model") or {}
    loss = model.get("loss", "cross_entropy")
    problems = []
    regression = meta.task == "regression"
    if regression and loss not in REGRESSION_LOSSES:
        problems.append(
            f"model.loss: '{loss}' is a classification loss; {meta.name} is a regression dataset "
            f"(target {meta.classes[0] if meta.classes else '?'}): use "
            f"{', '.join(REGRESSION_LOSSES)}"
        )
    if not regression and loss not in CLASSIFICATION_LOSSES:
        problems.append(
            f"model.loss: '{loss}' is a regression loss; {meta.name} is {meta.task} "
            f"classification: use {', '.join(CLASSIFICATION_LOSSES)}"
        )
    if loss == "bce" and meta.task == "multiclass":
        problems.append(
            f"model.loss: bce needs binary or multilabel data; {meta.name} is multiclass, "
            "use cross_entropy"
        )
    weights = model.get("class_weights")
    if regression and weights is not None:
        problems.append(f"model.class_weights: {meta.name} is a regression dataset; use null")
    elif isinstance(weights, list) and len(weights) != len(meta.classes):
        problems.append(
            f"model.class_weights: {len(weights)} weights for the {len(meta.classes)} "
            f"classes of {meta.name} ({', '.join(meta.classes)})"
        )
    names = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
    monitors = {"monitor": cfg.get("monitor")}
    for name, cb in (cfg.get("callbacks") or {}).items():
        if isinstance(cb, dict) and "monitor" in cb:
            monitors[f"callbacks.{name}.monitor"] = cb["monitor"]
    for key, monitor in monitors.items():
        if not isinstance(monitor, str) or "/" not in monitor:
            continue
        metric = monitor.split("/", 1)[1]
        if metric not in names and not (not regression and metric.startswith("f1_")):
            kind = "regression" if regression else f"{meta.task} classification"
            suggestion = "val/mae with monitor_mode=min" if regression else "val/auroc"
            problems.append(
                f"{key}: '{monitor}' is not a metric of {kind} ({meta.name}); metrics: "
                f"{', '.join(names)}; e.g. {suggestion}"
            )
    if metric_direction(cfg.get("monitor")) == "min" and cfg.get("monitor_mode") == "max":
        problems.append(
            f"monitor_mode: 'max' with monitor '{cfg.get('monitor')}', which is minimised; use min"
        )
    return problems
