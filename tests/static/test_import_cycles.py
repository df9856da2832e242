"""The local cluster's modules import each other without cycles, and its lower layers do not
import its upper ones (the API server knows nothing of kubelets or controllers)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("localcluster", "dummy_server", "dummy_proxy")


def import_graph(package: str) -> dict[str, set[str]]:
    root = REPO / package
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    target = full if full in modules else node.module
                    if target in modules and target != name:
                        deps.add(target)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules and a.name != name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package):
    assert cycles(import_graph(package)) == []


def test_apiserver_imports_no_upper_layer():
    graph = import_graph("localcluster")
    upper = ("localcluster.kubelet", "localcluster.controllers", "localcluster.runtime",
             "localcluster.network", "localcluster.stack")
    bad = {m: sorted(d for d in deps if d.startswith(upper))
           for m, deps in graph.items() if m.startswith("localcluster.apiserver")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_localcluster_is_packages():
    top = sorted(p.name for p in (REPO / "localcluster").glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "demo.py", "k3d.py", "kubeconfig.py",
                   "node_identity.py", "stack.py", "testing.py"]
