"""The task-kind registry: everything about a kind of task in one entry, read by the config check,
`build_task`, the run's tags (which `compare` and the sweep summary read), reports and exports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medpipe.registry import Registry, locate
from medpipe.targets import RefusedTarget


@dataclass(frozen=True)
class TaskKind:
    """name: `task_kind=<name>` (or chosen by `auto` from the data's task).
    module: the LightningModule class (a MedTask subclass) with `Options`, the task's settings
        read from the `model` config section (loss, class weights, ...), `num_outputs(meta,
        options)`, `option_problems(meta, options)`, optionally `run_problems(c)` (what the rest
        of the run's config cannot be for this kind), `evaluate_outputs(...)` (its test metrics,
        figures and kept predictions), `operating_point()` and `inference_model()`.
    data_tasks: the processed data's tasks it learns (binary, multiclass, multilabel, regression).
    sample_kinds: the data kinds it reads (image, volume, signal, frames).
    metrics: metric names logged per split as `{split}/{name}`; `metric_prefixes` names families
        such as per-class `f1_<class>`.
    main_metrics: the metrics `compare` and sweep summaries show first (val/ and test/ of each;
        a full key such as `gan/fid` as it is).
    monitor, mode: the default checkpoint metric (monitor=auto) and its direction.
    minimised: metrics where lower is better (the rule monitor_mode=auto and the checks follow).
    auto: whether task_kind=auto may choose it from the data's task.
    """

    name: str
    module: type
    data_tasks: tuple[str, ...]
    metrics: tuple[str, ...]
    main_metrics: tuple[str, ...]
    monitor: str
    minimised: tuple[str, ...] = ("loss",)
    metric_prefixes: tuple[str, ...] = ()
    sample_kinds: tuple[str, ...] = ("image", "volume", "signal", "frames")
    auto: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return self.direction(self.monitor)

    def direction(self, monitor: str) -> str:
        """'min' or 'max' for a `{split}/{metric}` key."""
        return "min" if monitor.split("/", 1)[-1] in self.minimised else "max"

    def knows(self, metric: str) -> bool:
        return metric in self.metrics or metric.startswith(self.metric_prefixes or ("\0",))

    @property
    def options(self) -> type:
        return self.module.Options  # type: ignore[attr-defined]

    def main_keys(self) -> list[str]:
        """`val/<m>` and `test/<m>` of each main metric; a main metric that names its prefix
        (`gan/fid`) is taken as it is."""
        keys = [f"val/{m}" for m in self.main_metrics if "/" not in m]
        return keys + [m if "/" in m else f"test/{m}" for m in self.main_metrics]


TASK_KINDS: Registry[TaskKind] = Registry("task kind", "medpipe.tasks")


def register_task_kind(kind: TaskKind) -> TaskKind:
    return TASK_KINDS.register(kind.name, kind)


def choose_kind(requested: str, data_task: str) -> tuple[TaskKind | None, str | None]:
    """The kind for `task_kind=<requested>` on data whose task is `data_task`."""
    if requested in (None, "auto"):
        fits = [k for _, k in TASK_KINDS.items() if k.auto and data_task in k.data_tasks]
        if len(fits) == 1:
            return fits[0], None
        return None, (
            f"task_kind: auto finds {len(fits)} task kinds for {data_task} data "
            f"({', '.join(k.name for k in fits) or 'none'}); name one of {', '.join(TASK_KINDS.names())}"
        )
    kind = TASK_KINDS.get(requested)
    if kind is None and "." in str(requested):  # a kind in your own module: my_tasks.FOCAL
        try:
            kind = locate(str(requested))
        except RefusedTarget as err:
            return None, f"task_kind: {err}"
        except (ImportError, AttributeError) as err:
            return None, f"task_kind: cannot import '{requested}' ({type(err).__name__}: {err})"
        if not isinstance(kind, TaskKind) or TASK_KINDS.get(kind.name) is not kind:
            return None, f"task_kind: '{requested}' is not a registered TaskKind"
    if kind is None:
        return None, TASK_KINDS.unknown("task_kind", requested)
    if data_task not in kind.data_tasks:
        return None, (
            f"task_kind: {kind.name} learns {', '.join(kind.data_tasks)} data, not {data_task} data"
        )
    return kind, None
