"""Every import inside ``llava_dymoe`` points down the layers: the intra-package import graph has no cycle.

The graph is read with ``ast`` from the sources (nothing is imported), so it also sees imports inside
functions and ``importlib.import_module("llava_dymoe....")`` with a literal name: a function-local import
hides a cycle from the import system without removing it (style.md §6.2).
"""
import ast
import os
from typing import Dict, List, Set

import llava_dymoe

ROOT = os.path.dirname(os.path.dirname(llava_dymoe.__file__))


def _modules(root: str, package: str) -> Dict[str, str]:
    """``{dotted module name: file path}`` for every ``.py`` file under ``root/package``."""
    out = {}
    for folder, _, files in os.walk(os.path.join(root, package)):
        for f in files:
            if f.endswith(".py"):
                parts = os.path.relpath(os.path.join(folder, f[:-3]), root).split(os.sep)
                out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(folder, f)
    return out


def _edges(node: ast.AST, module: str, is_package: bool, modules) -> Set[str]:
    """The modules of ``modules`` one AST node imports.

    ``from pkg.mod import name`` is an edge to ``pkg.mod.name`` when that is a module, else to ``pkg.mod``.
    """
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            parts = module.split(".")
            base = parts[: len(parts) - node.level + (1 if is_package else 0)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        names = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
    elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
        names = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    else:
        names = []
    return {n for n in names if n in modules}


def import_graph(root: str, package: str) -> Dict[str, Set[str]]:
    """``{module: modules of the package it imports}``, module-level and function-local imports alike.

    The implicit import of a module's parent packages is not an edge (every package would be a cycle).
    """
    modules = _modules(root, package)
    graph = {}
    for name, path in modules.items():
        is_package = path.endswith("__init__.py")
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        graph[name] = set().union(*(_edges(n, name, is_package, modules) for n in ast.walk(tree))) - {name}
    return graph


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Cycles found by a depth-first walk (at least one per strongly connected set), each closed: a, b, a."""
    state: Dict[str, int] = {}  # 1 on the current path, 2 done
    path: List[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_llava_dymoe_has_no_import_cycle():
    graph = import_graph(ROOT, "llava_dymoe")
    assert len(graph) > 50 and "llava_dymoe.core.layer" in graph["llava_dymoe.core"]
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (move the shared piece to a lower module):\n" + "\n".join(
        " -> ".join(c) for c in cycles)


def _write(root, files: Dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    _write(tmp_path, {
        "fakepkg/__init__.py": "",
        "fakepkg/low.py": "X = 1\n",
        "fakepkg/a.py": "from .b import helper\nfrom . import low\n",
        "fakepkg/b.py": "def helper():\n    from fakepkg.a import helper as h  # the back edge\n    return h\n",
        "fakepkg/sub/__init__.py": "from .c import Y\n",
        "fakepkg/sub/c.py": "import importlib\nfrom ..low import X\nY = importlib.import_module('fakepkg.a')\n",
    })
    graph = import_graph(str(tmp_path), "fakepkg")
    assert graph == {"fakepkg": set(), "fakepkg.low": set(), "fakepkg.a": {"fakepkg.b", "fakepkg.low"},
                     "fakepkg.b": {"fakepkg.a"}, "fakepkg.sub": {"fakepkg.sub.c"},
                     "fakepkg.sub.c": {"fakepkg.low", "fakepkg.a"}}
    assert find_cycles(graph) == [["fakepkg.a", "fakepkg.b", "fakepkg.a"]]
    # the shared piece moved down: no cycle left
    _write(tmp_path, {"fakepkg/b.py": "from .low import X\n"})
    assert find_cycles(import_graph(str(tmp_path), "fakepkg")) == []


def test_checker_reports_a_longer_cycle_through_a_package_init(tmp_path):
    _write(tmp_path, {
        "fakepkg/__init__.py": "from .a import A\n",
        "fakepkg/a.py": "from .b import B\nA = 1\n",
        "fakepkg/b.py": "import fakepkg.c\nB = 2\n",
        "fakepkg/c.py": "from fakepkg import A  # a name from the package's __init__\n",
    })
    assert find_cycles(import_graph(str(tmp_path), "fakepkg")) == [
        ["fakepkg", "fakepkg.a", "fakepkg.b", "fakepkg.c", "fakepkg"]]
