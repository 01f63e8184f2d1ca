"""Overhead of the SQLite call cache per LLM call (hit and miss).

The cache sits in front of every call, so its cost must stay far below a
real call (tens of ms to seconds). Measures raw CallCache operations and the
full PoolRuntime.complete path against a zero-latency backend.

    .venv/bin/python benchmarks/bench_cache.py [--n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

from moagraph.models.base import Completion, LLMRequest, SamplingParams, TokenCallback
from moagraph.models.cache import CallCache, cache_key
from moagraph.models.pool import ModelSpec, pool_from_dict
from moagraph.models.runtime import PoolRuntime

SPEC = {
    "name": "m",
    "backend": "openai",
    "base_url": "http://127.0.0.1:9/v1",
    "params_b": 1,
    "layers": 2,
    "hidden_size": 8,
}
TEXT = "The answer is 42. " * 40  # ~180 tokens of output


class InstantBackend:
    kind = "instant"

    def identity(self, model: ModelSpec) -> str:
        return "instant"

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        return Completion(TEXT, 200, 180, 0.0, request.model.name, self.kind)

    async def aclose(self) -> None:
        pass


def messages(i: int) -> tuple[dict[str, str], ...]:
    return (
        {"role": "system", "content": "You are a careful solver."},
        {"role": "user", "content": f"Question {i}: " + "x " * 300},
    )


def per_call_us(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples) * 1e6, statistics.quantiles(samples, n=20)[-1] * 1e6


def bench_raw(n: int, folder: Path) -> dict[str, list[float]]:
    spec = ModelSpec(**SPEC)  # type: ignore[arg-type]
    reqs = [LLMRequest(model=spec, messages=messages(i), params=SamplingParams()) for i in range(n)]
    out: dict[str, list[float]] = {"cache_key": [], "get (miss)": [], "put": [], "get (hit)": []}
    completion = Completion(TEXT, 200, 180, 1.0, "m", "x")
    with CallCache(folder / "raw.sqlite") as cache:
        for r in track(reqs, description="raw CallCache"):
            t0 = time.perf_counter()
            k = cache_key("instant", r)
            t1 = time.perf_counter()
            cache.get(k)
            t2 = time.perf_counter()
            cache.put(k, completion)
            t3 = time.perf_counter()
            out["cache_key"].append(t1 - t0)
            out["get (miss)"].append(t2 - t1)
            out["put"].append(t3 - t2)
        for r in reqs:
            k = cache_key("instant", r)
            t0 = time.perf_counter()
            cache.get(k)
            out["get (hit)"].append(time.perf_counter() - t0)
    return out


async def bench_runtime(n: int, folder: Path) -> dict[str, list[float]]:
    pool = pool_from_dict({"models": [SPEC]})
    out: dict[str, list[float]] = {"no cache": [], "cache miss": [], "cache hit": []}

    async def run(rt: PoolRuntime, label: str) -> None:
        for i in range(n):
            t0 = time.perf_counter()
            await rt.complete("m", messages(i))
            out[label].append(time.perf_counter() - t0)

    await run(PoolRuntime(pool, overrides={"m": InstantBackend()}), "no cache")
    rt = PoolRuntime(pool, cache=CallCache(folder / "rt.sqlite"), overrides={"m": InstantBackend()})
    await run(rt, "cache miss")
    await run(rt, "cache hit")
    assert rt.calls == n and rt.cache_hits == n
    await rt.aclose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="calls per measurement")
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as d:
        raw = bench_raw(args.n, Path(d))
        rt = asyncio.run(bench_runtime(args.n, Path(d)))
    table = Table(title=f"Call cache overhead per call (n={args.n}, SQLite WAL, commit per put)")
    table.add_column("operation")
    table.add_column("median µs", justify="right")
    table.add_column("p95 µs", justify="right")
    for name, samples in raw.items():
        med, p95 = per_call_us(samples)
        table.add_row(f"CallCache {name}", f"{med:,.1f}", f"{p95:,.1f}")
    base_med, _ = per_call_us(rt["no cache"])
    for name, samples in rt.items():
        med, p95 = per_call_us(samples)
        extra = "" if name == "no cache" else f"  (+{med - base_med:,.1f})"
        table.add_row(f"PoolRuntime.complete, {name}", f"{med:,.1f}{extra}", f"{p95:,.1f}")
    console.print(table)
    console.print(
        "A miss costs key + lookup + put on top of the real call; a hit replaces the call."
    )


if __name__ == "__main__":
    main()
