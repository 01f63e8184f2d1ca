"""No import cycles among moagraph modules (module-level imports only).

Edges: ``import moagraph.x`` / ``from moagraph.x import y`` at module level (not inside
functions, not under ``if TYPE_CHECKING:``); ``from moagraph.pkg import name`` is an edge
to ``moagraph.pkg.name`` when that is a module, else to ``moagraph.pkg``. The implicit
import of a parent package is not an edge (a package ``__init__`` listing its
implementations, Optuna style, is not a cycle). Run it by hand:
``.venv/bin/python tests/test_import_graph.py`` prints every cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top_level(tree: ast.Module) -> list[ast.stmt]:
    """Module-level statements, descending into if/try blocks but not TYPE_CHECKING ones."""
    out: list[ast.stmt] = []
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if "TYPE_CHECKING" not in test:
                todo[:0] = node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo[:0] = node.body + node.orelse + node.finalbody
        else:
            out.append(node)
    return out


def import_graph() -> nx.DiGraph:
    files = sorted((ROOT / "moagraph").rglob("*.py"))
    modules = {module_name(f): f for f in files}
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, f in modules.items():
        pkg = name if f.name == "__init__.py" else name.rpartition(".")[0]
        for node in _top_level(ast.parse(f.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in modules else base)
            for t in targets:
                if t in modules and t != name:
                    g.add_edge(name, t)
    return g


def cycles() -> list[list[str]]:
    return sorted(sorted(c) for c in nx.simple_cycles(import_graph()))


def test_graph_sees_the_packages_imports() -> None:
    g = import_graph()
    assert len(g) > 80
    assert g.has_edge("moagraph.route", "moagraph.route.routemoa")
    assert g.has_edge("moagraph.route.routemoa", "moagraph.route.base")


def test_no_import_cycles() -> None:
    found = cycles()
    assert not found, "import cycles (module-level):\n" + "\n".join(" -> ".join(c) for c in found)


if __name__ == "__main__":
    for c in cycles():
        print(" -> ".join(c))
    print(f"{len(cycles())} cycle(s) among {len(import_graph())} modules")
