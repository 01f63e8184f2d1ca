"""Executor benchmarks: scheduling overhead, and throughput under a concurrency limit.

    .venv/bin/python benchmarks/bench_executor.py [--queries 1000] [--latency-ms 50] [--limit 32]

(a) Overhead: a zero-latency in-process backend, so all measured time is the
    executor's own (prompt building, tasks, tracing, budget checks).
(b) Throughput: many queries of a 5-node graph (3 parallel assistants -> 1
    refiner -> aggregator) against a backend with fixed latency and an
    endpoint concurrency limit. The measured wall time is compared with the
    ideal lower bound max(critical path, total node time / limit) and with
    the sum of node times (what a sequential runner would take).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from moagraph.graph import builders
from moagraph.graph.executor import GraphExecutor
from moagraph.graph.testing import ArithmeticTask, ScriptedBackend, fake_pool
from moagraph.models.runtime import PoolRuntime


async def overhead(graph_name: str, graph, n_queries: int, concurrent: bool) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    task = ArithmeticTask()
    be = ScriptedBackend(respond=lambda r: "The answer is 7", record=False)
    rt = PoolRuntime(fake_pool("m1", max_concurrency=10_000), overrides={"m1": be})
    ex = GraphExecutor(rt, task)
    exs = task.load()
    await ex.run(graph, exs[0])  # warm the plan cache
    t0 = time.perf_counter()
    if concurrent:
        await asyncio.gather(*(ex.run(graph, exs[i % len(exs)]) for i in range(n_queries)))
    else:
        for i in range(n_queries):
            await ex.run(graph, exs[i % len(exs)])
    dt = time.perf_counter() - t0
    return dt, n_queries * len(graph.nodes)


async def throughput(n_queries: int, latency_s: float, limit: int) -> dict[str, float]:
    task = ArithmeticTask()
    be = ScriptedBackend(respond=lambda r: "The answer is 7", latency_s=latency_s, record=False)
    rt = PoolRuntime(fake_pool("m1", max_concurrency=limit), overrides={"m1": be})
    ex = GraphExecutor(rt, task)
    graph = builders.moa([["m1", "m1", "m1"], ["m1"]], "m1")
    assert len(graph.nodes) == 5
    exs = task.load()
    traces = []
    with Progress(transient=True) as prog:
        bar = prog.add_task(f"{n_queries} queries x 5 nodes, limit {limit}", total=n_queries)

        async def one(i: int) -> None:
            traces.append(await ex.run(graph, exs[i % len(exs)]))
            prog.advance(bar)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n_queries)))
        wall = time.perf_counter() - t0
    assert all(t.error is None for t in traces)
    node_time = sum(n.latency_s for t in traces for n in t.nodes)
    crit = sum(t.latency_s for t in traces) / len(traces)
    bound = max(crit, node_time / limit)
    return {"wall": wall, "node_time": node_time, "crit": crit, "bound": bound, "calls": rt.calls}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--limit", type=int, default=32, help="endpoint concurrency limit")
    ap.add_argument("--overhead-queries", type=int, default=2000)
    args = ap.parse_args()
    console = Console()

    t = Table(title="(a) executor overhead, zero-latency backend")
    for c in ("graph", "nodes", "mode", "queries", "total s", "ms / node"):
        t.add_column(c, justify="left" if c in ("graph", "mode") else "right")
    for name, g in [
        ("single", builders.single("m1")),
        ("moa 3+1+agg", builders.moa([["m1"] * 3, ["m1"]], "m1")),
        ("vote x8", builders.parallel_vote("m1", 8)),
        ("chain x6", builders.chain("m1", 6)),
    ]:
        for concurrent in (False, True):
            dt, nodes = asyncio.run(overhead(name, g, args.overhead_queries, concurrent))
            t.add_row(
                name,
                str(len(g.nodes)),
                "concurrent" if concurrent else "sequential",
                str(args.overhead_queries),
                f"{dt:.2f}",
                f"{1000 * dt / nodes:.3f}",
            )
    console.print(t)

    r = asyncio.run(throughput(args.queries, args.latency_ms / 1000, args.limit))
    t2 = Table(
        title=f"(b) {args.queries} queries of a 5-node graph, {args.latency_ms:g} ms/call, concurrency limit {args.limit}"
    )
    t2.add_column("quantity")
    t2.add_column("seconds", justify="right")
    t2.add_column("note")
    t2.add_row("measured wall time", f"{r['wall']:.2f}", f"{int(r['calls'])} calls")
    t2.add_row(
        "ideal: max(critical path, node time / limit)",
        f"{r['bound']:.2f}",
        f"efficiency {r['bound'] / r['wall']:.1%}",
    )
    t2.add_row("critical path per query", f"{r['crit']:.3f}", "3 calls deep")
    t2.add_row(
        "sum of node times (sequential)",
        f"{r['node_time']:.1f}",
        f"speed-up {r['node_time'] / r['wall']:.1f}x",
    )
    console.print(t2)


if __name__ == "__main__":
    main()
