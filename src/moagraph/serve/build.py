"""What is served, from names or objects: the pool, graphs and routers of one server.

:func:`moagraph.serve.app.create_app` calls :func:`resolve_served` so the library
(not the CLI) turns ``--pool local --graph v=vote3 --router auto=router.pt`` into a
runtime and ready graphs and routers; ``moagraph serve`` only parses its options.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from moagraph.errors import ConfigError
from moagraph.graph.spec import Graph
from moagraph.models.pool import Pool
from moagraph.models.runtime import PoolRuntime
from moagraph.serve.runtime import ServeRuntime

PoolLike = str | Path | Pool | PoolRuntime | ServeRuntime
"""A bundled pool name, a pool file, a loaded Pool, or a runtime."""

Named = Mapping[str, Any] | Sequence[str] | None
"""``{name: object-or-path}``, or ``["NAME=PATH", ...]`` as the CLI takes them."""


@dataclass
class GraphSet:
    """Several graphs served under one name: a request's budget picks one
    (:mod:`moagraph.serve.pick`). ``--graph NAME=a.yaml,b.yaml`` or ``NAME=DIR``
    (every ``*.yaml`` in it) on the command line; a list of graphs or paths in Python."""

    graphs: list[Graph]


def _load_graph(g: Any) -> Graph:
    from moagraph.graphs import resolve_graph

    return g if isinstance(g, Graph) else Graph.load(resolve_graph(g))


def _graph_set(name: str, value: Any) -> GraphSet | None:
    """The set ``value`` names (a list, ``a,b,c`` or a directory), else None (one graph)."""
    if isinstance(value, GraphSet):
        return value
    items: list[Any]
    if isinstance(value, list | tuple):
        items = list(value)
    elif isinstance(value, str) and "," in value:
        items = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, str | Path) and Path(value).is_dir():
        items = sorted(
            p for p in Path(value).iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
        )
        if not items:
            raise ConfigError(f"--graph {name}={value}: the directory holds no *.yaml graph")
    else:
        return None
    graphs = []
    for i, item in enumerate(items):
        g = _load_graph(item)
        label = g.name or (Path(item).stem if isinstance(item, str | Path) else f"option{i}")
        graphs.append(g if g.name == label else g.model_copy(update={"name": label}))
    names = [g.name for g in graphs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(
            f"--graph {name}=...: the set has two graphs named {', '.join(dup)}; give each "
            "graph a distinct `name:` in its YAML"
        )
    return GraphSet(graphs)


def named(values: Named, option: str) -> dict[str, Any]:
    """``{name: value}`` from a mapping or from ``NAME=VALUE`` strings (unique names)."""
    if values is None:
        return {}
    if isinstance(values, Mapping):
        return dict(values)
    out: dict[str, Any] = {}
    for v in values:
        name, sep, path = str(v).partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"{option} {v!r}: expected NAME=PATH, e.g. {option} math=best.yaml")
        if name.strip() in out:
            raise ConfigError(
                f"{option}: the name {name!r} is given twice; served names must be unique"
            )
        out[name.strip()] = path.strip()
    return out


def serve_runtime(pool: PoolLike, cache: str | Path | None = None) -> ServeRuntime:
    """A :class:`ServeRuntime` for ``pool`` (``cache``: SQLite call cache file)."""
    if isinstance(pool, ServeRuntime):
        return pool
    if isinstance(pool, PoolRuntime):
        return ServeRuntime(pool)
    if isinstance(pool, Pool):
        from moagraph.models.cache import CallCache

        return ServeRuntime(PoolRuntime(pool, cache=CallCache(cache) if cache else None))
    from moagraph.pools import resolve_pool

    return ServeRuntime(PoolRuntime.from_path(resolve_pool(pool), cache))


def resolve_served(
    runtime: ServeRuntime,
    graphs: Named = None,
    routers: Named = None,
    *,
    router_kind: str = "routemoa",
) -> dict[str, Any]:
    """``{served name: Graph, GraphSet or router}``: graph names/paths are loaded (a bundled
    name as ``eval --graph`` takes it, or a YAML file; several, comma-separated or a list, or
    a directory of YAML files, make a :class:`GraphSet`); router paths are scorer files, built
    into router ``router_kind`` on ``runtime`` (so request overrides reach its calls)."""
    graph_map = named(graphs, "--graph")
    router_map = named(routers, "--router")
    clash = set(graph_map) & set(router_map)
    if clash:
        raise ConfigError(f"--graph and --router both use the name(s) {', '.join(sorted(clash))}")
    served: dict[str, Any] = {}
    for name, g in graph_map.items():
        gs = _graph_set(name, g)
        if gs is not None:
            served[name] = gs
            continue
        g = _load_graph(g)
        served[name] = g if g.name else g.model_copy(update={"name": name})
    for name, r in router_map.items():
        if isinstance(r, str | Path):
            from moagraph.route import load_router

            # a ServeRuntime stands in for the PoolRuntime (duck-typed: same complete/pool)
            r = load_router(r, cast(PoolRuntime, runtime), kind=router_kind)
        served[name] = r
    return served
