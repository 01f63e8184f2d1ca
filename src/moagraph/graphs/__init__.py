"""Example graphs that ship with moagraph (for the bundled ``local`` pool).

``resolve_graph("vote3")`` gives the path of ``graphs/vote3.yaml``; any
existing path is returned as is, so ``--graph`` takes either.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from moagraph.graph.spec import GraphError

__all__ = ["bundled_graphs", "resolve_graph"]


def bundled_graphs() -> dict[str, Path]:
    root = Path(str(files("moagraph.graphs")))
    return {p.stem: p for p in sorted(root.glob("*.yaml"))}


def resolve_graph(name_or_path: str | Path) -> Path:
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    found = bundled_graphs()
    if str(name_or_path) in found:
        return found[str(name_or_path)]
    raise GraphError(
        f"--graph {str(name_or_path)!r}: graph file does not exist and no bundled graph has that name "
        f"(bundled: {', '.join(found) or 'none'}); pass a path to a graph YAML/JSON"
    )
