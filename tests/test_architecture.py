"""The import contract of issue 13, read from the source with ``ast`` (nothing is imported).

The pure core (``features/``, ``models/``) never reaches into the shell (``pipelines/``);
``features/`` does not depend on ``models/``; only ``models/tracking*.py`` talks to
mlflow and only ``pipelines/`` to Prefect; the project's modules import each other
without cycles, counting imports inside functions and ``if TYPE_CHECKING:`` blocks;
and no module outside ``tests/`` is longer than 400 lines.
"""

from __future__ import annotations

import ast
import subprocess
from collections import deque
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "models", "pipelines")
MAX_LINES = 400


@dataclass(frozen=True)
class Import:
    """One import statement of a project module, resolved to absolute module names."""

    path: str
    line: int
    statement: str
    #: The absolute dotted names it imports: ``a.b`` for ``import a.b``, ``a.y`` for
    #: ``from a import y`` (a submodule ``a.y``, or a name defined in ``a``), ``a`` for ``*``.
    names: tuple[str, ...]

    def where(self) -> str:
        return f"{self.path}:{self.line}: {self.statement}"


def tracked(pattern: str) -> list[str]:
    """Files of the checkout matching ``pattern``: tracked, or new and not ignored.

    New files count so that a module is checked before its first commit; in CI the two
    are the same.
    """
    command = ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", pattern]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return sorted(p for p in out.splitlines() if (ROOT / p).is_file())


