"""PoolRuntime: backends from pool files, the cache in front, concurrency limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from moagraph.models.base import (
    BackendError,
    Completion,
    LLMRequest,
    ReplayMiss,
    SamplingParams,
    TokenCallback,
)
from moagraph.models.cache import CallCache
from moagraph.models.llamacpp import LlamaCppBackend
from moagraph.models.openai_compat import OpenAICompatBackend
from moagraph.models.pool import ModelSpec, load_pool, pool_from_dict
from moagraph.models.replay import ReplayBackend, write_records
from moagraph.models.runtime import PoolRuntime
from moagraph.pools import resolve_pool

POOL_YAML = """
name: mixed
models:
  - {name: small, backend: replay, replay: rec/small.jsonl, params_b: 1, layers: 16, hidden_size: 2048}
  - {name: big, backend: replay, replay: rec/small.jsonl, replay_model: other, params_b: 8, layers: 32, hidden_size: 4096}
  - {name: remote, backend: openai, base_url: "http://127.0.0.1:9/v1", params_b: 8, layers: 32, hidden_size: 4096}
  - {name: gguf, backend: llamacpp, model: x.gguf, params_b: 1, layers: 2, hidden_size: 8}
"""
Q = ({"role": "user", "content": "q?"},)


def make_pool(tmp_path: Path) -> Path:
    write_records(
        tmp_path / "rec" / "small.jsonl",
        [
            {
                "model": "small",
                "query_id": "q1",
                "sample": 0,
                "text": "A",
                "prompt_tokens": 5,
                "completion_tokens": 1,
                "latency_s": 0.1,
                "score": 1.0,
            },
            {
                "model": "other",
                "query_id": "q1",
                "sample": 0,
                "text": "B",
                "prompt_tokens": 5,
                "completion_tokens": 1,
                "latency_s": 0.2,
            },
        ],
    )
    p = tmp_path / "pool.yaml"
    p.write_text(POOL_YAML)
    return p


async def test_backends_from_a_pool_file(tmp_path: Path) -> None:
    rt = PoolRuntime.from_path(make_pool(tmp_path), tmp_path / "cache.sqlite")
    assert isinstance(rt.backend("small"), ReplayBackend)
    assert isinstance(rt.backend("remote"), OpenAICompatBackend)
    assert isinstance(rt.backend("gguf"), LlamaCppBackend)  # nothing loaded until a call
    assert rt.backend("small") is rt.backend("small")
    # Replay paths resolve relative to the pool file, and replay_model maps names.
    a = await rt.complete("small", Q, query_id="q1")
    b = await rt.complete("big", Q, query_id="q1")
    assert (a.text, a.meta["score"], b.text) == ("A", 1.0, "B")
    # Replays are not copied into the call cache (the recording is the cache), but are counted.
    assert rt.calls == 2 and rt.cache is not None and len(rt.cache) == 0
    with pytest.raises(ReplayMiss):
        await rt.complete("small", Q, query_id="q2")
    assert rt.calls == 3
    with pytest.raises(KeyError, match="known: small, big, remote, gguf"):
        await rt.complete("nope", Q)
    await rt.aclose()


class SlowBackend:
    """Fake backend (orchestration test): records the most calls in flight at once."""

    kind = "fake"

    def __init__(self, fail: bool = False) -> None:
        self.in_flight = self.peak = 0
        self.fail = fail

    def identity(self, model: ModelSpec) -> str:
        return "slow"

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0.02)
        self.in_flight -= 1
        if self.fail:
            raise BackendError("boom", model=request.model.name)
        return Completion(str(request.sample_index), 1, 1, 0.02, request.model.name, "fake")

    async def aclose(self) -> None:
        pass


def spec(name: str, **kw: object) -> dict[str, object]:
    return {
        "name": name,
        "backend": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "params_b": 1,
        "layers": 2,
        "hidden_size": 8,
        **kw,
    }


async def test_endpoint_concurrency_is_limited_and_shared() -> None:
    # Two models behind one endpoint share its limit (the first model's max_concurrency).
    pool = pool_from_dict(
        {
            "models": [
                spec("a", max_concurrency=2),
                spec("b", max_concurrency=2),
                spec("c", base_url="http://127.0.0.1:10/v1", max_concurrency=1),
            ]
        }
    )
    shared, solo = SlowBackend(), SlowBackend()
    rt = PoolRuntime(pool, overrides={"a": shared, "b": shared, "c": solo})
    await asyncio.gather(
        *(rt.complete(m, Q, sample_index=i) for i in range(4) for m in ("a", "b", "c"))
    )
    assert shared.peak == 2 and solo.peak == 1 and rt.calls == 12


async def test_failed_calls_are_counted_and_not_cached(tmp_path: Path) -> None:
    pool = pool_from_dict({"models": [spec("a")]})
    rt = PoolRuntime(
        pool, cache=CallCache(tmp_path / "c.sqlite"), overrides={"a": SlowBackend(fail=True)}
    )
    for _ in range(2):
        with pytest.raises(BackendError, match="boom"):
            await rt.complete("a", Q)
    assert rt.calls == 2 and rt.cache_hits == 0 and rt.cache is not None and len(rt.cache) == 0
    await rt.aclose()


@pytest.mark.local_model
async def test_local_pool_end_to_end_with_cache(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    pool = load_pool(resolve_pool("local"))
    params = SamplingParams(max_tokens=8)
    rt = PoolRuntime(pool, cache=CallCache(tmp_path / "c.sqlite"))
    first = await rt.complete("gemma-270m", Q, params)
    assert rt.calls == 1 and first.completion_tokens > 0 and not first.cached
    await rt.aclose()
    rt2 = PoolRuntime(pool, cache=CallCache(tmp_path / "c.sqlite"))
    second = await rt2.complete("gemma-270m", Q, params)
    assert rt2.calls == 0 and second.cached and second.text == first.text
    assert rt2.backend("gemma-270m").worker_pid is None  # type: ignore[attr-defined]  # never started
    await rt2.aclose()
