"""The package's shape, read from its source: no import cycles, the library never imports the command line,
and modules and functions stay short enough to read."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "audiocap"
MODULES = {".".join(("audiocap", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): path
           for path in sorted(PACKAGE.rglob("*.py"))}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def imported_modules(path: Path) -> set[str]:
    """The audiocap modules `path` imports, at the top or inside functions (`from a.b import c` is a.b.c when c
    is a module, else a.b)."""
    module = ".".join(("audiocap", *path.relative_to(PACKAGE).with_suffix("").parts))
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), module) if node.level \
                else node.module
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
    return {name for name in found if name in MODULES}


GRAPH = {name: imported_modules(path) for name, path in MODULES.items()}


def test_the_import_graph_is_read():
    assert "audiocap.caption" in GRAPH["audiocap.cli.caption"] or "audiocap.caption" in str(GRAPH)
    assert GRAPH["audiocap.encoders"] >= {"audiocap.encoders.panns", "audiocap.encoders.aisfx"}
    assert "audiocap.download" in GRAPH["audiocap.metrics.spice"]


def test_no_import_cycles():
    """Depth-first search; a module met again while it is on the path closes a cycle."""
    cycles, done = [], set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycles.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        for imported in sorted(GRAPH[name]):
            visit(imported, path + [name])
        done.add(name)

    for name in GRAPH:
        visit(name, [])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_library_never_imports_the_command_line():
    offenders = {name: sorted(n for n in imported if n.startswith("audiocap.cli"))
                 for name, imported in GRAPH.items()
                 if not name.startswith("audiocap.cli") and name != "audiocap.__main__"}
    assert not {name: found for name, found in offenders.items() if found}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_are_short(name):
    source = MODULES[name].read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{name}: {len(source.splitlines())} lines"
    long = [f"{node.name}: {node.end_lineno - node.lineno + 1} lines" for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{name}: {long}"
