"""The package's import graph has no circle: between modules of modeling/ and of trainers/, imports inside functions
included (a circle hidden in a function is still a circle)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def import_graph(package: Path) -> dict:
    """module name (relative to `package`, dotted) -> the package modules it imports relatively, anywhere in it."""
    modules = {".".join(p.relative_to(package).with_suffix("").parts): p for p in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        here = name.split(".")[:-1]  # the package a relative import starts from
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                stem = base + (node.module.split(".") if node.module else [])
                for alias in node.names:
                    for candidate in (".".join(stem + [alias.name]), ".".join(stem), ".".join(stem + ["__init__"])):
                        if candidate in modules and candidate != name:
                            targets.add(candidate)
                            break
        graph[name] = targets
    return graph


def find_cycle(graph: dict):
    """One circle of the graph as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in graph:
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


@pytest.mark.parametrize("package", ["modeling", "trainers"])
def test_no_import_circle(package):
    assert find_cycle(import_graph(ROOT / package)) is None


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
