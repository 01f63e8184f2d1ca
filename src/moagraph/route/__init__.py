"""Per-query routing: RouteMoA and its baselines, and the registry that names them.

One registry, listed here (Optuna style: implementations in their modules, the
package names them): :data:`ROUTERS` maps a name to a router class; the SDK
(:func:`load_router`, :func:`build_policies`), the server and the evaluation all
resolve names through it. A router implements :class:`~moagraph.route.base.Router`
(``plan``, ``answer``, ``estimate_flops``); every registered router is a
:class:`~moagraph.route.layered.LayeredRouter` (one layer loop, budget guard and trace,
shared with the graph executor's call path) and passes the conformance suite in
:mod:`moagraph.testing.route`.

>>> from moagraph.route import router_names
>>> router_names()
['dense', 'oracle', 'random', 'routemoa', 'single', 'smoa', 'sparse', 'threshold']
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from moagraph.graph.budget import Budget, budget_scope
from moagraph.route.base import RoutePlan, Router, RouterError
from moagraph.route.baselines import (
    DenseMoA,
    Oracle,
    RandomK,
    SingleBest,
    SMoA,
    SparseMoA,
    ThresholdRouter,
)
from moagraph.route.layered import LayeredRouter, plan_flops
from moagraph.route.routemoa import RouteMoA, RouteMoAConfig

if TYPE_CHECKING:
    from moagraph.models.runtime import PoolRuntime

__all__ = [
    "ROUTERS",
    "Budget",
    "LayeredRouter",
    "RouteMoA",
    "RouteMoAConfig",
    "RoutePlan",
    "Router",
    "RouterError",
    "budget_scope",
    "build_policies",
    "evaluate_router",
    "get_router_class",
    "load_router",
    "plan_flops",
    "router_names",
]

ROUTERS: dict[str, type] = {
    "routemoa": RouteMoA,
    "dense": DenseMoA,
    "sparse": SparseMoA,
    "single": SingleBest,
    "random": RandomK,
    "threshold": ThresholdRouter,
    "smoa": SMoA,
    "oracle": Oracle,
}
"""Every router by name. ``RouteMoA`` takes ``(scorer, runtime, ...)``; the baselines
take ``(runtime, scorer=None, ...)``; keyword arguments work for all."""


def router_names() -> list[str]:
    """The registered router names, sorted."""
    return sorted(ROUTERS)


def get_router_class(name: str) -> type:
    """The router class registered as ``name``; RouterError (a ValueError) lists the known."""
    if name not in ROUTERS:
        raise RouterError(f"router {name!r} is unknown; known routers: {', '.join(router_names())}")
    return ROUTERS[name]


def load_router(
    path: str | Path,
    runtime: PoolRuntime,
    kind: str = "routemoa",
    cache_path: str | Path | None = None,
    **settings: Any,
) -> Router:
    """Load a trained scorer file and build router ``kind`` on it for ``runtime``'s pool.

    Refuses (ScorerError, a ValueError) a file trained for a different pool.

    >>> import moagraph
    >>> moagraph.load_router("no-such-router.pt", moagraph.PoolRuntime(moagraph.load_pool("local")))
    Traceback (most recent call last):
    ...
    moagraph.route.scorer.ScorerError: --router no-such-router.pt does not exist; train one with `moagraph route train`
    """
    from moagraph.route.scorer import Scorer

    scorer = Scorer.load(path, pool=runtime.pool, cache_path=cache_path)
    cls = get_router_class(kind)
    router: Router = cls(scorer=scorer, runtime=runtime, **settings)
    return router


def build_policies(
    names: list[str],
    scorer: Any,
    runtime: Any,
    k: int = 3,
    layers: int = 3,
    seed: int = 0,
    labels: dict[str, dict[str, float]] | None = None,
) -> list[Any]:
    """Routers by name with shared settings, as ``route eval`` and the benchmarks compare
    them: ``k`` models per layer, ``layers`` answer rounds, ``seed`` for ``random``,
    ``labels`` (query id -> model -> label) for ``oracle``; ``routemoa-1r`` is RouteMoA
    with one round; ``routemoa`` takes its default assessment (answer agreement on a
    replay pool, the official in-answer self-assessment on a live one);
    ``routemoa-agreement`` / ``routemoa-noevidence`` name ``assessment="agreement"`` /
    the official ``"inline"`` (which reads no score on a replay: the scorer alone decides)."""
    out: list[Any] = []
    for n in names:
        if n == "routemoa":
            out.append(RouteMoA(scorer, runtime, k=k, rounds=layers))
        elif n == "routemoa-agreement":
            out.append(
                RouteMoA(scorer, runtime, name=n, k=k, rounds=layers, assessment="agreement")
            )
        elif n == "routemoa-noevidence":
            out.append(RouteMoA(scorer, runtime, name=n, k=k, rounds=layers, assessment="inline"))
        elif n == "routemoa-1r":
            out.append(RouteMoA(scorer, runtime, name=n, k=k, rounds=1))
        elif n == "smoa":
            out.append(SMoA(runtime, scorer, k=k, layers=layers))
        elif n == "oracle":
            out.append(Oracle(runtime, scorer, labels=labels or {}))
        elif n == "sparse":
            out.append(SparseMoA(runtime, scorer, k=k, layers=layers))
        elif n == "random":
            out.append(RandomK(runtime, scorer, k=k, layers=layers, seed=seed))
        elif n == "dense":
            out.append(DenseMoA(runtime, scorer, layers=layers))
        else:
            out.append(get_router_class(n)(runtime, scorer))
    return out


def evaluate_router(scorer: Any, gt: Any, ids: Any = None, **settings: Any) -> Any:
    """The one router evaluator (:func:`moagraph.route.evaluator.evaluate_router`): every
    policy on the queries of ground-truth pool ``gt`` (or ``ids``) the router was not
    trained on, baselines chosen on training ids, one grader, 95% CIs."""
    from moagraph.route.evaluator import evaluate_router as run

    return run(scorer, gt, ids, **settings)
