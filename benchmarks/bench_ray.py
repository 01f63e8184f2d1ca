"""Throughput of a model served by 1, 2 and 4 Ray replicas vs the single-process executor.

Every call takes a fixed latency (default 50 ms) and each replica, like the
single-process endpoint, takes a fixed number of calls at once (default 2),
so the single process tops out at concurrency / latency calls per second and
k replicas ideally at k times that. Efficiency = measured / (k x single).
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

    base_qps, base_err, base_wall = run(_pool(a.latency, a.per_replica, None), a.queries, a.latency)
    resources = connect(a.address)
    t = Table(
        title=f"{a.queries} calls, {a.latency * 1000:.0f} ms each, {a.per_replica} in flight "
        f"per replica/endpoint; Ray {resources.get('CPU', 0):.0f} CPUs"
    )
    for col in ("setup", "calls/s", "wall s", "speed-up", "efficiency", "errors"):
        t.add_column(col, justify="left" if col == "setup" else "right")
    t.add_row("single process", f"{base_qps:.1f}", f"{base_wall:.2f}", "1.00", "-", str(base_err))
    for k in a.replicas:
        qps, err, wall = run(_pool(a.latency, a.per_replica, k), a.queries, a.latency)
        t.add_row(
            f"Ray, {k} replica{'s' if k > 1 else ''}",
            f"{qps:.1f}",
            f"{wall:.2f}",
            f"{qps / base_qps:.2f}",
            f"{qps / (k * base_qps):.2f}",
            str(err),
        )
    Console().print(t)


if __name__ == "__main__":
    main()
