"""No import cycle inside device_ops_worker: a registry imports what it
registers, a support module never imports its users.

The graph is built statically with ``ast``, without importing anything. Every
import statement counts, wherever it is: at module top, inside a function (the
loader imports its handlers on first use), or under ``if TYPE_CHECKING``. A
function-local import only delays the dependency; a handler that imports its
own registry back is still a cycle, so both kinds are edges here.

An edge goes to the module an import names: ``from .base import X`` is an
edge to ``handlers.base`` (or to ``handlers.base.X`` when X is a module), not
to the ``handlers`` package that Python also initialises on the way.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "device_ops_worker"
SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src"


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name → file, for every module of `package` under `root`."""
    files: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        # `from .x import y` in a.b.c means a.b.x; in the package a.b itself, a.b.x.
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Each module → the modules of `package` it imports."""
    files = module_files(root, package)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = _imported_names(node, module, is_package)
            if isinstance(node, ast.ImportFrom):
                # `from m import name`: an edge to m.name when that is a module, else to m.
                targets = [n for n in names[1:] if n in files] or names[:1]
            else:
                targets = names
            graph[module].update(target for target in targets if target in files and target != module)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The modules of every strongly connected component of more than one
    module (Tarjan): each is a set of modules that import one another."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _cycle_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle from the component's first module back to it, for the message."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        next_frontier = []
        for node in frontier:
            for target in sorted(graph[node] & members):
                if target == start:
                    return paths[node] + [start]
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    next_frontier.append(target)
        frontier = next_frontier
    return component


def test_the_graph_sees_relative_function_local_and_package_imports() -> None:
    graph = import_graph(SOURCE_ROOT, PACKAGE)
    # A function-local import (the loader imports handlers on first use).
    assert f"{PACKAGE}.handlers.diffusion" in graph[f"{PACKAGE}.handlers.loader"]
    # `from .. import imaging` names a module; `from . import __version__` names the package.
    assert f"{PACKAGE}.imaging" in graph[f"{PACKAGE}.outputs"]
    assert PACKAGE in graph[f"{PACKAGE}.worker_info_service"]
    # Imports of other packages are not edges.
    assert all(target.startswith(PACKAGE) for targets in graph.values() for target in targets)


def test_no_import_cycle_inside_the_worker_package() -> None:
    graph = import_graph(SOURCE_ROOT, PACKAGE)
    cycles = find_cycles(graph)
    described = [f"{', '.join(c)} (e.g. {' → '.join(_cycle_through(graph, c))})" for c in cycles]
    assert cycles == [], "modules that import one another: " + "; ".join(described)
