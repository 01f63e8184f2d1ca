"""moagraph: which LLMs, wired how, give the best answers for the compute you can spend?

The names below are the public API; they load lazily so ``import moagraph``
(and the CLI's start-up) stays fast.
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
    "Budget": "moagraph.graph.executor",
    "GraphPolicy": "moagraph.graph.policy",
    "evaluate": "moagraph.graph.evaluate",
    "aevaluate": "moagraph.graph.evaluate",
    "estimate_cost": "moagraph.graph.cost",
    "builders": "moagraph.graph",
    "RunStore": "moagraph.store",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'moagraph' has no attribute {name!r}")
    mod = import_module(module)
    return getattr(mod, name) if name != "builders" else import_module("moagraph.graph.builders")
