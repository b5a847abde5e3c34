"""No import cycles among llmblend's modules.

Every module under src/llmblend is parsed with ``ast`` and every ``import`` of an llmblend module
counts as an edge: at module level, inside functions and methods (a function-level import that
dodges a cycle at import time is still a cycle in the design), and under ``if TYPE_CHECKING:``
(type-only imports count too: a module that names another's types depends on it; a Protocol
breaks such a loop, as :class:`llmblend.rank.onnx_runtime.ExportableRanker` does). Parent packages
are not edges: ``import llmblend.rank.hf`` runs ``llmblend/__init__.py`` first, but the module
imported is ``llmblend.rank.hf``. Plain text naming a module (the ``"module:Class"`` strings of the
registries) is not an import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "llmblend"
#: Modules left out of the check while someone else reworks them: none. Add a module here (with the
#: reason) only to land a change that cannot fix its cycle yet, and remove it as soon as it can.
EXCLUDED: frozenset[str] = frozenset()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((SRC / PACKAGE).rglob("*.py"))}


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The llmblend modules that ``name`` (at ``path``) imports, anywhere in the file."""

    def known(dotted: str) -> str | None:  # the longest prefix that is a module of the package
        parts = dotted.split(".")
        while parts:
            if ".".join(parts) in modules:
                return ".".join(parts)
            parts.pop()
        return None

    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # `from llmblend.rank import hf` imports the module llmblend.rank.hf
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            ]
        else:
            continue
        found |= {module for t in targets if t.split(".")[0] == PACKAGE and (module := known(t))}
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    return {name: edges - EXCLUDED for name, edges in graph.items() if name not in EXCLUDED}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def one_loop(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A concrete loop through the component's first module: ``[a, b, ..., a]``."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for other in sorted(graph[node] & members):
            if other == start:
                return [*paths[node], start]
            if other not in paths:
                paths[other] = [*paths[node], other]
                frontier.append(other)
    return component


def test_the_parser_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    modules = {
        "llmblend.a": tmp_path / "a.py",
        "llmblend.b": tmp_path / "b.py",
        "llmblend.c": tmp_path / "c.py",
    }
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from llmblend.b import B\n"
        "def f():\n    from llmblend import c\n    import json\n"
    )
    modules["llmblend.a"].write_text(source)
    assert imported_modules("llmblend.a", modules["llmblend.a"], modules) == {"llmblend.b", "llmblend.c"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_graph_covers_the_package() -> None:
    graph = import_graph()
    assert "llmblend.rank.onnx_runtime" in graph["llmblend.rank.pairranker"]
    assert "llmblend.rank.hf" in graph["llmblend.rank.compact"]


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)
    if found:
        loops = "\n".join(" -> ".join(one_loop(graph, component)) for component in found)
        pytest.fail(
            f"import cycles among llmblend modules (move the shared part to a module both import):\n{loops}"
        )
