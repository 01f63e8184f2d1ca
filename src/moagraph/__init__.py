"""moagraph: which LLMs, wired how, give the best answers for the compute you can spend?

The names below are the public API; they load lazily so ``import moagraph``
(and the CLI's start-up) stays fast.

- ``load_pool(name_or_path)``: your models (bundled: "local", "zeroeval-math", ...)
- ``get_task(name)``: a benchmark (prompt, answer extraction, grader)
- ``Graph``, ``builders``: collaboration graphs (``builders.moa``, ``parallel_vote``...)
- ``evaluate(graph_or_router, task, examples, pool=...)``: one function for both
- ``load_router(scorer_file, runtime)``: RouteMoA or a baseline (``moagraph.route``)
- ``optimize(pool, task, optimizer=..., n_trials=..., storage=...)``: a whole graph
  search in one call (the same as ``moagraph.search.optimize``; ``moagraph.search``
  stays the subpackage: ``search.create_study``, ``search.OPTIMIZERS``, ``search.Study``)
- ``serve.create_app(pool, graphs=..., routers=...)``: the OpenAI-compatible server
- ``MoagraphError``: base of every user-fixable error (a ValueError)

>>> import moagraph
>>> g = moagraph.builders.parallel_vote("Athene-70B", 3)
>>> [n.id for n in g.nodes], g.sink
(['a0', 'a1', 'a2', 'vote'], 'vote')
>>> round(moagraph.estimate_cost(g, moagraph.load_pool("zeroeval-math"), moagraph.get_task("math")).flops_norm, 1)
80.6
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_pool": "moagraph.models.pool",
    "Pool": "moagraph.models.pool",
    "ModelSpec": "moagraph.models.pool",
    "SamplingParams": "moagraph.models.base",
    "PoolRuntime": "moagraph.models.runtime",
    "CallCache": "moagraph.models.cache",
    "resolve_pool": "moagraph.pools",
    "get_task": "moagraph.tasks.registry",
    "Graph": "moagraph.graph.spec",
    "Node": "moagraph.graph.spec",
    "Role": "moagraph.graph.spec",
    "GraphExecutor": "moagraph.graph.executor",
    "Budget": "moagraph.graph.budget",
    "GraphPolicy": "moagraph.graph.policy",
    "evaluate": "moagraph.graph.evaluate",
    "aevaluate": "moagraph.graph.evaluate",
    "estimate_cost": "moagraph.graph.cost",
    "builders": "moagraph.graph",
    "RunStore": "moagraph.store",
    "load_router": "moagraph.route",
    "MoagraphError": "moagraph.errors",
    "search": "moagraph.search",
    "optimize": "moagraph.search",
    "serve": "moagraph.serve",
    "route": "moagraph.route",
    "errors": "moagraph.errors",
}
_MODULES = {"builders", "search", "serve", "route", "errors"}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'moagraph' has no attribute {name!r}")
    if name in _MODULES:
        return import_module(module if name != "builders" else "moagraph.graph.builders")
    return getattr(import_module(module), name)
