"""`moagraph eval` and `moagraph draw`.

``moagraph eval`` with no arguments runs the embedded defaults (the bundled
``local`` pool, one call of its first model, the bundled gsm8k sample), so a
fresh install shows a real result table within about a minute, offline.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from moagraph.cli import app
from moagraph.cli._errors import fail
from moagraph.cli._options import DEFAULT_STORE, deprecated, opt, resolve_budget, resolve_task

console = Console()


@app.command("eval")
def eval_command(
    graph: Annotated[
        str | None, opt("--graph", "Default: one call of --model (or the pool's first model).")
    ] = None,
    model: Annotated[
        str | None, opt("--model", "Evaluate one call of this model (instead of --graph).")
    ] = None,
    task: Annotated[str, opt("--task")] = "gsm8k",
    split: Annotated[str, opt("--split")] = "sample",
    pool: Annotated[str, opt("--pool")] = "local",
    n: Annotated[int, opt("--n", min=1)] = 3,
    seed: Annotated[int, opt("--seed", "Picks the examples and seeds every call.")] = 0,
    store: Annotated[Path, opt("--store", "Created if missing.")] = DEFAULT_STORE,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="Name of this run in the store (default: generated)."),
    ] = None,
    resume: Annotated[
        bool, opt("--resume", "Continues --run-id, skipping finished examples.")
    ] = False,
    retry_errors: Annotated[
        bool, typer.Option("--retry-errors", help="With --resume, run failed examples again.")
    ] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Queries in flight at once.")
    ] = 8,
    cache: Annotated[Path | None, opt("--cache", "Default: none.")] = None,
    max_tokens: Annotated[int, opt("--max-tokens", min=1)] = 128,
    temperature: Annotated[float, opt("--temperature", min=0.0)] = 0.0,
    budget: Annotated[
        str | None,
        opt("--budget", "A graph planned over it is refused; a run over it is stopped."),
    ] = None,
    budget_dollars: Annotated[float | None, opt("--budget-dollars")] = None,
    budget_flops: Annotated[
        float | None, typer.Option("--budget-flops", hidden=True, help="Deprecated: --budget.")
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")
    ] = True,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Folder with the full data sets (default: $MOAGRAPH_DATA_DIR or ../shared/data).",
        ),
    ] = None,
    ray: Annotated[str | None, opt("--ray")] = None,
    dry_run: Annotated[
        bool, opt("--dry-run", "Estimates use the task's average input/output lengths.")
    ] = False,
) -> None:
    """Evaluate a graph (or one model) on a task; results go to the run store."""
    if budget_flops is not None:
        deprecated("--budget-flops", "--budget")
        budget = budget if budget is not None else repr(budget_flops)
    try:
        _eval(
            graph,
            model,
            task,
            split,
            pool,
            n,
            seed,
            store,
            run_id,
            resume,
            retry_errors,
            concurrency,
            cache,
            max_tokens,
            temperature,
            budget,
            progress,
            data_dir,
            ray_address=ray,
            dry_run=dry_run,
            budget_dollars=budget_dollars,
        )
    except EvalFailed as e:
        raise fail(e, code=1) from None
    except (ValueError, OSError, sqlite3.Error) as e:
        raise fail(e) from None


class EvalFailed(Exception):
    """The run finished but no query succeeded (exit code 1, not a usage error)."""


def _eval(
    graph_path: str | None,
    model: str | None,
    task_name: str,
    split: str,
    pool_name: str,
    n: int,
    seed: int,
    store_path: Path,
    run_id: str | None,
    resume: bool,
    retry_errors: bool,
    concurrency: int,
    cache_path: Path | None,
    max_tokens: int,
    temperature: float,
    budget_text: str | None,
    progress: bool,
    data_dir: Path | None = None,
    ray_address: str | None = None,
    dry_run: bool = False,
    budget_dollars: float | None = None,
) -> None:
    from moagraph.graph.builders import single
    from moagraph.graph.evaluate import aevaluate
    from moagraph.graph.executor import Budget, GraphExecutor
    from moagraph.graph.policy import GraphPolicy
    from moagraph.graph.spec import Graph
    from moagraph.graphs import resolve_graph
    from moagraph.models.base import SamplingParams
    from moagraph.models.pool import load_pool
    from moagraph.models.runtime import PoolRuntime
    from moagraph.pools import resolve_pool
    from moagraph.store import RunStore

    if graph_path is not None and model is not None:
        raise ValueError(
            "--graph and --model: give one of them (a graph file, or one model to call once)"
        )
    if resume and run_id is None:
        raise ValueError("--resume needs --run-id ID (the id printed when the run started)")
    if not math.isfinite(temperature):
        raise ValueError(f"--temperature {temperature}: must be a finite number >= 0")
    if budget_dollars is not None and not (math.isfinite(budget_dollars) and budget_dollars >= 0):
        raise ValueError(f"--budget-dollars {budget_dollars}: must be a finite number >= 0")
    pool = load_pool(resolve_pool(pool_name))
    specs = {m.name: m for m in pool.models}  # as written in the pool file: the run's identity
    if (
        ray_address is not None and not dry_run
    ):  # models as Ray replicas; the store and cache stay on this driver
        from moagraph.scale.cluster import connect, on_cluster

        connect(ray_address)
        pool = on_cluster(pool)
    graph = (
        Graph.load(resolve_graph(graph_path))
        if graph_path is not None
        else single(model or pool.models[0].name)
    )
    graph.validate_against(pool)
    task = resolve_task(task_name, data_dir)
    budget_flops = resolve_budget(budget_text, pool, task)
    examples = task.load(split, n=n, seed=seed)
    if not examples:
        raise ValueError(f"--split {split!r} of task {task_name!r} has no examples")

    def _budget_note(est: Any) -> str:
        """The resolved --budget/--budget-dollars, and whether the plan fits them."""
        if budget_flops is None and budget_dollars is None:
            return ""
        caps = [f"{budget_flops:.3g} normalised FLOPs"] if budget_flops is not None else []
        if budget_dollars is not None:
            caps.append(f"${budget_dollars:g}")
        over = (budget_flops is not None and est.flops_norm > budget_flops) or (
            budget_dollars is not None and est.dollars > budget_dollars
        )
        verdict = "is over it: every query would be refused" if over else "fits it"
        rule = f" ({budget_text})" if budget_text and ":" in budget_text else ""
        return f"\nbudget per query: {' and '.join(caps)}{rule}; the graph {verdict}"

    if dry_run:
        from moagraph.graph.cost import estimate_cost

        est = estimate_cost(graph, pool, task)
        calls, k = len(graph.llm_nodes), len(examples)
        console.print(
            f"dry run of {graph.name} on {task.name}/{split} (n={k}) with pool {pool.name}: "
            f"no model was called\nper query: {est.flops_norm:.3g} normalised FLOPs "
            f"({est.flops:.3g} FLOPs), ${est.dollars:.6f}, {calls} model calls\n"
            f"total: {k * est.flops:.3g} FLOPs, ${k * est.dollars:.4f}, {k * calls} model calls "
            "(estimates from the task's average input/output lengths)" + _budget_note(est),
            highlight=False,
        )
        return
    call_cache = None
    if cache_path is not None:
        from moagraph.models.cache import CallCache

        try:
            call_cache = CallCache(cache_path)
        except (sqlite3.Error, OSError) as e:  # the cache names no file itself
            raise ValueError(
                f"call cache {cache_path} cannot be used ({type(e).__name__}: {e}); pass "
                "--cache with a new path, or move that file away (it is not deleted for you)"
            ) from None
    runtime = PoolRuntime(pool, cache=call_cache)
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    executor = GraphExecutor(runtime, task, default_params=params)
    budget = (
        Budget(max_flops_norm=budget_flops, max_dollars=budget_dollars)
        if budget_flops is not None or budget_dollars is not None
        else None
    )
    policy = GraphPolicy(graph, executor, budget=budget)
    est = executor.estimate(graph)
    run_id = (
        run_id
        or f"{graph.name}-{task.name}-{split}-n{n}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    )
    console.print(
        f"[bold]{graph.name}[/bold] on {task.name}/{split} (n={len(examples)}) with pool "
        f"[bold]{pool.name}[/bold]; planned {est.flops_norm:.3g} normalised FLOPs/query"
        f"{_budget_note(est)}\n"
        f"run id [cyan]{run_id}[/cyan] in {store_path} (continue with --run-id {run_id} --resume)",
        highlight=False,
    )
    config = {
        "graph": graph.to_dict(),
        "pool": pool.name,
        "pool_models": {m: specs[m].identity_fields() for m in graph.models_used},
        "examples_sha256": hashlib.sha256(
            "\n".join(ex.id for ex in examples).encode("utf-8")
        ).hexdigest(),
        "split": split,
        "seed": seed,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "budget_flops": budget_flops,
    }
    if budget_dollars is not None:  # only when set: runs stored before the flag still resume
        config["budget_dollars"] = budget_dollars

    async def go():
        try:
            return await aevaluate(
                policy,
                task,
                examples,
                store=rs,
                run_id=run_id,
                resume=resume,
                concurrency=concurrency,
                progress=progress,
                config=config,
                retry_errors=retry_errors,
            )
        finally:
            await runtime.aclose()

    with RunStore(store_path) as rs:
        report = asyncio.run(go())
        console.print(report.table())
        failed = [r for r in report.rows if r.error]
        if failed and len(failed) == len(report.rows):
            raise EvalFailed(
                f"every query failed ({len(failed)} of {len(report.rows)}; run {run_id!r} in "
                f"{store_path}). First error ({failed[0].example_id}): {failed[0].error}"
            )
        if failed:
            console.print(
                f"[yellow]first error ({failed[0].example_id}): {failed[0].error}[/yellow]",
                highlight=False,
            )


@app.command("draw")
def draw_command(
    graph: Annotated[
        str,
        typer.Argument(help="Graph: a bundled name (vote3, chain2, moa2x1, best-of-3) or a file."),
    ],
    out: Annotated[
        Path | None,
        opt("--out", "A stem: writes STEM.png and STEM.html (default: next to the graph)."),
    ] = None,
    pool: Annotated[
        str | None, opt("--pool", "Checks the graph's models and labels its nodes.")
    ] = None,
) -> None:
    """Draw a graph: PNG (colour = model, shape = role, thick ring = sink) + standalone HTML."""
    from moagraph.graph.draw import draw
    from moagraph.graph.spec import Graph
    from moagraph.graphs import resolve_graph
    from moagraph.models.pool import load_pool
    from moagraph.pools import resolve_pool

    try:
        path = resolve_graph(graph)
        g = Graph.load(path)
        p = load_pool(resolve_pool(pool)) if pool is not None else None
        if p is not None:
            g.validate_against(p)
        default_out = (
            path.with_suffix("") if Path(graph).exists() else Path(path.stem)
        )  # bundled: cwd
        res = draw(g, out if out is not None else default_out, p)
    except ValueError as e:
        raise fail(e) from None
    console.print(f"wrote {res.png} and {res.html}", highlight=False)
