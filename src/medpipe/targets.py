"""Which import paths a config may name: every `_target_` (anywhere in the config), `data.source`
and `task_kind` given as import paths. A config is input like any other file: a shared experiment
YAML, a sweep or the config saved inside a checkpoint must not be able to run `os.system`. So a
path outside the allowed packages is refused before anything is imported or instantiated.

Allowed: the packages medpipe builds from (ALLOWED_PACKAGES) plus the running command's
`allowed_targets` (your own modules, e.g. a net registered from `my_nets`). Never allowed, even by
`allowed_targets`: Python's standard library (`os`, `subprocess`, `builtins`, ...) and the parts of
the allowed packages that load or run code (DENIED).
"""

from __future__ import annotations

import importlib
import re
import sys
import types
from collections.abc import Iterable
from typing import Any

ALLOWED_PACKAGES = (
    "medpipe",
    "torch",
    "lightning",
    "pytorch_lightning",
    "torchmetrics",
    "monai",
    "albumentations",
)
# Code loaders and evaluators inside the allowed packages: a config has no business naming them.
DENIED = (
    "torch.hub",
    "torch.load",
    "torch.serialization",
    "torch.package",
    "torch.jit.load",
    "torch.export.load",
    "torch.utils.cpp_extension",
    "torch.ops.load_library",
    "torch.classes.load_library",
    "torch.distributed.rpc",
    "monai.bundle",
    "monai.apps",
    "lightning.pytorch.cli",
    "lightning.fabric.cli",
    "lightning.pytorch.core.saving",
    "pytorch_lightning.cli",
    "pytorch_lightning.core.saving",
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
HOW_TO_EXTEND = "add its package with allowed_targets=[my_package] (README: Hostile input)"

_extra: tuple[str, ...] = ()  # the running command's allowed_targets (set by config.validate)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def extension_problems(extra: Any, key: str = "allowed_targets") -> list[str]:
    """One line per `allowed_targets` entry that cannot be added: not a module path, a module of
    Python's standard library, or one of the denied code loaders."""
    if extra is None:
        return []
    if not isinstance(extra, list | tuple):
        return [f"{key}: a list of module prefixes, e.g. [my_nets] (got {extra!r})"]
    problems = []
    for i, entry in enumerate(extra):
        name = entry if isinstance(entry, str) else ""
        if not _NAME.match(name):
            problems.append(
                f"{key}[{i}]: '{entry}' is not a module path (e.g. my_nets, lab.models)"
            )
        elif name.split(".")[0] in sys.stdlib_module_names:
            problems.append(
                f"{key}[{i}]: '{name}' is part of Python's standard library; only your own "
                "packages can be allowed"
            )
        elif any(_under(name, d) or _under(d, name) for d in DENIED):
            problems.append(f"{key}[{i}]: '{name}' holds code loaders medpipe never runs")
    return problems


def set_allowed(extra: Iterable[str] | None) -> None:
    """Make `extra` (a validated `allowed_targets`) the running command's extension."""
    global _extra
    _extra = tuple(str(e) for e in extra or ())


def allowed(extra: Iterable[str] | None = None) -> tuple[str, ...]:
    """The allowed module prefixes: the built-in packages, then `extra` (default: the running
    command's `allowed_targets`)."""
    return (*ALLOWED_PACKAGES, *(_extra if extra is None else tuple(extra)))


def reason(target: Any, extra: Iterable[str] | None = None) -> str | None:
    """Why `target` may not be imported (the line without its key), else None. Nothing is
    imported."""
    prefixes = allowed(extra)
    listed = ", ".join(prefixes)
    if not isinstance(target, str) or not _NAME.match(target):
        return f"{target!r} is not an import path (package.module.Name)"
    if any(_under(target, d) for d in DENIED):
        return (
            f"'{target}' refused: it loads or runs code, which a config may never name "
            f"(allowed packages: {listed})"
        )
    if target.split(".")[0] in sys.stdlib_module_names or not any(
        _under(target, p) for p in prefixes
    ):
        return (
            f"'{target}' refused: outside the allowed packages ({listed}); to use a module of "
            f"your own, {HOW_TO_EXTEND}"
        )
    return None


def refusal(key: str, target: Any, extra: Iterable[str] | None = None) -> str | None:
    """The one-line problem naming `key` when `target` may not be imported, else None."""
    why = reason(target, extra)
    return f"{key}: {why}" if why else None


def _named(c: Any, skip: tuple[str, ...], at: str) -> list[tuple[str, Any]]:
    """(key, value) of every `_target_` in `c`, and of `data.source` and `task_kind` when they
    are import paths (`at` empty: `c` is a whole config)."""
    found: list[tuple[str, Any]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                key = f"{path}.{k}" if path else str(k)
                if not path and k in skip:
                    continue
                if k == "_target_":
                    found.append((key, v))
                else:
                    walk(v, key)
        elif isinstance(node, list | tuple):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(c, at)
    if isinstance(c, dict) and not at:
        data = c.get("data") if isinstance(c.get("data"), dict) else {}
        for key, value in (("data.source", data.get("source")), ("task_kind", c.get("task_kind"))):
            if isinstance(value, str) and "." in value:
                found.append((key, value))
    return found


def target_problems(
    c: Any, extra: Iterable[str] | None = None, skip: tuple[str, ...] = ("hydra",), at: str = ""
) -> list[str]:
    """One line per `_target_` anywhere in config `c` (nested mappings and lists) that names an
    import path outside the allow-list, plus `data.source` and `task_kind` when they are import
    paths. Reads the names only: nothing is imported (config validation runs before torch).
    `skip`: top-level keys not read by medpipe (Hydra's own settings); `at`: the key of `c` when
    it is a part of a config (e.g. `augmentation.train[0]`)."""
    return [p for key, value in _named(c, skip, at) if (p := refusal(key, value, extra))]


def ensure_allowed(c: Any, at: str = "") -> None:
    """Raise ConfigError (one line per key) when `c` names a path outside the allow-list, by its
    name or by where it leads (`torch.x.os.system` names torch but reaches the `os` that a torch
    module imported): the guard right before a config, or a part `at` of one, is built. It
    imports the allowed modules the names pass through, nothing else."""
    problems = target_problems(c, at=at)
    said = {line.split(":", 1)[0] for line in problems}
    for key, value in _named(c, ("hydra",), at):
        if key in said:
            continue
        try:
            resolve(value)
        except RefusedTarget as err:
            problems.append(f"{key}: {err}")
        except Exception:  # noqa: BLE001 - a path that does not exist: its builder says so
            pass
    if problems:
        from medpipe.errors import ConfigError

        raise ConfigError(problems)


def check(target: Any) -> None:
    """Raise RefusedTarget (an ImportError) for a path outside the running command's allow-list,
    by its name alone (nothing is imported)."""
    if why := reason(target):
        raise RefusedTarget(why)


def _check_reached(target: str, obj: Any) -> None:
    """RefusedTarget when `obj`, reached on the way along `target`, is a module outside the list
    or an object defined outside it (a function or class a module of the list imported)."""
    where = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    if isinstance(where, str) and reason(where) is not None:
        raise RefusedTarget(
            f"'{target}' refused: it leads to {where}, outside the allowed packages "
            f"({', '.join(allowed())}) or one of their code loaders"
        )


def resolve(target: Any) -> Any:
    """The object at import path `target` (module.attr[.attr...]), reached through allowed
    modules only. RefusedTarget (an ImportError) for a name outside the allow-list, before
    anything is imported, or for a path that leads out of it; ImportError or AttributeError for
    one that does not exist. medpipe.registry.locate is this."""
    check(target)
    parts = str(target).split(".")
    for i in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:i])
        try:
            obj: Any = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):
                continue
            raise
        for attr in parts[i:]:
            obj = getattr(obj, attr)
            _check_reached(str(target), obj)
        return obj
    raise ImportError(f"no module in '{target}'")


class RefusedTarget(ImportError):
    """An import path outside the allow-list (medpipe.targets)."""
