"""The live side of a pool: one backend per model, endpoint concurrency, cache.

Everything above this layer (executor, routers, recorder, server) calls
:meth:`PoolRuntime.complete` with a pool model name; this is the single
place where the call cache and per-endpoint concurrency limits apply.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from moagraph.models.base import (
    Backend,
    BackendError,
    ChatMessage,
    Completion,
    LLMRequest,
    SamplingParams,
    TokenCallback,
    emit,
)
from moagraph.models.pool import ModelSpec, Pool

if TYPE_CHECKING:
    from moagraph.models.cache import CallCache


def make_backend(spec: ModelSpec, pool: Pool) -> Backend:
    """Build the backend for one pool model (imports are lazy: extras stay optional)."""
    if spec.ray is not None:  # replicas on a Ray cluster, each building the backend below
        from moagraph.scale.ray_backend import RayBackend

        return RayBackend(spec, pool)
    if spec.backend == "openai":
        from moagraph.models.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(spec)
    if spec.backend == "llamacpp":
        from moagraph.models.llamacpp import LlamaCppBackend

        return LlamaCppBackend(spec)
    if spec.backend == "replay":
        from moagraph.models.replay import ReplayBackend

        assert spec.replay is not None
        return ReplayBackend(spec, pool.resolve(spec.replay))
    raise BackendError(f"model {spec.name!r}: unknown backend {spec.backend!r}")


class PoolRuntime:
    """Backends for every model of a pool, created on first use.

    ``overrides`` maps a model name to a ready backend instance (tests, or a
    replay pool in record mode wrapping a live backend).
    """

    def __init__(
        self,
        pool: Pool,
        cache: CallCache | None = None,
        overrides: dict[str, Backend] | None = None,
    ) -> None:
        self.pool = pool
        self.cache = cache
        self._backends: dict[str, Backend] = dict(overrides or {})
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self.calls = 0  # backend calls actually made (cache misses, failures included)
        self.cache_hits = 0  # calls answered by the cache

    @classmethod
    def from_path(cls, pool_path: str | Path, cache_path: str | Path | None = None) -> PoolRuntime:
        from moagraph.models.cache import CallCache
        from moagraph.models.pool import load_pool

        cache = CallCache(cache_path) if cache_path else None
        return cls(load_pool(pool_path), cache=cache)

    def spec(self, model: str) -> ModelSpec:
        return self.pool[model]

    def backend(self, model: str) -> Backend:
        if model not in self._backends:
            self._backends[model] = make_backend(self.pool[model], self.pool)
        return self._backends[model]

    def _semaphore(self, spec: ModelSpec) -> asyncio.Semaphore:
        # Models behind one endpoint share its concurrency limit.
        key = spec.base_url or f"{spec.backend}:{spec.name}"
        # A backend serving from several places (Ray replicas) says how many calls it takes.
        limit = getattr(self._backends.get(spec.name), "max_in_flight", None)
        if limit is not None:
            key = f"{key}#{spec.name}"
        sem = self._semaphores.get(key)
        if sem is None:
            sem = self._semaphores[key] = asyncio.Semaphore(limit or spec.max_concurrency)
        return sem

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
        spec = self.pool[model]
        request = LLMRequest(
            model=spec,
            messages=tuple(messages),
            params=params or SamplingParams(),
            sample_index=sample_index,
            query_id=query_id,
        )
        backend = self.backend(model)
        key = None
        # A replay backend is its own store: caching it would only duplicate the file.
        if self.cache is not None and getattr(backend, "cacheable", True):
            from moagraph.models.cache import cache_key

            key = cache_key(backend.identity(spec), request)
            hit = self.cache.get(key)
            if hit is not None:
                self.cache_hits += 1
                await emit(on_token, hit.text)
                return hit
        async with self._semaphore(spec):
            self.calls += 1  # counted when made, so failed calls count too
            completion = await backend.complete(request, on_token)
        if key is not None and self.cache is not None:
            self.cache.put(key, completion)
        return completion

    async def aclose(self) -> None:
        for b in self._backends.values():
            await b.aclose()
        if self.cache is not None:
            self.cache.close()
