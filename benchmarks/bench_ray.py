"""Throughput of a model served by 1, 2 and 4 Ray replicas vs the single-process executor,
compared at equal concurrency.

Every call takes a fixed latency (default 50 ms) and each replica takes a fixed
number of calls at once (default 2), so k replicas allow k x per-replica calls in
flight. Each Ray row is compared with the single process allowed the same number
of calls in flight (its own row): with a fixed-latency backend, more calls in
flight alone buys throughput, so comparing 4 replicas (8 in flight) with a single
process allowed 2 measures the concurrency, not Ray. The first row (2 in flight)
is the old reference. Efficiency = Ray / single process at the same concurrency.
Runs on a private Ray cluster on loopback (``--ray local``), or on
``--address HEAD:PORT``.

    .venv/bin/python benchmarks/bench_ray.py [--queries 200] [--latency 0.05] [--per-replica 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from rich.console import Console
from rich.table import Table

from moagraph.graph.builders import single
from moagraph.graph.evaluate import aevaluate
from moagraph.graph.executor import GraphExecutor
from moagraph.graph.policy import GraphPolicy
from moagraph.graph.testing import ArithmeticTask, ScriptedBackend, fake_pool
from moagraph.models.pool import Pool
from moagraph.models.runtime import PoolRuntime
from moagraph.scale.spec import RaySpec


def _pool(latency: float, per_replica: int, replicas: int | None) -> Pool:
    spec = fake_pool("m1", max_concurrency=per_replica).models[0]
    if replicas is not None:
        spec = spec.model_copy(
            update={
                "ray": RaySpec(
                    replicas=replicas,
                    num_cpus=0,
                    max_concurrency=per_replica,
                    factory="moagraph.scale.testing:fixed_latency",
                ),
                "extra": {"latency_s": latency},
            }
        )
    return Pool(name="bench", models=[spec])


def _task_and_examples(n: int):  # type: ignore[no-untyped-def]
    task = ArithmeticTask()
    base = task.load()
    from moagraph.tasks.base import Example

    exs = [
        Example(
            id=f"q{i}",
            question=base[i % len(base)].question,
            reference=base[i % len(base)].reference,
        )
        for i in range(n)
    ]
    return task, exs


def run(pool: Pool, n: int, latency: float) -> tuple[float, int, float]:
    task, examples = _task_and_examples(n)
    overrides = None
    if pool.models[0].ray is None:
        overrides = {
            "m1": ScriptedBackend(
                respond=lambda r: "The answer is 0.", latency_s=latency, record=False
            )
        }
    runtime = PoolRuntime(pool, overrides=overrides)  # type: ignore[arg-type]
    policy = GraphPolicy(single("m1"), GraphExecutor(runtime, task))

    async def go() -> tuple[float, int]:
        runtime.backend("m1")  # replicas start before the clock does
        await aevaluate(policy, task, examples[:8], concurrency=256, progress=False)  # warm-up
        t0 = time.perf_counter()
        rep = await aevaluate(policy, task, examples, concurrency=256, progress=False)
        wall = time.perf_counter() - t0
        await runtime.aclose()
        return wall, rep.errors

    wall, errors = asyncio.run(go())
    return n / wall, errors, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--per-replica", type=int, default=2)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--address", default="local", help="Ray address, or 'local' (default)")
    a = ap.parse_args()

    from moagraph.scale.cluster import connect

    single: dict[int, tuple[float, int, float]] = {}
    for k in sorted({1, *a.replicas}):
        single[k] = run(_pool(a.latency, k * a.per_replica, None), a.queries, a.latency)
    resources = connect(a.address)
    t = Table(
        title=f"{a.queries} calls, {a.latency * 1000:.0f} ms each; Ray {resources.get('CPU', 0):.0f} "
        f"CPUs; each Ray row vs the single process at the SAME number of calls in flight"
    )
    for col in ("setup", "in flight", "calls/s", "wall s", "vs single, same in flight", "errors"):
        t.add_column(col, justify="left" if col == "setup" else "right")
    for k in a.replicas:
        flight = k * a.per_replica
        s_qps, s_err, s_wall = single[k]
        t.add_row(
            "single process", str(flight), f"{s_qps:.1f}", f"{s_wall:.2f}", "1.00", str(s_err)
        )
        qps, err, wall = run(_pool(a.latency, a.per_replica, k), a.queries, a.latency)
        t.add_row(
            f"Ray, {k} replica{'s' if k > 1 else ''} x {a.per_replica}",
            str(flight),
            f"{qps:.1f}",
            f"{wall:.2f}",
            f"{qps / s_qps:.2f}",
            str(err),
        )
    Console().print(t)
    print(
        "Compared at equal concurrency: each Ray row and the single-process row above it "
        "allow the same number of calls in flight (replicas x per-replica). Ray adds "
        "throughput only where one process cannot hold that many calls (CPU-bound local "
        "models, or more machines), not for a fixed-latency endpoint."
    )


if __name__ == "__main__":
    main()
