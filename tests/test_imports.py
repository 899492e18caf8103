"""The package's imports form no cycle, and its layers import only downwards.

Every module of ``src/fmdconv`` is read with ``ast``; every ``import`` and ``from ... import`` in it,
at module level or inside a function, is an edge to the fmdconv module it loads (``from a import
b`` loads ``a.b`` where that is a module, else ``a``). Imports under ``if TYPE_CHECKING:`` run only
for type checkers and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "fmdconv"
# The subpackages from the bottom up: each may import those before it, never those after it.
LAYERING = ("utils", "layers", "models", "metrics", "data", "profiling", "viz", "train", "explain", "cli")


def module_names() -> dict[str, Path]:
    modules = {}
    for path in sorted((SOURCE / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:  # "import fmdconv.layers.dcd as d" and the like
                    target = target.rpartition(".")[0]
                if target.startswith(PACKAGE) and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_finder_sees_cycles_and_their_absence() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_graph_holds_function_level_imports_and_skips_type_checking_ones(tmp_path) -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import fmdconv.models\n"
        "def f():\n    from fmdconv.layers import dcd\n"
    )
    names = [getattr(n, "module", None) or n.names[0].name for n in _import_nodes(tree)]
    assert names == ["typing", "fmdconv.layers"]
    graph = import_graph()
    assert "fmdconv.layers.dcd" in graph["fmdconv.layers"]  # a package's own submodules count
    assert len(graph) > 50


def test_no_import_cycle_in_the_package() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("lower", LAYERING[:3])
def test_lower_subpackages_import_none_above_them(lower: str) -> None:
    above = {f"{PACKAGE}.{name}" for name in LAYERING[LAYERING.index(lower) + 1 :]} | {
        f"{PACKAGE}.experiments"
    }
    prefix = f"{PACKAGE}.{lower}"
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if module == prefix or module.startswith(prefix + ".")
        for target in targets
        if any(target == a or target.startswith(a + ".") for a in above)
    )
    assert not wrong, wrong