def module_name(path: str) -> str:
    """``models/explain.py`` -> ``models.explain``; a package's ``__init__.py`` -> the package."""
    parts = list(Path(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def project_files() -> dict[str, str]:
    """Module name -> path of every ``.py`` file of the three packages in the checkout."""
    return {module_name(p): p for pkg in PACKAGES for p in tracked(f"{pkg}/*.py")}


def _absolute(node: ast.ImportFrom, path: str) -> str:
    """The absolute module a (possibly relative) ``from ... import`` reads from."""
    if not node.level:
        return node.module or ""
    package = module_name(path).split(".")
    if not path.endswith("__init__.py"):
        package.pop()
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


@cache
def imports_of(path: str) -> tuple[Import, ...]:
    """Every import anywhere in the file: top level, in functions, under TYPE_CHECKING."""
    return read_imports((ROOT / path).read_text(encoding="utf-8"), path)


def read_imports(source: str, path: str) -> tuple[Import, ...]:
    """The imports of ``source``, the text of the file at ``path``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            names = tuple(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, path)
            names = tuple(module if a.name == "*" else f"{module}.{a.name}" for a in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = (node.args[0].value,)
        else:
            continue
        statement = ast.get_source_segment(source, node) or ""
        found.append(Import(path, node.lineno, " ".join(statement.split()), names))
    return tuple(found)


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def violations(paths: list[str], forbidden_top: set[str]) -> list[str]:
    """The imports in ``paths`` naming any module under one of ``forbidden_top``."""
    return [
        imp.where()
        for path in paths
        for imp in imports_of(path)
        if any(_top(name) in forbidden_top for name in imp.names)
    ]


def files_of(*packages: str) -> list[str]:
    return sorted(p for p in project_files().values() if _top(module_name(p)) in packages)


def report(rule: str, found: list[str]) -> str:
    return f"{rule}: {len(found)} offending import(s)\n  " + "\n  ".join(found)


def test_the_core_imports_nothing_from_pipelines():
    found = violations(files_of("features", "models"), {"pipelines"})
    if found:
        pytest.fail(
            report("features/ and models/ must not import from pipelines/", found), pytrace=False
        )


def test_features_import_nothing_from_models():
    found = violations(files_of("features"), {"models"})
    if found:
        pytest.fail(report("features/ must not import from models/", found), pytrace=False)


def test_only_models_tracking_imports_mlflow():
    others = [p for p in project_files().values() if not fnmatch(p, "models/tracking*.py")]
    found = violations(others, {"mlflow"})
    if found:
        pytest.fail(report("only models/tracking*.py may import mlflow", found), pytrace=False)


def test_only_pipelines_import_prefect():
    found = violations(files_of("features", "models"), {"prefect"})
    if found:
        pytest.fail(report("only pipelines/ may import prefect", found), pytrace=False)


def _target(name: str, modules: dict[str, str]) -> str | None:
    """The project module a dotted name loads: itself, or its longest module prefix.

    ``a.y`` of ``from a import y`` is the submodule ``a.y`` when there is one, else ``a``.
    """
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph() -> dict[str, dict[str, Import]]:
    """Module -> {imported project module: the first statement importing it}."""
    modules = project_files()
    graph: dict[str, dict[str, Import]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for imp in imports_of(path):
            for name in imp.names:
                target = _target(name, modules)
                if target is not None and target != module:
                    edges.setdefault(target, imp)
    return graph


def strongly_connected(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's components of the graph with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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
    return sorted(components)


def shortest_cycle(graph: dict[str, dict[str, Import]], start: str, within: set[str]) -> list[str]:
    """The shortest chain ``start -> ... -> start`` inside one component."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node]):
            if nxt not in within:
                continue
            if nxt == start:
                chain = [node]
                while chain[-1] != start:
                    chain.append(previous[chain[-1]])
                return [*reversed(chain), start]
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"{start} is in a component but on no cycle")


def import_cycles() -> list[str]:
    """One shortest cycle through each module of every cyclic component, with its imports."""
    graph = import_graph()
    described: dict[tuple[str, ...], str] = {}
    for component in strongly_connected(graph):
        members = set(component)
        for start in component:
            chain = shortest_cycle(graph, start, members)
            # The same cycle found from another of its modules: keep one rotation.
            ring = chain[:-1]
            pivot = ring.index(min(ring))
            key = tuple(ring[pivot:] + ring[:pivot])
            if key in described:
                continue
            steps = "\n      ".join(
                graph[a][b].where() for a, b in zip(chain, chain[1:], strict=False)
            )
            described[key] = f"{' -> '.join([*key, key[0]])}\n      {steps}"
    return list(described.values())


def test_no_import_cycles():
    cycles = import_cycles()
    if cycles:
        pytest.fail(
            f"{len(cycles)} import cycle(s) among the project's modules "
            "(imports in functions and under TYPE_CHECKING count):\n  " + "\n  ".join(cycles),
            pytrace=False,
        )


def test_no_module_outside_tests_is_longer_than_400_lines():
    lengths = {p: (ROOT / p).read_bytes().count(b"\n") for p in tracked("*.py")}
    long = [
        f"{p}: {n} lines"
        for p, n in sorted(lengths.items())
        if not p.startswith("tests/") and n > MAX_LINES
    ]
    if long:
        message = f"{len(long)} module(s) over {MAX_LINES} lines:\n  " + "\n  ".join(long)
        pytest.fail(message, pytrace=False)


def test_the_reader_sees_every_kind_of_import():
    """Guards the reader itself, so that no rule passes by reading nothing."""
    assert {"features", "models", "pipelines"} <= set(project_files()), "no modules found"
    source = """
from __future__ import annotations
from typing import TYPE_CHECKING
import mlflow.tracking as tracking
from . import sibling
from ..other import name
if TYPE_CHECKING:
    from pipelines.io import Paths
def later():
    from models import explain
    return importlib.import_module("prefect")
"""
    names = [name for imp in read_imports(source, "models/pkg/mod.py") for name in imp.names]
    assert names == [
        "__future__.annotations",
        "typing.TYPE_CHECKING",
        "mlflow.tracking",
        "models.pkg.sibling",
        "models.other.name",
        "pipelines.io.Paths",
        "models.explain",
        "prefect",
    ]
    init = read_imports("from . import sibling\n", "models/pkg/__init__.py")
    assert init[0].names == ("models.pkg.sibling",)
    modules = {"models.pkg": "", "models.pkg.sibling": ""}
    assert _target("models.pkg.sibling", modules) == "models.pkg.sibling"
    assert _target("models.pkg.function", modules) == "models.pkg"
    assert _target("numpy.linalg", modules) is None


def test_cycles_are_found_and_told_as_chains():
    imp = Import("x.py", 1, "import y", ("y",))
    graph = {"a": {"b": imp}, "b": {"c": imp, "a": imp}, "c": {"a": imp}, "d": {"a": imp}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert shortest_cycle(graph, "a", {"a", "b", "c"}) == ["a", "b", "a"]
    assert shortest_cycle(graph, "c", {"a", "b", "c"}) == ["c", "a", "b", "c"]
