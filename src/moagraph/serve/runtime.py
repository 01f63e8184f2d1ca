"""Per-request sampling overrides for every LLM call a served request makes.

A request's ``temperature``/``max_tokens``/``top_p``/``seed``/``stop`` must
reach the calls that a graph *or a router* makes on its behalf, but routers
are built once, bound to a runtime. So the server hands every policy this
wrapper, which applies the overrides of the request whose context the call
runs in (a ContextVar owned by the wrapper instance; asyncio tasks copy the
context, so concurrent nodes of one request see their request's overrides).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from moagraph.models.base import ChatMessage, Completion, SamplingParams, TokenCallback
from moagraph.models.runtime import PoolRuntime


@dataclass(frozen=True)
class Overrides:
    """What a request asks for; ``None`` keeps what the graph or router chose."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None  # a cap: never raises a node's own limit
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def apply(self, params: SamplingParams) -> SamplingParams:
        changes: dict[str, Any] = {}
        if self.temperature is not None:
            changes["temperature"] = self.temperature
        if self.top_p is not None:
            changes["top_p"] = self.top_p
        if self.max_tokens is not None and self.max_tokens < params.max_tokens:
            changes["max_tokens"] = self.max_tokens
        if self.seed is not None:
            changes["seed"] = self.seed
        if self.stop:
            changes["stop"] = tuple(dict.fromkeys(params.stop + self.stop))
        return replace(params, **changes) if changes else params

    @property
    def empty(self) -> bool:
        return self == Overrides()


class ServeRuntime:
    """A :class:`PoolRuntime` look-alike that applies the current request's overrides.

    Everything but :meth:`complete` is delegated, so executors and routers can
    use it wherever they take a runtime (``pool``, ``spec``, ``backend``, ...).
    """

    def __init__(self, inner: PoolRuntime) -> None:
        self.inner = inner
        self._overrides: ContextVar[Overrides | None] = ContextVar(
            f"moagraph_serve_overrides_{id(self)}", default=None
        )

    def __getattr__(self, name: str) -> Any:  # pool, cache, spec, backend, calls, ...
        return getattr(self.inner, name)

    @contextmanager
    def overrides(self, ov: Overrides) -> Iterator[None]:
        """Apply ``ov`` to every call made in this context (and tasks created from it)."""
        token = self._overrides.set(None if ov.empty else ov)
        try:
            yield
        finally:
            self._overrides.reset(token)

    async def complete(
        self,
        model: str,
        messages: list[ChatMessage] | tuple[ChatMessage, ...],
        params: SamplingParams | None = None,
        *,
        sample_index: int = 0,
        query_id: str | None = None,
        on_token: TokenCallback | None = None,
    ) -> Completion:
        ov = self._overrides.get()
        if ov is not None:
            params = ov.apply(params or SamplingParams())
        return await self.inner.complete(
            model, messages, params, sample_index=sample_index, query_id=query_id, on_token=on_token
        )

    async def aclose(self) -> None:
        await self.inner.aclose()
