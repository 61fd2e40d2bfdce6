"""No import cycles between medpipe's modules.

Every module under src/medpipe is parsed with `ast` (nothing is imported) and every import
statement in it counts, at module level and inside functions alike: a function-level import only
postpones a cycle, it does not remove it. `import a.b.c` and `from a.b import c` are an edge to the
module `a.b.c` when that is a module or package of src/medpipe, else (`c` is a name) to `a.b`;
relative imports are resolved. Only explicit import statements are edges: importing `a.b.c` runs
the `__init__` of `a` and `a.b` too, but that adds no edge to them, so a package whose `__init__`
imports its submodules is no cycle with them. Imports under `if TYPE_CHECKING:` never run and are
left out. The cycles are the strongly connected components of that graph (Tarjan).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module and package (its __init__.py) of `package`."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except in the body of `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """`name` if it is one of the modules, else its longest dotted prefix that is, else None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


def imports_of(name: str, modules: Mapping[str, Path]) -> dict[str, int]:
    """The modules (of `modules`) that module `name` imports, each with its first line number."""
    path = modules[name]
    # the package that relative imports start from: the module's own one, or itself for __init__
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: dict[str, int] = {}
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            targets = [_known(alias.name, modules) for alias in node.names]
        else:
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else _known(base, modules))
        for target in targets:
            if target is not None and target != name:
                out.setdefault(target, node.lineno)
    return out


def import_graph(src: Path = SRC, package: str = "medpipe") -> dict[str, dict[str, int]]:
    """Module -> {imported module: line}, for the modules of `package` under `src`."""
    modules = module_files(src, package)
    return {name: imports_of(name, modules) for name in modules}


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted, in the order
    of their first module. A self-import is no cycle here."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def describe(graph: Mapping[str, Mapping[str, int]], found: list[list[str]]) -> str:
    lines = [f"{len(found)} import cycle(s) between medpipe modules:"]
    for component in found:
        lines.append("  " + " <-> ".join(component))
        members = set(component)
        for module in component:
            for target, line in sorted(graph[module].items()):
                if target in members:
                    lines.append(f"    {module} (line {line}) imports {target}")
    return "\n".join(lines)


def test_medpipe_has_no_import_cycles():
    graph = import_graph()
    assert "medpipe.tracking.store" in graph and "medpipe" in graph
    found = cycles(graph)
    assert not found, describe(graph, found)


def test_cycle_finder_on_a_synthetic_graph():
    graph = {
        "a": ["b"],
        "b": ["c", "d"],
        "c": ["a"],  # a -> b -> c -> a
        "d": ["e"],
        "e": ["d", "e"],  # d <-> e; e's self-import is no cycle of its own
        "f": ["a", "g"],  # f and g only lead into cycles
        "g": [],
        "h": ["h"],
    }
    assert cycles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert cycles({"x": ["y"], "y": ["z"]}) == []


def test_import_graph_resolves_relative_and_function_level_imports(tmp_path):
    files = {
        "pkg/__init__.py": "from pkg import light\nfrom . import sub\n",
        "pkg/light.py": "import os\nfrom os import path\n",
        "pkg/heavy.py": (
            "from typing import TYPE_CHECKING\n"
            "from pkg.light import CONSTANT\n"
            "if TYPE_CHECKING:\n"
            "    from pkg.sub.other import Thing\n"
            "def f():\n"
            "    from . import light\n"
            "    import pkg.sub.leaf as leaf\n"
        ),
        "pkg/sub/__init__.py": "from . import leaf, other\n",
        "pkg/sub/leaf.py": "from ..light import X\n\ndef g():\n    from .. import heavy\n",
        "pkg/sub/other.py": "from pkg.sub.leaf import NAME\nimport pkg.light\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, "pkg")
    assert {k: sorted(v) for k, v in graph.items()} == {
        "pkg": ["pkg.light", "pkg.sub"],
        "pkg.heavy": ["pkg.light", "pkg.sub.leaf"],  # not TYPE_CHECKING's pkg.sub.other
        "pkg.light": [],
        "pkg.sub": ["pkg.sub.leaf", "pkg.sub.other"],
        "pkg.sub.leaf": ["pkg.heavy", "pkg.light"],
        "pkg.sub.other": ["pkg.light", "pkg.sub.leaf"],  # no edge to pkg or pkg.sub
    }
    assert graph["pkg.heavy"]["pkg.sub.leaf"] == 7 and graph["pkg.sub.leaf"]["pkg.heavy"] == 4
    # The packages' __init__ files import their submodules, which import only siblings: no cycle.
    # heavy <-> leaf is one, though both sides import inside functions.
    found = cycles(graph)
    assert found == [["pkg.heavy", "pkg.sub.leaf"]]
    assert describe(graph, found).splitlines() == [
        "1 import cycle(s) between medpipe modules:",
        "  pkg.heavy <-> pkg.sub.leaf",
        "    pkg.heavy (line 7) imports pkg.sub.leaf",
        "    pkg.sub.leaf (line 4) imports pkg.heavy",
    ]
