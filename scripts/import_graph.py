"""Print fastattach's internal import graph: levels, edges, cycles (standard library only).

    python scripts/import_graph.py [PACKAGE_DIR] [--edges] [--files]

A node is a module of the package, except that each subpackage (``net/``, ``engine/``,
``attach/``, ``bench/``) counts as one node, as in the architecture review; with ``--files``
every module is a node. An edge is "module A imports something of module B", counted once
per pair whether the import is at module level or inside a function; imports under
``if TYPE_CHECKING:`` never run and are left out. The level of a module is 1 plus the highest level of
what it imports (a module that imports nothing of ours is level 1); the n modules of a
cycle count as n levels, all printed at the top one. tests/test_layers.py reads the same graph through ``build_graph``.
"""

from __future__ import annotations

import ast
import pathlib
import sys

# Folders whose files count as one node: each is one subsystem seen from outside.
COLLAPSED = ("attach", "bench", "engine", "net")
# Modules of ours with no .py file (C extensions), found in imports by name.
EXTENSION_MODULES = ("_fasttrace",)


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([root.name, *parts])


def node_of(module: str, collapsed=COLLAPSED) -> str:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in collapsed:
        return ".".join(parts[:2])
    return module


def imports_of(path: pathlib.Path, module: str, is_package: bool, known: set[str]):
    """(imported module, line, inside a function) for every import of ours in one file."""
    tree = ast.parse(path.read_text(), str(path))
    inside, type_only = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(child) for child in ast.walk(node))
        elif isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            type_only.update(id(child) for statement in node.body for child in ast.walk(statement))
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        targets = []
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from . import x` imports the module x when x is one.
            targets = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in known else prefix
                       for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target:
                yield target, node.lineno, id(node) in inside


def build_graph(root: pathlib.Path, collapsed=COLLAPSED):
    """({node: {imported node: [(file, line, lazy), ...]}}, {node: [files]})."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(files) | {f"{root.name}.{name}" for name in EXTENSION_MODULES}
    graph: dict[str, dict[str, list]] = {f"{root.name}.{name}": {} for name in EXTENSION_MODULES}
    members: dict[str, list] = {}
    for module, path in files.items():
        source = node_of(module, collapsed)
        graph.setdefault(source, {})
        members.setdefault(source, []).append(path)
        for target, line, lazy in imports_of(path, module, path.name == "__init__.py", known):
            target = node_of(target, collapsed)
            if target == source or target == root.name:
                continue   # inside one node; the package's __init__ is its public face, not a layer
            graph[source].setdefault(target, []).append((path, line, lazy))
    return graph, members


def strongly_connected(graph) -> list[list[str]]:
    """Tarjan's algorithm: the cycles, each as its set of nodes (singletons left out)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(max(1000, 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def levels(graph) -> dict[str, int]:
    cycles = strongly_connected(graph)
    group = {node: node for node in graph}
    for component in cycles:
        for node in component:
            group[node] = component[0]
    level: dict[str, int] = {}

    def level_of(node):
        root = group[node]
        if root in level:
            return level[root]
        members = [n for n in graph if group[n] == root]
        below = [t for n in members for t in graph[n] if group.get(t, t) != root]
        # A cycle of n modules is n levels deep: a reader has to go through all of them.
        level[root] = len(members) + max((level_of(t) for t in below if t in graph), default=0)
        return level[root]

    return {node: level_of(node) for node in graph}


def main(argv: list[str]) -> int:
    show_edges = "--edges" in argv
    collapsed = () if "--files" in argv else COLLAPSED
    args = [a for a in argv if not a.startswith("--")]
    root = pathlib.Path(args[0] if args else pathlib.Path(__file__).resolve().parent.parent / "python/fastattach")
    graph, _ = build_graph(root, collapsed)
    edges = sum(len(targets) for targets in graph.values())
    sites = sum(len(sites) for targets in graph.values() for sites in targets.values())
    lazy = sum(1 for targets in graph.values() for sites in targets.values() for _, _, is_lazy in sites if is_lazy)
    by_level = levels(graph)
    cycles = strongly_connected(graph)
    print(f"{len(graph)} nodes, {max(by_level.values(), default=0)} levels, {edges} edges "
          f"({sites} import statements, {lazy} of them inside functions), {len(cycles)} cycles")
    for number in range(1, max(by_level.values(), default=0) + 1):
        names = sorted(n.removeprefix(root.name + ".") for n, lv in by_level.items() if lv == number)
        print(f"  level {number}: {', '.join(names)}")
    for component in cycles:
        print(f"  cycle: {' <-> '.join(n.removeprefix(root.name + '.') for n in component)}")
    if show_edges:
        for source in sorted(graph):
            for target in sorted(graph[source]):
                kinds = {"lazy" if is_lazy else "top" for _, _, is_lazy in graph[source][target]}
                print(f"  {source.removeprefix(root.name + '.')} -> {target.removeprefix(root.name + '.')}"
                      f" ({'/'.join(sorted(kinds))})")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
