"""The checks that need the prepared data's metadata and the registries' torch-side entries: the
task kind for the data, its options (loss, class weights, ...), the net's options, the monitored
metric, and the arguments of the classes the config instantiates (optimizer, Trainer, callbacks).

Run once per run, right after the data is prepared and before anything is trained or tracked;
`check_run` returns the config with `monitor: auto` and `monitor_mode: auto` filled in.
"""

from __future__ import annotations

import inspect
from typing import Any

from medpipe.config import pydantic_problems
from medpipe.data.processed import DatasetMeta
from medpipe.errors import ConfigError
from medpipe.registry import did_you_mean, locate
from medpipe.targets import RefusedTarget, ensure_allowed
from medpipe.tasks.kinds import TASK_KINDS, TaskKind, choose_kind

MODEL_KEYS = ("name", "accepts", "net")  # the rest of `model` is the task kind's options
SET_BY_MEDPIPE = {
    "trainer": ("callbacks", "logger", "enable_progress_bar"),
    "optimizer": ("params",),
}


def task_options(model: dict[str, Any], kind: TaskKind) -> dict[str, Any]:
    """The keys of the `model` section that are `kind`'s options."""
    return {k: v for k, v in model.items() if k in kind.options.model_fields}


def _task_option_problems(model: dict[str, Any], kind: TaskKind, meta: DatasetMeta) -> list[str]:
    own = kind.options.model_fields
    others = {
        name: (other, field)
        for _, other in TASK_KINDS.items()
        if other is not kind
        for name, field in other.options.model_fields.items()
        if name not in own
    }
    problems = []
    for key, value in model.items():
        if key in MODEL_KEYS or key in own:
            continue
        if key in others:
            other, field = others[key]
            if value is not None and value != field.default:
                problems.append(
                    f"model.{key}: an option of task kind {other.name}; {meta.name} is "
                    f"{meta.task} data, learnt by task kind {kind.name} (leave it at "
                    f"{field.default!r})"
                )
            continue
        known = [*MODEL_KEYS, *own]
        problems.append(
            f"model.{key}: unknown key{did_you_mean(key, known)}; known: {', '.join(known)}"
        )
    options = task_options(model, kind)
    found = pydantic_problems("model", kind.options, options)
    if found:
        data = f"{meta.name} is {meta.task} data, learnt by task kind {kind.name}"
        for line in found:
            key = line.split(":", 1)[0]
            value = options.get(key.removeprefix("model."))
            field = kind.options.model_fields.get(key.removeprefix("model."))
            allowed = getattr(field.annotation, "__args__", ()) if field else ()
            if allowed and all(isinstance(a, str) for a in allowed):  # a choice: say which
                problems.append(
                    f"{key}: '{value}' is not a {key.split('.')[-1]} of task kind {kind.name} "
                    f"({data}); use {', '.join(allowed)}"
                )
            else:
                problems.append(f"{line} ({data})")
        return problems
    return problems + kind.module.option_problems(meta, kind.options.model_validate(options))


def net_problems(net: dict[str, Any]) -> list[str]:
    from medpipe.models.nets.registry import net_class

    cls, problem = net_class(net.get("_target_"))
    if cls is None:
        return [problem] if problem else []
    options = {k: v for k, v in net.items() if k != "_target_"}
    return pydantic_problems("model.net", cls.Options, options)  # type: ignore[attr-defined]


def signature_problems(key: str, target: Any, given: dict[str, Any]) -> list[str]:
    """Keys of `given` that the class at import path `target` does not take."""
    if not isinstance(target, str):
        return []
    try:
        cls = locate(target)
        params = inspect.signature(cls).parameters
    except RefusedTarget as err:
        return [f"{key}._target_: {err}"]
    except (ImportError, AttributeError, TypeError, ValueError) as err:
        return [f"{key}._target_: cannot use '{target}' ({type(err).__name__}: {err})"]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    reserved = SET_BY_MEDPIPE.get(key, ())
    known = [n for n in params if n not in reserved and n != "self"]
    problems = []
    for name in given:
        if name in ("_target_", "_partial_"):
            continue
        if name in reserved:
            problems.append(f"{key}.{name}: set by medpipe; remove it from the config")
        elif name not in params:
            problems.append(
                f"{key}.{name}: unknown key: {target} takes no argument '{name}'"
                f"{did_you_mean(name, known)}"
            )
    return problems


