"""`moagraph search` (compute-optimal graph search) and `moagraph report` (study plots)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from moagraph.cli import app
from moagraph.cli._errors import fail

console = Console()



@app.command("search")
def search_command(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name (gsm8k, math, humaneval, chat, ...).")] = "gsm8k",
    pool: Annotated[str, typer.Option("--pool", "-p", help="Bundled pool name or pool YAML path.")] = "local",
    budget: Annotated[float, typer.Option(help="Budget per query in normalised FLOPs (1 = one call of the smallest model).")] = 4.0,
    budget_dollars: Annotated[float | None, typer.Option("--budget-dollars", help="Also cap planned dollars per query.")] = None,
    optimizer: Annotated[str, typer.Option("--optimizer", "-o", help="agent-reinforce | reinforce | random | bayesopt | textgrad | exhaustive")] = "agent-reinforce",
    iterations: Annotated[int, typer.Option("--iterations", "-n", min=1, help="Graph evaluations on training questions.")] = 10,
    train_n: Annotated[int, typer.Option("--train-n", min=1, help="Training questions per evaluation.")] = 10,
    heldout_n: Annotated[int, typer.Option("--heldout-n", min=0, help="Held-out questions to pick the final graph.")] = 20,
    split: Annotated[str, typer.Option(help="Task split to draw questions from.")] = "test",
    seed: Annotated[int, typer.Option(help="Seed of the optimiser and of the question sample.")] = 0,
    max_nodes: Annotated[int, typer.Option("--max-nodes", min=1, help="Most LLM nodes in a graph.")] = 4,
    flat: Annotated[bool, typer.Option("--flat", help="Only first-layer assistants into the vote sink (no edges).")] = False,
    models: Annotated[str | None, typer.Option("--models", help="Comma-separated pool models to search over (default: all).")] = None,
    study: Annotated[Path, typer.Option("--study", help="SQLite study file.")] = Path("runs/study.sqlite"),
    study_name: Annotated[str | None, typer.Option("--study-name", help="Study name (default from the options).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue --study-name where it stopped.")] = False,
    agent_pool: Annotated[str | None, typer.Option("--agent-pool", help="Pool of the agent LLM (default: --pool, or `local` for replay pools).")] = None,
    agent_model: Annotated[str | None, typer.Option("--agent-model", help="Agent model name in the agent pool.")] = None,
    multi_objective: Annotated[bool, typer.Option("--multi-objective", help="Trade accuracy against FLOPs; report the Pareto front.")] = False,
    cache: Annotated[Path, typer.Option(help="SQLite call cache (repeated graphs and agent prompts are free).")] = Path("runs/cache.sqlite"),
    max_tokens: Annotated[int, typer.Option(min=1, help="Max new tokens per node call.")] = 256,
    out: Annotated[Path | None, typer.Option("--out", help="Where to write the best graph YAML (default: next to the study).")] = None,
) -> None:
    """Search a collaboration graph under a compute budget; writes the best graph as YAML."""
    try:
        asyncio.run(
            _search(
                task, pool, budget, budget_dollars, optimizer, iterations, train_n, heldout_n, split, seed,
                max_nodes, flat, models, study, study_name, resume, agent_pool, agent_model, multi_objective,
                cache, max_tokens, out,
            )
        )
    except ValueError as e:
        raise fail(e) from None


async def _search(
    task_name: str, pool_name: str, budget: float, budget_dollars: float | None, opt_name: str,
    iterations: int, train_n: int, heldout_n: int, split: str, seed: int, max_nodes: int, flat: bool,
    models: str | None, study_path: Path, study_name: str | None, resume: bool, agent_pool: str | None,
    agent_model: str | None, multi_objective: bool, cache_path: Path, max_tokens: int, out: Path | None,
) -> None:
    from moagraph.models.base import SamplingParams
    from moagraph.models.cache import CallCache
    from moagraph.models.pool import load_pool
    from moagraph.models.runtime import PoolRuntime
    from moagraph.pools import resolve_pool
    from moagraph.search.agent import RuntimeAgent
    from moagraph.search.base import get_optimizer, optimizer_names
    from moagraph.search.evaluator import ExactReplayEvaluator, ExecutorEvaluator
    from moagraph.search.space import SearchSpace, graph_text
    from moagraph.search.study import Study, run_study

    if opt_name not in optimizer_names():
        raise ValueError(f"--optimizer {opt_name!r} is unknown; use one of: {', '.join(optimizer_names())}")
    from moagraph.tasks.registry import get_task

    pool = load_pool(resolve_pool(pool_name))
    task = get_task(task_name)
    wanted = [m.strip() for m in models.split(",")] if models else None
    for m in wanted or []:
        if m not in pool:
            raise ValueError(f"--models: {m!r} is not in pool {pool.name!r} ({', '.join(pool.names)})")
    examples = task.load(split, n=train_n + heldout_n, seed=seed)
    if len(examples) < train_n + min(heldout_n, 1):
        raise ValueError(f"--train-n/--heldout-n: split {split!r} has only {len(examples)} examples")
    train, heldout = examples[:train_n], examples[train_n:]
    plan = _plan_evaluation(task, task_name, pool, wanted, flat, [e.id for e in examples])
    for note in plan["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    space = SearchSpace.from_pool(
        pool, task, budget=budget, budget_dollars=budget_dollars, max_nodes=max_nodes, models=plan["models"],
        flat=plan["flat"], sink_mode=plan["sink_mode"], max_copies=plan["max_copies"],
    )
    cache = CallCache(cache_path)
    runtime = PoolRuntime(pool, cache=cache)
    if plan["evaluator"] == "executor":
        evaluator: Any = ExecutorEvaluator(
            runtime, task, space, train, heldout, default_params=SamplingParams(max_tokens=max_tokens, seed=seed)
        )
    else:
        evaluator = ExactReplayEvaluator.from_pool(
            pool, space, train, heldout, mode=plan["sink_mode"], task=task, records=plan["records"]
        )
    kwargs: dict[str, Any] = {}
    agent_runtime = None
    if opt_name in ("agent-reinforce", "textgrad"):
        if agent_pool is not None:
            apool = load_pool(resolve_pool(agent_pool))
        elif any(m.backend != "replay" for m in pool.models):
            apool = pool
        else:
            apool = load_pool(resolve_pool("local"))
        live = [m.name for m in apool.models if m.backend != "replay"]
        name = agent_model or (live[0] if live else None)
        if name is None or name not in apool:
            raise ValueError(f"--agent-model: pick a live model of pool {apool.name!r} ({', '.join(apool.names)})")
        agent_runtime = runtime if apool is pool else PoolRuntime(apool, cache=CallCache(cache_path))
        kwargs = {"agent": RuntimeAgent(agent_runtime, name), "task_kind": getattr(task, "kind", None)}
    opt = get_optimizer(opt_name, space, seed=seed, **kwargs)
    name = study_name or f"{opt_name}-{task_name}-{pool.name}-b{budget:g}-s{seed}"
    config = {
        "optimizer": opt_name, "seed": seed, "task": task_name, "pool": pool.name, "space": space.config(),
        "train_ids": [e.id for e in train], "heldout_ids": [e.id for e in heldout], "iterations": iterations,
        "optimizer_options": {k: v for k, v in kwargs.items() if isinstance(v, (str, int, float, type(None)))},
        "agent_model": getattr(kwargs.get("agent"), "model", None), "multi_objective": multi_objective,
        "sink_mode": space.sink_mode, "evaluator": plan["evaluator"], "objective": plan["objective"],
    }
    st = Study.open(study_path, name, config, resume=resume)
    console.print(
        f"study [cyan]{name}[/cyan] in {study_path}: {opt_name} on {task_name} with pool {pool.name}, "
        f"budget {budget:g}, {len(space.feasible_mixes())} feasible mixes", highlight=False,
    )
    console.print(f"objective: {plan['objective']}", highlight=False)
    console.print(f"evaluator: {plan['evaluator_text']}", highlight=False)
    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    try:
        with prog:
            bar = prog.add_task(opt_name, total=iterations)

            def on_trial(done: int, total: int, row: Any, best: float) -> None:
                prog.update(bar, completed=done, description=f"{opt_name} best {best:.3f}")

            res = await run_study(st, opt, evaluator, iterations, multi_objective=multi_objective, on_trial=on_trial)
    finally:
        st.close()
        await opt.aclose()
        await runtime.aclose()
        if agent_runtime is not None and agent_runtime is not runtime:
            await agent_runtime.aclose()
    path = out or study_path.with_name(f"{name}.best.yaml")
    res.best_graph.name = res.best_graph.name or f"best-{name}"
    res.best_graph.save(path)
    oracle = space.sink_mode == "select"
    t = Table(
        title=f"Best graph of {name}"
        + (" -- objective: ORACLE best-of-n (upper bound, not an achievable score)" if oracle else ""),
    )
    rcols = ("train reward (oracle UB)", "held-out reward (oracle UB)") if oracle else ("train reward", "held-out reward")
    for col in (*rcols, "cost (norm. FLOPs)", "trials", "graph"):
        t.add_column(col)
    t.add_row(
        f"{res.train_reward:.3f}", "-" if res.heldout_reward is None else f"{res.heldout_reward:.3f}",
        f"{res.cost:.2f}", str(res.n_trials), graph_text(res.best_graph),
    )
    console.print(t)
    if res.stats.get("parse_failure_rate") is not None:
        console.print(f"agent: {res.stats}", highlight=False)
    if multi_objective:
        pt = Table(title="Pareto front (reward up, cost down, latency down)")
        for col in ("trial", "reward", "cost", "latency s"):
            pt.add_column(col)
        for r in res.pareto:
            pt.add_row(str(r.number), f"{r.reward:.3f}", f"{r.cost:.2f}", f"{r.latency:.3g}")
        console.print(pt)
    if oracle:
        console.print(
            "[yellow]The rewards above are an oracle upper bound[/yellow]: the sink 'select' picks the answer "
            "with the best recorded judge score, which no deployed graph can do. The written graph keeps a "
            "vote node as its sink; replace it with a judge or aggregator node before deploying it.",
            highlight=False,
        )
    console.print(f"best graph written to {path}; report: moagraph report {study_path}", highlight=False)


@app.command("report")
def report_command(
    study: Annotated[Path, typer.Argument(help="Study SQLite file written by `moagraph search`.")],
    outdir: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: <study>-report/).")] = None,
    names: Annotated[str | None, typer.Option("--names", help="Comma-separated study names (default: all).")] = None,
) -> None:
    """PNG/HTML report of a study file: best-so-far curves, Pareto front, best graph."""
    from moagraph.search.report import write_report

    try:
        out = outdir or study.with_name(study.stem + "-report")
        files = write_report(study, out, [n.strip() for n in names.split(",")] if names else None)
    except ValueError as e:
        raise fail(e) from None
    console.print(files.table)
    console.print(f"wrote {files.html}, {files.convergence_png}, {files.pareto_png}" + (f", {files.best_graph_png}" if files.best_graph_png else ""), highlight=False)


ORACLE_OBJECTIVE = (
    "ORACLE best-of-n (select sink: per query, the highest recorded judge score among the graph's answers) "
    "-- an UPPER BOUND on any real sink, not an achievable score"
)


def _plan_evaluation(
    task: Any, task_name: str, pool: Any, wanted: list[str] | None, flat: bool, query_ids: list[str]
) -> dict[str, Any]:
    """Pick the sink and the evaluator for this task and pool (see the search module docs).

    * votable task (math/choice/code): vote sink; on an all-replay pool with
      flat graphs, the exact replay evaluator (same scores as the executor, no LLM call);
    * non-votable task (chat) on an all-replay pool: flat graphs, the exact replay
      evaluator in ``select`` mode, labelled as an oracle upper bound;
    * non-votable task on a live pool: refused (nothing could grade the answers).
    """
    from moagraph.search.evaluator import (
        is_replay_pool,
        is_votable,
        pool_replay_records,
        recorded_copies,
    )

    kind = getattr(task, "kind", None)
    votable = is_votable(task)
    replay = is_replay_pool(pool, wanted)
    names = list(wanted) if wanted else list(pool.names)
    notes: list[str] = []
    plan: dict[str, Any] = {
        "models": wanted, "flat": flat, "sink_mode": "vote", "max_copies": None, "records": None,
        "evaluator": "executor", "notes": notes,
        "objective": "mean task score of the vote sink's answer (majority over extracted answers)",
        "evaluator_text": "graph executor (every node called through the pool runtime and its call cache)",
    }
    if not votable and not replay:
        live = [m for m in names if pool[m].backend != "replay"]
        raise ValueError(
            f"--task {task_name!r}: answers of kind {kind!r} cannot be majority-voted, and on pool {pool.name!r} "
            f"(live models: {', '.join(live)}) nothing can grade them (a {kind} score comes only from a recorded "
            "judge label), so every searched graph would score 0. Use a replay pool that records judge scores "
            "(e.g. --pool alpaca_eval, which searches an oracle best-of-n upper bound), or a votable task "
            "(--task gsm8k, math, mmlu, humaneval or mbpp)."
        )
    if not replay or (votable and not flat):
        return plan  # executor: live pools, and non-flat graphs (inner nodes need real calls)
    records = pool_replay_records(pool, names, query_ids)
    copies = recorded_copies(records, names, query_ids)
    missing = [m for m in names if copies[m] == 0]
    if missing:
        keep = [m for m in names if copies[m] > 0]
        if not keep:
            raise ValueError(
                f"--pool {pool.name!r}: no model has a recording for every drawn query; "
                "lower --train-n/--heldout-n or choose another --split"
            )
        notes.append(
            f"left out of the search (no recording for some drawn queries): {', '.join(missing)}"
        )
        names = keep
    plan.update(models=names, max_copies={m: copies[m] for m in names}, records=records, flat=True)
    if votable:
        plan.update(
            evaluator="exact-replay-vote",
            evaluator_text=(
                "exact replay, vote mode (pool is all replay and graphs are flat: each graph is scored "
                "from the recorded samples with no LLM call, the same scores as the executor, far faster); "
                f"copies per model capped at the recorded samples per query "
                f"({', '.join(f'{m}: {c}' for m, c in plan['max_copies'].items())})"
            ),
        )
        return plan
    if not flat:
        notes.append(
            f"--task {task_name!r} answers cannot be voted on and a replay pool cannot answer inner nodes, "
            "so the search uses flat graphs (as with --flat)"
        )
    plan.update(
        sink_mode="select", evaluator="exact-replay-select", objective=ORACLE_OBJECTIVE,
        evaluator_text=(
            "exact replay, select mode (oracle best-of-n from the recorded judge scores, no LLM call); "
            f"kind {kind!r} answers cannot be majority-voted, so a vote sink would score an arbitrary input; "
            "copies per model capped at the recorded samples per query"
        ),
    )
    return plan
