"""The package is layered: each nbhelpers module imports only modules below it, at module level.

Imports are read with ``ast`` at every nesting level (functions, methods, ``if`` blocks), so a function-local
import that would dodge a cycle at import time is still seen, and refused.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nbhelpers"
LAYOUT = PACKAGE.parent / "docs" / "LAYOUT.md"  # the package layout, bottom to top
ROOT = "nbhelpers"  # node name of the package itself (nbhelpers/__init__.py)


def _module_names() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def _targets(node: ast.Import | ast.ImportFrom, modules: set[str]) -> list[str]:
    """The nbhelpers modules an import statement loads ('nbhelpers' for names of the package itself)."""
    if isinstance(node, ast.Import):
        out = []
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == ROOT:
                out.append(parts[1] if len(parts) > 1 and parts[1] in modules else ROOT)
        return out
    if node.level == 0 and (node.module or "").split(".")[0] != ROOT:
        return []
    parts = (node.module or "").split(".") if node.level == 0 else [ROOT, *filter(None, (node.module or "").split("."))]
    if len(parts) > 1:
        return [parts[1] if parts[1] in modules else ROOT]
    return [alias.name if alias.name in modules else ROOT for alias in node.names]


def read_imports() -> tuple[dict[str, set[str]], list[str]]:
    """(module -> nbhelpers modules it imports, anywhere in the file) and 'module:line' of each nested import."""
    modules = _module_names()
    graph: dict[str, set[str]] = {}
    nested: list[str] = []
    for path in sorted(PACKAGE.glob("*.py")):
        name = ROOT if path.stem == "__init__" else path.stem
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = set()
        scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
        inner = {id(n) for scope in ast.walk(tree) if isinstance(scope, scopes) for n in ast.walk(scope)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = [t for t in _targets(node, modules) if t != name]
                graph[name] |= set(targets)
                if targets and id(node) in inner:
                    nested.append(f"{path.name}:{node.lineno} imports {sorted(targets)} inside a function or class")
    return graph, nested


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def layers(graph: dict[str, set[str]]) -> dict[str, int]:
    """Layer of each module: 0 if it imports no nbhelpers module, else 1 + the highest layer it imports."""
    out: dict[str, int] = {}

    def layer(node: str) -> int:
        if node not in out:
            out[node] = 1 + max((layer(d) for d in graph[node]), default=-1)
        return out[node]

    for node in graph:
        layer(node)
    return out


def test_the_reader_sees_nested_and_relative_imports():
    tree = ast.parse("from nbhelpers import world, __version__\nimport nbhelpers.metrics as m\n"
                     "def f():\n    from .grid import run_grid\n")
    modules = {"world", "metrics", "grid"}
    found = [_targets(n, modules) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert sorted(map(sorted, found)) == [["grid"], ["metrics"], ["nbhelpers", "world"]]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_function_local_package_imports():
    _, nested = read_imports()
    assert not nested, "import these at module level (move the code to the right layer):\n" + "\n".join(nested)


def test_module_graph_has_no_cycle_and_prints_the_layers():
    graph, _ = read_imports()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    by_layer: dict[int, list[str]] = {}
    for module, k in layers(graph).items():
        by_layer.setdefault(k, []).append(module)
    for k in sorted(by_layer):
        print(f"layer {k}: {', '.join(sorted(by_layer[k]))}")
    assert {"world", "paths"} <= set(by_layer[0])
    assert layers(graph)["grid"] > layers(graph)["evaluation"] > layers(graph)["metrics"] > layers(graph)["attacks"]


def test_docs_package_layout_names_every_module():
    text = LAYOUT.read_text() + "\n## end\n"
    match = re.search(r"^## Package layout\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, "docs/LAYOUT.md needs a '## Package layout' section"
    order = re.findall(r"^- `([a-z_]+)`:", match.group(1), flags=re.M)
    missing = sorted(_module_names() - set(order))
    assert not missing, f"docs/LAYOUT.md's Package layout does not describe {missing}"
    graph, _ = read_imports()
    above = {m: order[:i] for i, m in enumerate(order)}
    wrong = {m: sorted(graph[m] - set(above[m]) - {ROOT}) for m in order if graph[m] - set(above[m]) - {ROOT}}
    assert not wrong, f"docs/LAYOUT.md's Package layout lists these modules below what they import: {wrong}"