def base_problems(key: str, target: Any, base: type) -> list[str]:
    """`key._target_` must name a subclass of `base` (the allow-list of packages has run already;
    this keeps e.g. a function of an allowed package out of the optimizer's place)."""
    try:
        cls = locate(target)
    except (ImportError, AttributeError):
        return []  # signature_problems says why
    if isinstance(cls, type) and issubclass(cls, base):
        return []
    return [f"{key}._target_: '{target}' is not a {base.__module__}.{base.__qualname__} (subclass)"]


def resolve_monitor(c: dict[str, Any], kind: TaskKind) -> list[str]:
    """Fill monitor/monitor_mode `auto` (also in callbacks) from the task kind; check the names."""
    if c.get("monitor") in (None, "auto"):
        c["monitor"] = kind.monitor
    if c.get("monitor_mode") in (None, "auto"):
        c["monitor_mode"] = kind.direction(c["monitor"])
    monitors = {"monitor": (c["monitor"], c["monitor_mode"])}
    for name, cb in (c.get("callbacks") or {}).items():
        if not isinstance(cb, dict):
            continue
        if cb.get("monitor") == "auto":
            cb["monitor"] = c["monitor"]
        if cb.get("mode") == "auto":
            cb["mode"] = kind.direction(str(cb.get("monitor", c["monitor"])))
        if "monitor" in cb and (cb["monitor"], cb.get("mode")) != monitors["monitor"]:
            monitors[f"callbacks.{name}.monitor"] = (cb["monitor"], cb.get("mode"))
    problems = []
    for key, (monitor, mode) in monitors.items():
        split, _, metric = str(monitor).partition("/")
        if split not in ("val", "train") or not kind.knows(metric):
            names = ", ".join(kind.metrics) + "".join(f", {p}<class>" for p in kind.metric_prefixes)
            problems.append(
                f"{key}: '{monitor}' is not a metric of task kind {kind.name}; use val/<metric> "
                f"(or train/<metric>) with <metric> one of {names}; e.g. {kind.monitor}"
            )
        elif mode is not None and mode != kind.direction(str(monitor)):
            mode_key = "monitor_mode" if key == "monitor" else key.replace(".monitor", ".mode")
            problems.append(
                f"{mode_key}: '{mode}' with monitor '{monitor}', which is "
                f"{'minimised' if kind.direction(str(monitor)) == 'min' else 'maximised'}; use "
                f"{kind.direction(str(monitor))} (or auto)"
            )
    return problems


def check_run(c: dict[str, Any], meta: DatasetMeta) -> tuple[dict[str, Any], TaskKind]:
    """(the config with monitor settings filled in, the task kind); ConfigError on problems."""
    ensure_allowed(c)  # before any `_target_` is located (a config that skipped validation too)
    kind, problem = choose_kind(c.get("task_kind", "auto"), meta.task)
    if kind is None:
        raise ConfigError(problem or "task_kind: none fits")
    problems = []
    if meta.kind not in kind.sample_kinds:
        problems.append(
            f"task_kind: {kind.name} reads {', '.join(kind.sample_kinds)} data, not {meta.kind}"
        )
    model = c.get("model") or {}
    problems += _task_option_problems(model, kind, meta)
    problems += net_problems(model.get("net") or {})
    problems += resolve_monitor(c, kind)
    run_problems = getattr(kind.module, "run_problems", None)
    if run_problems is not None:  # what the kind cannot do with the rest of the config
        problems += run_problems(c)
    import lightning.pytorch as L
    import torch

    bases = {"optimizer": torch.optim.Optimizer, "trainer": L.Trainer}
    for section in ("optimizer", "trainer"):
        sec = c.get(section) or {}
        found = signature_problems(section, sec.get("_target_"), sec)
        problems += found or base_problems(section, sec.get("_target_"), bases[section])
    for name, cb in (c.get("callbacks") or {}).items():
        if isinstance(cb, dict) and "_target_" in cb:
            found = signature_problems(f"callbacks.{name}", cb["_target_"], cb)
            problems += found or base_problems(f"callbacks.{name}", cb["_target_"], L.Callback)
    if problems:
        raise ConfigError(problems)
    return c, kind
