"""What a router is (the base protocol and its plan); the registry is in ``moagraph.route``.

A router is a :class:`moagraph.graph.trace.Policy` (``answer(example, task)
-> Trace``) that also exposes :meth:`Router.plan`: the decision it makes
from the query alone (layer-1 models, its own preference order), with no LLM
call. ``plan`` is what the replay evaluation scores offline; ``answer`` runs
the full policy through :class:`~moagraph.models.runtime.PoolRuntime`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from moagraph.errors import ConfigError
from moagraph.graph.trace import Trace
from moagraph.tasks.base import Example, Task


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

    def estimate_flops(
        self,
        example: Example,
        task: Task,
        *,
        prompt_tokens: float | None = None,
        max_tokens: int | None = None,
    ) -> float:
        """Normalised FLOPs this router plans to spend on ``example`` (no LLM call):
        what the server checks a budget against before running."""
        ...
