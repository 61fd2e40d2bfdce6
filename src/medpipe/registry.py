"""Registries: one table per pluggable axis (source, net, task kind), filled by the modules that
define the entries, and the "did you mean" rule every unknown name or key is reported with."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest known name, else ''."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def import_submodules(package: str) -> None:
    """Import every module of `package`: each registers its own entries (nothing lists them)."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__, f"{package}."):
        importlib.import_module(info.name)


def locate(target: str) -> Any:
    """The object at import path `target` (module.attr[.attr...]); ImportError/AttributeError.
    A path outside the allow-list raises RefusedTarget, an ImportError, before anything is
    imported, or when it leads out of the list (medpipe.targets.resolve)."""
    from medpipe.targets import resolve

    return resolve(target)


class Registry(Generic[T]):
    """name -> entry. `what` names the axis in errors ("net", "data source", "task kind")."""

    def __init__(self, what: str, package: str | None = None):
        self.what = what
        self.package = package  # imported on first lookup, so its modules register themselves
        self._entries: dict[str, T] = {}
        self._loaded = package is None

    def register(self, name: str, entry: T) -> T:
        old = self._entries.get(name)
        if old is not None and old is not entry:
            raise ValueError(f"{self.what} '{name}' is registered twice ({old!r} and {entry!r})")
        self._entries[name] = entry
        return entry

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            import_submodules(self.package)  # type: ignore[arg-type]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._entries.items())

    def get(self, name: str) -> T | None:
        self._load()
        return self._entries.get(name)

    def unknown(self, key: str, name: object) -> str:
        """The one-line problem for a name that is not registered."""
        return (
            f"{key}: unknown {self.what} '{name}'{did_you_mean(str(name), self.names())}; "
            f"known: {', '.join(self.names())}"
        )
