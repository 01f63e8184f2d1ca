"""Evaluate a policy on a task: concurrent queries, graded, stored as they finish.

Each finished query is committed to the :class:`~moagraph.store.RunStore`
before the next result is awaited, so ``resume=True`` continues a killed
run without calling the model again for any query it already finished.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from moagraph.graph.executor import BudgetExceeded
from moagraph.graph.trace import Policy, Trace
from moagraph.store import ResultRow, RunStore, RunStoreError
from moagraph.tasks.base import Example, Task

__all__ = ["EvalReport", "aevaluate", "evaluate", "grade_trace", "report_table", "wilson_interval"]


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval; well-behaved at p = 0 or 1 and for small n,
    which is where our sample-split evaluations live."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class EvalReport:
    policy: str
    task: str
    run_id: str | None
    n: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    mean_flops: float
    mean_flops_norm: float | None
    mean_dollars: float
    mean_latency_s: float  # critical path
    mean_wall_s: float
    errors: int
    cache_hits: int
    resumed: int  # results taken from the store instead of recomputed
    elapsed_s: float
    rows: list[ResultRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> Table:
        """Metric/value table for one report (fits a terminal; see :func:`report_table`)."""
        t = Table(
            title=f"{self.policy} on {self.task}" + (f" (run {self.run_id})" if self.run_id else "")
        )
        t.add_column("metric")
        t.add_column("value", justify="right")
        acc = (
            "n/a (ungraded)"
            if self.accuracy is None
            else f"{self.accuracy:.3f}  95% CI [{self.ci_low:.3f}, {self.ci_high:.3f}]"
        )
        for k, v in [
            (
                "queries",
                f"{self.n}" + (f" ({self.resumed} from the store)" if self.resumed else ""),
            ),
            ("accuracy", acc),
            (
                "mean FLOPs (normalised)",
                "n/a" if self.mean_flops_norm is None else f"{self.mean_flops_norm:.4g}",
            ),
            ("mean FLOPs (absolute)", f"{self.mean_flops:.4g}"),
            ("mean $ / query", f"{self.mean_dollars:.4g}"),
            ("mean latency s (critical path)", f"{self.mean_latency_s:.3f}"),
            ("mean wall s / query", f"{self.mean_wall_s:.3f}"),
            ("errors", str(self.errors)),
            ("cache hits (calls)", str(self.cache_hits)),
            ("elapsed s", f"{self.elapsed_s:.1f}"),
        ]:
            t.add_row(k, v)
        return t


def report_table(reports: Sequence[EvalReport], title: str = "Evaluation") -> Table:
    """One row per report: what people compare (accuracy vs cost vs latency)."""
    t = Table(title=title)
    for col, just in [
        ("policy", "left"),
        ("task", "left"),
        ("n", "right"),
        ("accuracy (95% CI)", "right"),
        ("FLOPs (norm)", "right"),
        ("FLOPs", "right"),
        ("$ / query", "right"),
        ("latency s", "right"),
        ("wall s", "right"),
        ("errors", "right"),
        ("cache hits", "right"),
    ]:
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in reports:
        acc = (
            "n/a (ungraded)"
            if r.accuracy is None
            else f"{r.accuracy:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
        )
        t.add_row(
            r.policy,
            r.task,
            str(r.n),
            acc,
            "n/a" if r.mean_flops_norm is None else f"{r.mean_flops_norm:.3g}",
            f"{r.mean_flops:.3g}",
            f"{r.mean_dollars:.3g}",
            f"{r.mean_latency_s:.3g}",
            f"{r.mean_wall_s:.3g}",
            str(r.errors),
            str(r.cache_hits),
        )
    return t


async def grade_trace(task: Task, trace: Trace, example: Example) -> float | None:
    """Score a trace: 0 on error; a replayed score for chat tasks; else ``task.grade``.

    Tasks with ``gradable = False`` (open chat with no judge) score only from a
    replayed judge score, else None.
    """
    if trace.error is not None:
        return 0.0
    replayed = trace.meta.get("sink_score")
    if getattr(task, "kind", None) == "chat" and replayed is not None:
        return float(replayed)
    if getattr(task, "gradable", True) is False:
        return None if replayed is None else float(replayed)
    agrade = getattr(task, "agrade", None)  # tasks decide what runs off the loop (code sandboxes)
    if agrade is not None:
        return float(await agrade(trace.output, example))
    return float(task.grade(trace.output, example))


async def aevaluate(
    policy: Policy,
    task: Task,
    examples: Sequence[Example],
    *,
    store: RunStore | None = None,
    run_id: str | None = None,
    resume: bool = False,
    concurrency: int = 8,
    progress: bool = True,
    unit_flops: float | None = None,
    config: dict[str, Any] | None = None,
    retry_errors: bool = False,
) -> EvalReport:
    """Async :func:`evaluate`, for callers already inside an event loop (search, server)."""
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency}: must be >= 1")
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        raise ValueError("examples: ids must be unique (the store keys results by example id)")
    unit = unit_flops if unit_flops is not None else getattr(policy, "unit_flops", None)
    t0 = time.perf_counter()
    if store is not None:
        # A random suffix: two runs started in the same second must not collide.
        run_id = (
            run_id
            or f"{policy.name}-{task.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        )
        cfg = {"policy": policy.name, "task": task.name, "n": len(examples), **(config or {})}
        # strict: resuming needs the run to exist with this very configuration, or the
        # stored results would be reported as if this configuration had produced them.
        store.create_run(run_id, cfg, resume=resume, strict=True)
    elif resume:
        raise ValueError("resume=True needs a store (pass --store PATH)")
    skip = (
        store.finished_ids(run_id, include_errors=not retry_errors)
        if store and run_id and resume
        else set()
    )
    todo = [ex for ex in examples if ex.id not in skip]
    mem_rows: dict[str, ResultRow] = {}
    sem = asyncio.Semaphore(concurrency)

    async def one(ex: Example) -> None:
        async with sem:
            try:
                trace = await policy.answer(ex, task)
            except BudgetExceeded:
                raise
            except Exception as e:
                trace = Trace(query_id=ex.id, policy=policy.name, error=f"{type(e).__name__}: {e}")
            try:
                trace.score = await grade_trace(task, trace, ex)
            except Exception as e:
                trace.score, trace.error = 0.0, f"grading failed: {type(e).__name__}: {e}"
        fn = trace.flops / unit if unit else None
        if store is not None:
            store.add_result(run_id, trace, flops_norm=fn)  # type: ignore[arg-type]
        mem_rows[ex.id] = ResultRow(
            ex.id,
            trace.score,
            trace.flops,
            fn,
            trace.dollars,
            trace.latency_s,
            trace.wall_s,
            trace.cache_hits,
            trace.error,
        )

    status = "interrupted"
    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not progress,
        transient=False,
    )
    try:
        with prog:
            bar = prog.add_task(
                f"{policy.name} on {task.name}",
                total=len(examples),
                completed=len(examples) - len(todo),
            )
            pending = [asyncio.create_task(one(ex)) for ex in todo]
            try:
                for fut in asyncio.as_completed(pending):
                    await fut
                    prog.advance(bar)
            finally:
                for p in pending:
                    p.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        status = "done"
    finally:
        if store is not None:
            try:
                store.set_status(run_id, status)  # type: ignore[arg-type]
            except RunStoreError:
                if status == "done":  # else keep the error that stopped the run
                    raise
    if store is not None:
        wanted = set(ids)
        rows = [r for r in store.results(run_id) if r.example_id in wanted]  # type: ignore[arg-type]
    else:
        rows = [mem_rows[i] for i in ids if i in mem_rows]
    return _summarise(
        policy.name, task.name, run_id, rows, len(examples) - len(todo), time.perf_counter() - t0
    )


def _summarise(
    policy: str, task: str, run_id: str | None, rows: list[ResultRow], resumed: int, elapsed: float
) -> EvalReport:
    n = len(rows)
    scored = [r.score for r in rows if r.score is not None]
    acc = sum(scored) / len(scored) if scored else None
    lo, hi = wilson_interval(sum(scored), len(scored)) if scored else (None, None)
    norm = [r.flops_norm for r in rows if r.flops_norm is not None]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else 0.0

    return EvalReport(
        policy=policy,
        task=task,
        run_id=run_id,
        n=n,
        accuracy=acc,
        ci_low=lo,
        ci_high=hi,
        mean_flops=mean([r.flops for r in rows]),
        mean_flops_norm=mean(norm) if norm and len(norm) == n else None,
        mean_dollars=mean([r.dollars for r in rows]),
        mean_latency_s=mean([r.latency_s for r in rows]),
        mean_wall_s=mean([r.wall_s for r in rows]),
        errors=sum(1 for r in rows if r.error is not None),
        cache_hits=sum(r.cache_hits for r in rows),
        resumed=resumed,
        elapsed_s=elapsed,
        rows=rows,
    )


def as_policy(policy: Any, task: Task, *, pool: Any = None, runtime: Any = None) -> Policy:
    """A Graph becomes a :class:`GraphPolicy` on ``runtime`` (or a runtime for ``pool``: a
    bundled name, a file or a Pool); a router or any other Policy is returned as is."""
    from moagraph.graph.spec import Graph

    if not isinstance(policy, Graph):
        return policy
    from moagraph.graph.executor import GraphExecutor
    from moagraph.graph.policy import GraphPolicy
    from moagraph.models.pool import Pool, load_pool
    from moagraph.models.runtime import PoolRuntime

    if runtime is None:
        if pool is None:
            raise ValueError("evaluate(graph, ...): pass pool= (a name, file or Pool) or runtime=")
        runtime = PoolRuntime(pool if isinstance(pool, Pool) else load_pool(pool))
    return GraphPolicy(policy, GraphExecutor(runtime, task))


def evaluate(
    policy: Any,
    task: Task | str,
    examples: Sequence[Example],
    *,
    pool: Any = None,
    runtime: Any = None,
    **kwargs: Any,
) -> EvalReport:
    """Evaluate a graph or a router on ``examples`` (blocking): one function for both.

    ``policy``: a :class:`~moagraph.graph.spec.Graph` (run on ``runtime``, or on a new
    runtime for ``pool``) or any Policy (a router from :func:`moagraph.load_router`, a
    GraphPolicy). ``task``: a Task or its name. Other arguments: :func:`aevaluate`.

    >>> import moagraph
    >>> from moagraph.tasks.base import Example
    >>> pool = moagraph.load_pool("zeroeval-math")  # bundled replay pool: recorded answers
    >>> q = Example(id="zeroeval-math/0", question="Find the sum ...", reference="-15")
    >>> graph = moagraph.builders.single("Athene-70B")
    >>> report = moagraph.evaluate(graph, "math", [q], pool=pool, progress=False)
    >>> report.n, report.errors  # Athene-70B's recorded answer, graded by the math task
    (1, 0)
    """
    if isinstance(task, str):
        from moagraph.tasks.registry import get_task

        task = get_task(task)
    policy = as_policy(policy, task, pool=pool, runtime=runtime)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(aevaluate(policy, task, examples, **kwargs))
    raise RuntimeError("evaluate() called inside a running event loop; use `await aevaluate(...)`")
