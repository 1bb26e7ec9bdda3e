"""Package structure: no import cycle among medseg modules (type-only imports included), packages depend
downwards only, modules and functions stay small. An independent graph (grimp + networkx) must agree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medseg"
BOTTOM = ("losses", "metrics", "transforms", "utils")  # pure computation: torch/numpy/scipy/monai only
MAX_LINES = 400
MAX_FUNCTION_LINES = 80  # docstring included
# Rank of each room: a package may import only packages of a lower rank (rooms of equal rank never meet).
RANKS = {
    "medseg": 0, "errors": 0,
    "utils": 1,
    "transforms": 2, "metrics": 2,
    "losses": 3,
    "io": 4,
    "data": 5,
    "plan": 6,
    "preprocessing": 7, "handlers": 7,
    "training": 8, "inference": 8,
    "evaluation": 9,
    "study": 10, "bundle": 10,
    "cli": 11,
}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every medseg module ``path`` imports, at any depth: function-level and ``TYPE_CHECKING`` imports count too."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import submodule`` imports the submodule; ``from pkg import name`` the package
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("medseg"):
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        deps = _imports(path, modules) - {name}
        # a module importing its own package's __init__ for a sibling is an import of that sibling
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_medseg_modules():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("layer", BOTTOM)
def test_bottom_layer_imports_no_engine_tracking_or_cli(layer):
    bad = {}
    for path in (PACKAGE / layer).rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        hits = sorted(n for n in names if n.split(".")[0] in ("ignite", "mlflow")
                      or n.startswith(("medseg.cli", "medseg.training", "medseg.inference", "medseg.evaluation",
                                     "medseg.study", "medseg.handlers", "medseg.bundle")))
        if hits:
            bad[str(path.relative_to(PACKAGE))] = hits
    assert bad == {}


def test_modules_stay_small():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_every_package_says_what_it_is():
    missing = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("__init__.py") if not ast.get_docstring(
        ast.parse(p.read_text(encoding="utf-8")))]
    assert missing == []


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a package into one of the same or a higher rank (another room)."""
    bad = []
    for module, deps in graph.items():
        for dep in deps:
            src, dst = _package(module), _package(dep)
            if src != dst and RANKS[dst] >= RANKS[src]:
                bad.append(f"{module} -> {dep} ({src} {RANKS[src]} may not import {dst} {RANKS[dst]})")
    return sorted(bad)


def test_every_package_has_a_rank():
    assert {_package(m) for m in _graph()} <= set(RANKS)


def test_layer_check_finds_an_upward_import():
    assert _upward({"medseg.data.datalist": {"medseg.training.train"}}) == [
        "medseg.data.datalist -> medseg.training.train (data 5 may not import training 8)"]
    assert _upward({"medseg.training.train": {"medseg.inference.predict"}})  # equal rank: rooms never meet
    assert _upward({"medseg.training.train": {"medseg.data.datalist"}}) == []


def test_packages_import_downwards_only():
    assert _upward(_graph()) == []


def _grimp_graph() -> dict[str, set[str]]:
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("medseg", cache_dir=None)
    return {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}


def test_independent_import_graph_agrees():
    """grimp builds the graph its own way; both graphs hold the same edges and networkx finds no cycle in it."""
    nx = pytest.importorskip("networkx")
    theirs = _grimp_graph()
    ours = _graph()
    their_edges = {(a, b) for a, deps in theirs.items() for b in deps if not a.startswith(b + ".")}
    our_edges = {(a, b) for a, deps in ours.items() for b in deps}
    assert their_edges == our_edges
    for level in (lambda m: m, _package):
        digraph = nx.DiGraph([(level(a), level(b)) for a, b in their_edges if level(a) != level(b)])
        with pytest.raises(nx.NetworkXNoCycle):
            nx.find_cycle(digraph)


def _long_functions(path: Path) -> dict[str, int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {f"{path.relative_to(PACKAGE)}::{n.name}": n.end_lineno - n.lineno + 1 for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES}


def test_functions_stay_short():
    long = {k: v for p in PACKAGE.rglob("*.py") for k, v in _long_functions(p).items()}
    assert long == {}
