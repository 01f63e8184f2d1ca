"""Per-request sampling overrides for every LLM call a served request makes.

A request's ``temperature``/``max_tokens``/``top_p``/``seed``/``stop`` must
reach the calls that a graph *or a router* makes on its behalf, but routers
are built once, bound to a runtime. So the server hands every policy this
wrapper, which applies the overrides of the request whose context the call
runs in (a ContextVar owned by the wrapper instance; asyncio tasks copy the
context, so concurrent nodes of one request see their request's overrides).

The wrapper also takes over the runtime's call cache and uses it through
:meth:`CallCache.aget`/:meth:`CallCache.aput` (reader/writer threads): the
event loop never waits on SQLite, so another process holding the cache file
locked slows its own requests at most, never ``/health`` or other requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from moagraph.models.base import (
    ChatMessage,
    Completion,
    LLMRequest,
    SamplingParams,
    TokenCallback,
    emit,
)
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
        # The cache is used off the event loop from here (see complete); the inner runtime's
        # synchronous cache calls would block the loop, so it no longer sees the cache.
        self.cache = getattr(inner, "cache", None)
        if self.cache is not None:
            inner.cache = None
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
        cache = self.cache
        key = None
        if cache is not None:
            backend = self.inner.backend(model)
            if getattr(backend, "cacheable", True):  # as PoolRuntime: replay pools are not cached
                from moagraph.models.cache import cache_key

                spec = self.inner.pool[model]
                request = LLMRequest(
                    model=spec,
                    messages=tuple(messages),
                    params=params or SamplingParams(),
                    sample_index=sample_index,
                    query_id=query_id,
                )
                key = cache_key(backend.identity(spec), request)
                hit = await cache.aget(key)
                if hit is not None:
                    self.inner.cache_hits += 1
                    await emit(on_token, hit.text)
                    return hit
        completion = await self.inner.complete(
            model, messages, params, sample_index=sample_index, query_id=query_id, on_token=on_token
        )
        if key is not None and cache is not None:
            cache.aput(key, completion)
        return completion

    async def aclose(self) -> None:
        await self.inner.aclose()
        if self.cache is not None:
            import asyncio

            await asyncio.to_thread(self.cache.close)  # writes what is queued, then closes
