"""`moagraph eval` and `moagraph draw`.

``moagraph eval`` with no arguments runs the embedded defaults (the bundled
``local`` pool, one call of its first model, the bundled gsm8k sample), so a
fresh install shows a real result table within about a minute, offline.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from moagraph.cli import app
from moagraph.cli._errors import err_console, fail
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
    data_dir: Annotated[Path | None, opt("--data-dir")] = None,
    ray: Annotated[str | None, opt("--ray")] = None,
    dry_run: Annotated[
        bool, opt("--dry-run", "Estimates use the task's average input/output lengths.")
    ] = False,
) -> None:
    """Evaluate a graph (or one model) on a task; results go to the run store.

    Exit codes: 0 every query answered (right or wrong), 1 every query failed, 2 a usage
    or input error, 3 some queries failed (stored; --resume --retry-errors reruns them).
    """
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
        raise fail(e, code=EXIT_ALL_FAILED) from None
    except EvalPartlyFailed as e:
        raise fail(e, code=EXIT_SOME_FAILED) from None
    except (ValueError, OSError, sqlite3.Error) as e:
        raise fail(e) from None


# Exit codes of `moagraph eval` (also in its --help): 0 every query answered (right or
# wrong), 1 every query failed, 2 a usage or input error (nothing or little ran),
# 3 the run finished but some queries failed (their errors are stored; the accuracy
# counts them as wrong, so a script must not take it at face value).
EXIT_ALL_FAILED = 1
EXIT_SOME_FAILED = 3


class EvalFailed(Exception):
    """The run finished but no query succeeded (exit code 1, not a usage error)."""


class EvalPartlyFailed(Exception):
    """The run finished and some (not all) queries failed (exit code 3)."""


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
    """Parse into :func:`moagraph.graph.eval_job.prepare_eval`, run it, print."""
    from moagraph.graph.eval_job import prepare_eval
    from moagraph.models.pool import load_pool
    from moagraph.pools import resolve_pool
    from moagraph.store import RunStore

    if resume and run_id is None:
        raise ValueError("--resume needs --run-id ID (the id printed when the run started)")
    pool = load_pool(resolve_pool(pool_name))
    task = resolve_task(task_name, data_dir)
    job = prepare_eval(
        pool=pool,
        graph=graph_path,
        model=model,
        task=task,
        split=split,
        n=n,
        seed=seed,
        max_tokens=max_tokens,
        temperature=temperature,
        budget_flops=resolve_budget(budget_text, pool, task),
        budget_dollars=budget_dollars,
        run_id=run_id,
        ray=ray_address,
        connect_ray=not dry_run,
    )
    est = job.estimate()

    def _budget_note() -> str:
        """The resolved --budget/--budget-dollars, and whether the plan fits them."""
        if job.budget is None:
            return ""
        b = job.budget
        caps = [f"{b.max_flops_norm:.3g} normalised FLOPs"] if b.max_flops_norm is not None else []
        if b.max_dollars is not None:
            caps.append(f"${b.max_dollars:g}")
        verdict = "is over it: every query would be refused" if job.over_budget() else "fits it"
        rule = f" ({budget_text})" if budget_text and ":" in budget_text else ""
        return f"\nbudget per query: {' and '.join(caps)}{rule}; the graph {verdict}"

    name, k = job.graph.name, len(job.examples)
    if dry_run:
        d = job.dry_run()
        console.print(
            f"dry run of {name} on {task.name}/{split} (n={k}) with pool {pool.name}: "
            f"no model was called\nper query: {est.flops_norm:.3g} normalised FLOPs "
            f"({est.flops:.3g} FLOPs), ${est.dollars:.6f}, {d.calls_per_query} model calls\n"
            f"total: {d.total_flops:.3g} FLOPs, ${d.total_dollars:.4f}, {d.total_calls} model "
            "calls (estimates from the task's average input/output lengths)" + _budget_note(),
            highlight=False,
        )
        return
    console.print(
        f"[bold]{name}[/bold] on {task.name}/{split} (n={k}) with pool "
        f"[bold]{pool.name}[/bold]; planned {est.flops_norm:.3g} normalised FLOPs/query"
        f"{_budget_note()}\n"
        f"run id [cyan]{job.run_id}[/cyan] in {store_path} (continue with --run-id "
        f"{job.run_id} --resume)",
        highlight=False,
    )
    with RunStore(store_path) as rs:
        report = job.run(
            rs,
            cache=cache_path,
            concurrency=concurrency,
            progress=progress,
            resume=resume,
            retry_errors=retry_errors,
        )
        console.print(report.table())
        if job.cache_note:
            err_console.print(
                f"[yellow]Warning: {escape(job.cache_note)}[/yellow]", highlight=False
            )
        failed = [r for r in report.rows if r.error]
        if failed and len(failed) == len(report.rows):
            raise EvalFailed(
                f"every query failed ({len(failed)} of {len(report.rows)}; run {job.run_id!r} "
                f"in {store_path}). First error ({failed[0].example_id}): {failed[0].error}"
            )
        if failed:
            raise EvalPartlyFailed(
                f"{len(failed)} of {len(report.rows)} queries failed (run {job.run_id!r} in "
                f"{store_path}; their errors are stored, the accuracy above counts them as "
                f"wrong). First error ({failed[0].example_id}): {failed[0].error}. Run the failed "
                f"ones again with --run-id {job.run_id} --resume (it reruns transient failures: "
                "a crashed or timed-out model) or --resume --retry-errors (every failure)"
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
