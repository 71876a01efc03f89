"""The package's import rule, read from the AST (see README, "How it works"; scripts/import_graph.py).

- Leaves import only the standard library.
- net/ never imports engine/, the public API or the loader; engine/ never imports net/ or
  the public API; attach/ (another process) imports neither, nor the loader.
- No import cycle, counting imports inside functions too.
- A function-level import of one of our modules exists to save memory and says so: `RSS:`.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = REPO / "python" / "fastattach"
_spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)

LEAVES = ("_log", "_handoff", "_options", "_loader_contract", "_address")
# (modules whose name starts with one of these) must not import (these).
FORBIDDEN = {
    "net": ("engine", "_api", "_ptvsd", "cli", "safe_attach_loader", "attach", "bench"),
    "engine": ("net", "_api", "_ptvsd", "cli", "safe_attach_loader", "attach", "bench"),
    "attach": ("net", "engine", "_api", "_ptvsd", "cli", "safe_attach_loader", "bench"),
    "safe_attach_loader": ("net", "engine", "attach", "cli", "bench"),
}
# The harness imports fastattach lazily so that its no-debugger baseline never loads it
# (bench/target.py's docstring); that is its own rule, not the package's.
LAZY_RULE_EXEMPT = ("bench",)


def short(module: str) -> str:
    return module.removeprefix("fastattach.")


@pytest.fixture(scope="module")
def graph():
    return import_graph.build_graph(PACKAGE, collapsed=())[0]


def test_leaves_import_only_the_standard_library():
    for name in LEAVES:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{name} imports {'.' * node.level}{node.module or ''}"
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                top = module.partition(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__", f"{name} imports {module}"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_never_imports_what_it_must_not(graph, layer):
    broken = [f"{short(source)} -> {short(target)} ({path.name}:{line})"
              for source, targets in graph.items() if short(source).partition(".")[0] == layer
              for target, sites in targets.items()
              if short(target).partition(".")[0] in FORBIDDEN[layer]
              for path, line, _ in sites]
    assert not broken, broken


def test_no_import_cycle(graph):
    assert import_graph.strongly_connected(graph) == []
    folders, _ = import_graph.build_graph(PACKAGE)
    assert import_graph.strongly_connected(folders) == []


def test_the_graph_stays_shallow_and_sparse():
    folders, _ = import_graph.build_graph(PACKAGE)
    assert max(import_graph.levels(folders).values()) <= 7
    assert sum(len(targets) for targets in folders.values()) <= 39


def test_every_lazy_import_of_ours_says_what_memory_it_saves(graph):
    unexplained = []
    for source, targets in graph.items():
        if short(source).partition(".")[0] in LAZY_RULE_EXEMPT:
            continue
        for sites in targets.values():
            for path, line, lazy in sites:
                text = path.read_text().splitlines()[line - 1]
                if lazy and "RSS:" not in text.partition("#")[2]:
                    unexplained.append(f"{path.relative_to(PACKAGE)}:{line}: {text.strip()}")
    assert not unexplained, unexplained
