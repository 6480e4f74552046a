"""tune-lip's layers: imports only point down (`tune_lip.LAYERS`), and there are no circles.

A module's layer is its package's name, the first name after ``tune_lip.`` (``tune_lip.tune.spec``
is in ``tune``; ``tune_lip.errors`` is its own layer), so a new module is placed as soon as it
exists, and a new package must be added to `tune_lip.LAYERS` (bottom to top) before its first
module passes.

A circle hidden by an import inside a function is still a circle: the two modules cannot be
understood, tested or moved apart. Imports only for type checkers (``if TYPE_CHECKING:``) do not
run and do not count. The graph is read from the source with `ast`, so a new module is checked
as soon as it exists.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tune_lip
from tune_lip import LAYERS

ROOT = Path(__file__).resolve().parents[1]
# The installed package names of the source folders (pyproject.toml's package-dir).
PACKAGES = {"tune_lip": "tune_lip", "tune_lip.analysis": "analysis", "tune_lip.trainables": "trainables",
            "tune_lip.search_spaces": "search_spaces"}


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _runtime_imports(tree: ast.AST) -> list[str]:
    """Modules imported when the code runs (not under ``if TYPE_CHECKING:``)."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for name in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            while name and name not in modules:   # `from pkg.mod import func` -> pkg.mod
                name = name.rpartition(".")[0]
            # A module importing its own package (its __init__) or itself is no edge.
            if name and name != module and not module.startswith(name + "."):
                graph[module].add(name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_guard_sees_a_circle_and_ignores_type_checking_imports():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    code = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\ndef f():\n    import y\n"
    assert _runtime_imports(ast.parse(code)) == ["typing", "typing.TYPE_CHECKING", "y"]


def test_the_graph_covers_every_layer():
    graph = import_graph()
    assert {"tune_lip.cli", "tune_lip.tune.launch", "tune_lip.analysis.lr_scaling", "tune_lip.trainables.base"} <= set(graph)
    assert "tune_lip.analysis.trials" in graph["tune_lip.analysis.plots"]      # a function-level or top import


def test_no_import_circles():
    assert circles(import_graph()) == []


def layer(module: str) -> str | None:
    """``tune_lip.tune.spec`` -> ``tune``; the root package ``tune_lip`` has none."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where the imported module sits in a higher layer."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    return sorted((m, d) for m, deps in graph.items() for d in deps
                  if layer(m) is not None and layer(d) is not None and rank[layer(d)] > rank[layer(m)])


def test_the_guard_sees_an_upward_import():
    assert upward_imports({"tune_lip.nn.sam": {"tune_lip.tune.spec"}, "tune_lip.tune.spec": {"tune_lip.nn.sam"}}) \
        == [("tune_lip.nn.sam", "tune_lip.tune.spec")]


def test_every_module_belongs_to_a_layer():
    unplaced = sorted(m for m in import_graph() if m != "tune_lip" and layer(m) not in LAYERS)
    assert not unplaced, f"{unplaced}: add the package to tune_lip.LAYERS, in its place bottom to top"


def test_imports_only_point_down_the_layers():
    assert upward_imports(import_graph()) == []


def test_no_module_imports_a_moved_name():
    """The old names (`tune_lip._MOVED`) are for pickles and old user code; tune-lip itself
    imports the modules where they live (the guard above would not see an old name)."""
    old = set(tune_lip._MOVED)
    found = []
    for module, path in _modules().items():
        for name in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if any(name == o or name.startswith(o + ".") for o in old):
                found.append((module, name))
    assert found == []
