"""What a router is, and the registry that makes one available by name.

A router is a :class:`moagraph.graph.trace.Policy` (``answer(example, task)
-> Trace``) that also exposes :meth:`Router.plan`: the decision it makes
from the query alone (layer-1 models, its own preference order), with no LLM
call. ``plan`` is what the replay evaluation scores offline; ``answer`` runs
the full policy through :class:`~moagraph.models.runtime.PoolRuntime`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from moagraph.errors import ConfigError
from moagraph.graph.trace import Trace
from moagraph.tasks.base import Example, Task

if TYPE_CHECKING:
    from moagraph.models.runtime import PoolRuntime


class RouterError(ConfigError):
    """Unknown router name or bad router settings; the message says what is known."""


@dataclass
class RoutePlan:
    """A routing decision from the query alone.

    ``layers``: models answering in each layer (layer 1 first; later layers are the
    static plan, which judge-driven routers may change at run time); ``aggregator``:
    the fusing model (None = the top answer is returned); ``ranked``: layer-1 models
    in the policy's own order of preference (``ranked[0]`` is its pick).
    """

    layers: list[list[str]]
    aggregator: str | None
    ranked: list[str]
    scores: dict[str, float] = field(default_factory=dict)
    judges_per_layer: int = 0
    judge_max_tokens: int = 8
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Router(Protocol):
    name: str

    def plan(self, example: Example, task: Task | None = None) -> RoutePlan: ...

    async def answer(self, example: Example, task: Task, on_token: Any = None) -> Trace: ...


R = TypeVar("R")
_REGISTRY: dict[str, type] = {}
"""Router classes by name: filled by the ``register_router`` decorators at import time."""


def register_router(name: str) -> Callable[[type[R]], type[R]]:
    def deco(cls: type[R]) -> type[R]:
        _REGISTRY[name] = cls
        return cls

    return deco


def router_names() -> list[str]:
    import moagraph.route.baselines
    import moagraph.route.routemoa  # noqa: F401

    return sorted(_REGISTRY)


def get_router_class(name: str) -> type:
    names = router_names()
    if name not in _REGISTRY:
        raise RouterError(f"router {name!r} is unknown; known routers: {', '.join(names)}")
    return _REGISTRY[name]


def load_router(
    path: str | Path,
    runtime: PoolRuntime,
    kind: str = "routemoa",
    cache_path: str | Path | None = None,
    **settings: Any,
) -> Router:
    """Load a trained scorer file and build router ``kind`` on it for ``runtime``'s pool.

    Refuses (ScorerError, a ValueError) a file trained for a different pool.
    """
    from moagraph.route.scorer import Scorer

    scorer = Scorer.load(path, pool=runtime.pool, cache_path=cache_path)
    cls = get_router_class(kind)
    router: Router = cls(scorer=scorer, runtime=runtime, **settings)
    return router
