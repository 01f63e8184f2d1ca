"""The SQLite call cache: keys, persistence, PoolRuntime wiring, concurrent writers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from moagraph.models.base import Completion, LLMRequest, SamplingParams, TokenCallback
from moagraph.models.cache import CallCache, cache_key
from moagraph.models.pool import ModelSpec, pool_from_dict
from moagraph.models.runtime import PoolRuntime

SPEC = ModelSpec(name="m", backend="llamacpp", model="a.gguf", params_b=1, layers=2, hidden_size=8)
MSGS = ({"role": "user", "content": "What is 2+2?"},)


def completion(text: str = "4", **kw: object) -> Completion:
    base: dict[str, object] = {
        "text": text,
        "prompt_tokens": 7,
        "completion_tokens": 1,
        "latency_s": 0.25,
        "model": "m",
        "backend": "fake",
    }
    base.update(kw)
    return Completion(**base)  # type: ignore[arg-type]


class CountingBackend:
    """Fake backend for orchestration tests: counts calls, answers deterministically."""

    kind = "fake"

    def __init__(self) -> None:
        self.calls = 0

    def identity(self, model: ModelSpec) -> str:
        return f"fake:{model.endpoint_model}"

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        self.calls += 1
        text = f"{request.messages[-1]['content']}#{request.sample_index}"
        if on_token is not None:
            on_token(text)
        return completion(text, model=request.model.name, meta={"n": self.calls})

    async def aclose(self) -> None:
        pass


def test_key_changes_with_everything_that_changes_the_answer() -> None:
    req = LLMRequest(model=SPEC, messages=MSGS)
    k = cache_key("id", req)
    assert k == cache_key("id", LLMRequest(model=SPEC, messages=tuple(dict(m) for m in MSGS)))  # type: ignore[misc]
    others = [
        cache_key("other-id", req),
        cache_key(
            "id", LLMRequest(model=SPEC, messages=({"role": "user", "content": "What is 2+3?"},))
        ),
        cache_key(
            "id", LLMRequest(model=SPEC, messages=({"role": "system", "content": "What is 2+2?"},))
        ),
        cache_key("id", LLMRequest(model=SPEC, messages=MSGS, sample_index=1)),
        cache_key(
            "id", LLMRequest(model=SPEC, messages=MSGS, params=SamplingParams(temperature=0.7))
        ),
        cache_key(
            "id", LLMRequest(model=SPEC, messages=MSGS, params=SamplingParams(max_tokens=10))
        ),
        cache_key("id", LLMRequest(model=SPEC, messages=MSGS, params=SamplingParams(stop=("\n",)))),
        cache_key(
            "id", LLMRequest(model=SPEC.model_copy(update={"model": "b.gguf"}), messages=MSGS)
        ),
    ]
    assert len({k, *others}) == len(others) + 1


def test_put_get_persists_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.sqlite"
    with CallCache(path) as cache:
        assert cache.get("k") is None
        cache.put("k", completion("héllo", meta={"ttft_s": 0.1}, finish_reason="length"))
        assert cache.stats.misses == 1 and cache.stats.puts == 1
    with CallCache(path) as again:  # a new process would see the same
        hit = again.get("k")
        assert hit is not None and hit.cached
        assert (hit.text, hit.prompt_tokens, hit.completion_tokens, hit.latency_s) == (
            "héllo",
            7,
            1,
            0.25,
        )
        assert hit.finish_reason == "length" and hit.meta == {"ttft_s": 0.1}
        assert again.stats.hits == 1 and len(again) == 1 and "k" in again
    with pytest.raises(RuntimeError, match="closed"):
        again.get("k")


async def test_second_run_makes_no_backend_call(tmp_path: Path) -> None:
    pool = pool_from_dict({"models": [SPEC.model_dump()]})
    fake = CountingBackend()
    rt = PoolRuntime(pool, cache=CallCache(tmp_path / "c.sqlite"), overrides={"m": fake})
    first = [await rt.complete("m", MSGS, sample_index=i) for i in range(3)]
    assert fake.calls == 3 and rt.calls == 3 and not any(c.cached for c in first)
    await rt.aclose()

    fake2 = CountingBackend()
    rt2 = PoolRuntime(pool, cache=CallCache(tmp_path / "c.sqlite"), overrides={"m": fake2})
    streamed: list[str] = []
    second = [
        await rt2.complete("m", MSGS, sample_index=i, on_token=streamed.append) for i in range(3)
    ]
    assert fake2.calls == 0 and rt2.calls == 0 and rt2.cache_hits == 3
    assert [c.text for c in second] == [c.text for c in first] == streamed
    assert all(c.cached for c in second)
    # A new sample index is a new call.
    await rt2.complete("m", MSGS, sample_index=3)
    assert fake2.calls == 1 and rt2.calls == 1
    await rt2.aclose()


def test_threads_share_one_cache(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "t.sqlite")

    def work(t: int) -> None:
        for i in range(50):
            cache.put(f"{t}-{i}", completion(f"{t}-{i}"))
            assert cache.get(f"{t}-{i}") is not None

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(cache) == 200 and cache.stats.hits == 200
    cache.close()


WRITER = textwrap.dedent(
    """
    import sys
    from moagraph.models.base import Completion
    from moagraph.models.cache import CallCache
    path, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cache = CallCache(path)
    for i in range(n):
        cache.put(f"{worker}-{i}", Completion(f"text {worker} {i}", 3, 4, 0.5, "m", "fake"))
    cache.close()
    """
)


def test_several_processes_writing_one_file_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    workers, n = 4, 100
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(w), str(n)], stderr=subprocess.PIPE
        )
        for w in range(workers)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    with CallCache(path) as cache:
        assert len(cache) == workers * n
        for w in range(workers):
            for i in (0, n // 2, n - 1):
                hit = cache.get(f"{w}-{i}")
                assert hit is not None and hit.text == f"text {w} {i}"
