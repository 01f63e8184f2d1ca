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
    task: Annotated[
        str, typer.Option("--task", "-t", help="Task name (gsm8k, math, humaneval, chat, ...).")
    ] = "gsm8k",
    pool: Annotated[
        str, typer.Option("--pool", "-p", help="Bundled pool name or pool YAML path.")
    ] = "local",
    budget: Annotated[
        str,
        typer.Option(
            help="Budget per query: normalised FLOPs (1 = one no-input call of the smallest searched model), or paper:b (b = 4/8/12, or paper:18/42/80): the official rule, a complete DAG of b smallest-model nodes plus the output node."
        ),
    ] = "4",
    budget_dollars: Annotated[
        float | None, typer.Option("--budget-dollars", help="Also cap planned dollars per query.")
    ] = None,
    optimizer: Annotated[
        str,
        typer.Option(
            "--optimizer",
            "-o",
            help="agent-reinforce | reinforce | random | bayesopt | textgrad | exhaustive",
        ),
    ] = "agent-reinforce",
    iterations: Annotated[
        int,
        typer.Option(
            "--iterations",
            "-n",
            min=1,
            help="Graph evaluations on training questions (all phases).",
        ),
    ] = 10,
    guided_iterations: Annotated[
        int | None,
        typer.Option(
            "--guided-iterations",
            min=1,
            help="agent-reinforce: agent-guided evaluations after the pilot/pretest ones (the paper: 10); overrides --iterations.",
        ),
    ] = None,
    train_n: Annotated[
        int, typer.Option("--train-n", min=1, help="Training questions per evaluation.")
    ] = 10,
    heldout_n: Annotated[
        int,
        typer.Option("--heldout-n", min=0, help="Validation questions to pick the final graph."),
    ] = 20,
    test_n: Annotated[
        int,
        typer.Option(
            "--test-n", min=0, help="Test questions the picked graph is reported on (95% CI)."
        ),
    ] = 100,
    split: Annotated[
        str,
        typer.Option(
            help="Task split the questions come from; its ids are split train/validation/test by a hash of id + --split-seed."
        ),
    ] = "test",
    split_seed: Annotated[
        int, typer.Option("--split-seed", help="Seed of the train/validation/test id split.")
    ] = 0,
    sink: Annotated[
        str,
        typer.Option(
            "--sink",
            help="auto | llm | vote. llm: graphs end in a charged LLM output node (the paper's); vote: a free majority vote. auto: llm unless the pool is replay-only.",
        ),
    ] = "auto",
    output_model: Annotated[
        str | None,
        typer.Option(
            "--output-model",
            help="Model of the LLM output node (default: the model closest to 3x the smallest's parameters, as the paper's 3B output over 1B nodes).",
        ),
    ] = None,
    latency: Annotated[
        bool,
        typer.Option(
            "--latency",
            help="Latency-aware search: the paper's latency prompt and an accuracy-FLOPs-latency objective.",
        ),
    ] = False,
    seed: Annotated[
        int, typer.Option(help="Seed of the optimiser and of the question sample.")
    ] = 0,
    max_nodes: Annotated[
        int, typer.Option("--max-nodes", min=1, help="Most LLM nodes in a graph.")
    ] = 4,
    flat: Annotated[
        bool,
        typer.Option("--flat", help="Only first-layer assistants into the vote sink (no edges)."),
    ] = False,
    models: Annotated[
        str | None,
        typer.Option("--models", help="Comma-separated pool models to search over (default: all)."),
    ] = None,
    study: Annotated[Path, typer.Option("--study", help="SQLite study file.")] = Path(
        "runs/study.sqlite"
    ),
    study_name: Annotated[
        str | None, typer.Option("--study-name", help="Study name (default from the options).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue --study-name where it stopped.")
    ] = False,
    agent_pool: Annotated[
        str, typer.Option("--agent-pool", help="Pool of the agent LLM.")
    ] = "local",
    agent_model: Annotated[
        str | None,
        typer.Option(
            "--agent-model",
            help="Agent model name in the agent pool (default: qwen-coder-1.5b in `local`, else the first live model).",
        ),
    ] = None,
    multi_objective: Annotated[
        bool,
        typer.Option(
            "--multi-objective", help="Trade accuracy against FLOPs; report the Pareto front."
        ),
    ] = False,
    cache: Annotated[
        Path, typer.Option(help="SQLite call cache (repeated graphs and agent prompts are free).")
    ] = Path("runs/cache.sqlite"),
    max_tokens: Annotated[int, typer.Option(min=1, help="Max new tokens per node call.")] = 256,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Where to write the best graph YAML (default: next to the study)."
        ),
    ] = None,
) -> None:
    """Search a collaboration graph under a compute budget; writes the best graph as YAML."""
    try:
        asyncio.run(
            _search(
                task,
                pool,
                budget,
                budget_dollars,
                optimizer,
                iterations,
                train_n,
                heldout_n,
                split,
                seed,
                max_nodes,
                flat,
                models,
                study,
                study_name,
                resume,
                agent_pool,
                agent_model,
                multi_objective,
                cache,
                max_tokens,
                out,
                guided_iterations=guided_iterations,
                test_n=test_n,
                split_seed=split_seed,
                sink=sink,
                output_model=output_model,
                latency=latency,
            )
        )
    except ValueError as e:
        raise fail(e) from None


async def _search(
    task_name: str,
    pool_name: str,
    budget_text: str | float,
    budget_dollars: float | None,
    opt_name: str,
    iterations: int,
    train_n: int,
    heldout_n: int,
    split: str,
    seed: int,
    max_nodes: int,
    flat: bool,
    models: str | None,
    study_path: Path,
    study_name: str | None,
    resume: bool,
    agent_pool: str | None,
    agent_model: str | None,
    multi_objective: bool,
    cache_path: Path,
    max_tokens: int,
    out: Path | None,
    *,
    guided_iterations: int | None = None,
    test_n: int = 100,
    split_seed: int = 0,
    sink: str = "auto",
    output_model: str | None = None,
    latency: bool = False,
) -> None:
    from moagraph.cli.eval_cmd import _IDENTITY_FIELDS
    from moagraph.models.base import SamplingParams
    from moagraph.models.cache import CallCache
    from moagraph.models.pool import load_pool
    from moagraph.models.runtime import PoolRuntime
    from moagraph.pools import resolve_pool
    from moagraph.pools.splits import split_ids
    from moagraph.search.agent import RuntimeAgent
    from moagraph.search.base import get_optimizer, optimizer_names
    from moagraph.search.evaluator import ExactReplayEvaluator, ExecutorEvaluator
    from moagraph.search.space import SearchSpace, default_output_model, graph_text, parse_budget
    from moagraph.search.study import Study, list_studies, run_study

    if opt_name not in optimizer_names():
        raise ValueError(
            f"--optimizer {opt_name!r} is unknown; use one of: {', '.join(optimizer_names())}"
        )
    from moagraph.tasks.registry import get_task

    pool = load_pool(resolve_pool(pool_name))
    task = get_task(task_name)
    wanted = [m.strip() for m in models.split(",")] if models else None
    for m in wanted or []:
        if m not in pool:
            raise ValueError(
                f"--models: {m!r} is not in pool {pool.name!r} ({', '.join(pool.names)})"
            )
    if sink not in ("auto", "llm", "vote"):
        raise ValueError(f"--sink {sink!r}: use auto, llm or vote")
    budget, paper_b = parse_budget(budget_text)
    # Train / validation / test: the split's ids (for a replay pool, only the ids it recorded)
    # are partitioned by a hash of (seed, id) (moagraph.pools.splits.split_ids); the search sees
    # train ids only, the final pick validation ids, the report test ids.
    all_examples = task.load(split)
    pool_ids = _replay_query_ids(pool, wanted)
    if pool_ids is not None:
        all_examples = [e for e in all_examples if e.id in pool_ids]
    parts = split_ids([e.id for e in all_examples], seed=split_seed)
    by_id = {e.id: e for e in all_examples}

    def draw(part: str, n: int, salt: int) -> list[Any]:
        import random

        ids = list(parts[part])
        random.Random(seed * 1000 + salt).shuffle(ids)
        return [by_id[i] for i in ids[:n]]

    train, heldout, test = (
        draw("train", train_n, 1),
        draw("validation", heldout_n, 2),
        draw("test", test_n, 3),
    )
    if not train or (heldout_n and not heldout):
        raise ValueError(
            f"--split {split!r}: {len(all_examples)} usable questions split into "
            f"{', '.join(f'{k} {len(v)}' for k, v in parts.items())}; not enough for --train-n/--heldout-n"
        )
    for part, got, want in (
        ("train", train, train_n),
        ("validation", heldout, heldout_n),
        ("test", test, test_n),
    ):
        if len(got) < want:
            console.print(
                f"[yellow]note:[/yellow] {part}: only {len(got)} of --{'heldout' if part == 'validation' else part}-n {want} questions available",
                highlight=False,
            )
    examples = [*train, *heldout, *test]
    plan = _plan_evaluation(task, task_name, pool, wanted, flat, [e.id for e in examples])
    sink_mode = plan["sink_mode"]
    from moagraph.search.evaluator import is_replay_pool

    replay_only = is_replay_pool(pool, plan["models"] or wanted)
    if sink_mode == "vote":
        if sink == "llm" and replay_only:
            raise ValueError(
                f"--sink llm: pool {pool.name!r} is replay-only, so nothing can run the output node on the "
                "graph's answers; use --sink vote (or auto) or a pool with live models"
            )
        if sink == "llm" or (sink == "auto" and not replay_only):
            sink_mode = "llm"
        elif sink == "auto":
            plan["notes"].append(
                "sink: a free vote (the pool is replay-only, so no LLM output node can read the graph's answers); "
                "the paper's graphs end in a charged LLM output node (--sink llm on a live pool)"
            )
    space_kw: dict[str, Any] = dict(
        budget_dollars=budget_dollars,
        max_nodes=max_nodes,
        models=plan["models"],
        flat=plan["flat"],
        sink_mode=sink_mode,
        max_copies=plan["max_copies"],
        output_model=output_model if sink_mode == "llm" else None,
    )
    if paper_b is not None:
        probe = SearchSpace.from_pool(pool, task, budget=None, **space_kw)
        budget = probe.paper_budget(paper_b)
        unit = probe.config()["unit"]
        out_m = probe.output_model or "(priced as) " + default_output_model(probe.models)
        console.print(
            f"budget paper:{paper_b} = {budget:.2f} normalised FLOPs: a complete DAG of {paper_b} "
            f"{min(probe.models, key=lambda m: m.n_params).name} nodes + an output node {out_m} "
            f"(unit: {unit}; the official rule, FairyFali/AgentRE swarm/graph/composite_graph.py)",
            highlight=False,
        )
    assert budget is not None
    for note in plan["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    space = SearchSpace.from_pool(pool, task, budget=budget, **space_kw)
    cache = CallCache(cache_path)
    runtime = PoolRuntime(pool, cache=cache)
    if plan["evaluator"] == "executor":
        evaluator: Any = ExecutorEvaluator(
            runtime,
            task,
            space,
            train,
            heldout,
            default_params=SamplingParams(max_tokens=max_tokens, seed=seed),
            test=test,
        )
    else:
        evaluator = ExactReplayEvaluator.from_pool(
            pool,
            space,
            train,
            heldout,
            mode=plan["sink_mode"],
            task=task,
            records=plan["records"],
            test=test,
        )
    kwargs: dict[str, Any] = {}
    agent_runtime = None
    if opt_name in ("agent-reinforce", "textgrad"):
        apool = (
            pool
            if agent_pool in (pool_name, pool.name)
            else load_pool(resolve_pool(agent_pool or "local"))
        )
        live = [m.name for m in apool.models if m.backend != "replay"]
        default_agent = (
            "qwen-coder-1.5b" if "qwen-coder-1.5b" in live else (live[0] if live else None)
        )
        name = agent_model or default_agent
        if name is None or name not in apool:
            raise ValueError(
                f"--agent-model: pick a live model of pool {apool.name!r} ({', '.join(apool.names)})"
            )
        agent_runtime = (
            runtime if apool is pool else PoolRuntime(apool, cache=CallCache(cache_path))
        )
        kwargs = {
            "agent": RuntimeAgent(agent_runtime, name),
            "task_kind": getattr(task, "kind", None),
        }
    if opt_name == "agent-reinforce":
        kwargs["objective"] = "latency" if latency else "accuracy"
        if guided_iterations is not None:
            kwargs["guided_iterations"] = guided_iterations
    elif guided_iterations is not None:
        raise ValueError(
            "--guided-iterations applies to --optimizer agent-reinforce only; use --iterations"
        )
    opt = get_optimizer(opt_name, space, seed=seed, **kwargs)
    if guided_iterations is not None:
        iterations = guided_iterations + int(getattr(opt, "planned_prior_evaluations", 0))
    btag = f"paper{paper_b}" if paper_b is not None else f"{budget:g}"
    name = study_name or f"{opt_name}-{task_name}-{pool.name}-b{btag}-s{seed}"
    config = {
        "optimizer": opt_name,
        "seed": seed,
        "task": task_name,
        "pool": pool.name,
        "space": space.config(),
        "budget_rule": f"paper:{paper_b}" if paper_b is not None else "normalised",
        "split": {
            "source": split,
            "seed": split_seed,
            "method": "sha256(seed:id), moagraph.pools.splits.split_ids",
            "ids": {k: len(v) for k, v in parts.items()},
            "used": {"train": len(train), "validation": len(heldout), "test": len(test)},
        },
        "test_ids": [e.id for e in test],
        "latency_aware": latency,
        "guided_iterations": guided_iterations,
        "train_ids": [e.id for e in train],
        "heldout_ids": [e.id for e in heldout],
        "iterations": iterations,
        "optimizer_options": {
            k: v for k, v in kwargs.items() if isinstance(v, (str, int, float, type(None)))
        },
        "agent_model": getattr(kwargs.get("agent"), "model", None),
        "multi_objective": multi_objective,
        "sink_mode": space.sink_mode,
        "evaluator": plan["evaluator"],
        "objective": plan["objective"],
        "pool_models": {m.name: {k: getattr(m, k) for k in _IDENTITY_FIELDS} for m in pool.models},
    }
    if resume and (not study_path.exists() or name not in list_studies(study_path)):
        known = list_studies(study_path) if study_path.exists() else []
        raise ValueError(
            f"--resume: study {name!r} is not in {study_path} (known: {', '.join(known) or 'none'}); "
            "check --study-name and --study, or drop --resume to start a new study"
        )
    st = Study.open(study_path, name, config, resume=resume)
    console.print(
        f"study [cyan]{name}[/cyan] in {study_path}: {opt_name} on {task_name} with pool {pool.name}, "
        f"budget {budget:g}, {len(space.feasible_mixes())} feasible mixes",
        highlight=False,
    )
    console.print(f"objective: {plan['objective']}", highlight=False)
    console.print(f"evaluator: {plan['evaluator_text']}", highlight=False)
    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    try:
        with prog:
            bar = prog.add_task(opt_name, total=iterations)

            def on_trial(done: int, total: int, row: Any, best: float) -> None:
                prog.update(bar, completed=done, description=f"{opt_name} best {best:.3f}")

            res = await run_study(
                st,
                opt,
                evaluator,
                iterations,
                multi_objective=multi_objective or latency,
                latency_weight=0.05 if latency else 0.0,
                on_trial=on_trial,
            )
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
        + (
            " -- objective: ORACLE best-of-n (upper bound, not an achievable score)"
            if oracle
            else ""
        ),
    )
    rcols = (
        ("train reward (oracle UB)", "validation reward (oracle UB)")
        if oracle
        else ("train reward", "validation reward")
    )
    for col in (*rcols, "cost (norm. FLOPs)", "trials", "graph"):
        t.add_column(col)
    t.add_row(
        f"{res.train_reward:.3f}",
        "-" if res.heldout_reward is None else f"{res.heldout_reward:.3f}",
        f"{res.cost:.2f}",
        str(res.n_trials),
        graph_text(res.best_graph),
    )
    console.print(t)
    if res.test_reward is not None and res.test_ci is not None:
        console.print(
            f"test {'reward (oracle UB)' if oracle else 'accuracy'}: {res.test_reward:.3f} "
            f"(95% CI {res.test_ci[0]:.3f}-{res.test_ci[1]:.3f}, n={res.test_n} test questions never seen in search)",
            highlight=False,
        )
    ph = res.phases
    console.print(
        f"evaluations: {res.n_trials} (pilot {ph.get('pilot', 0)}, pretest {ph.get('pretest', 0)}, "
        f"guided/search {ph.get('guided', 0)})",
        highlight=False,
    )
    if res.stats.get("parse_failure_rate") is not None or res.stats.get("agent_calls"):
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
    console.print(
        f"best graph written to {path}; report: moagraph report {study_path}", highlight=False
    )


@app.command("report")
def report_command(
    study: Annotated[Path, typer.Argument(help="Study SQLite file written by `moagraph search`.")],
    outdir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: <study>-report/).")
    ] = None,
    names: Annotated[
        str | None, typer.Option("--names", help="Comma-separated study names (default: all).")
    ] = None,
) -> None:
    """PNG/HTML report of a study file: best-so-far curves, Pareto front, best graph."""
    from moagraph.search.report import write_report

    try:
        out = outdir or study.with_name(study.stem + "-report")
        files = write_report(study, out, [n.strip() for n in names.split(",")] if names else None)
    except ValueError as e:
        raise fail(e) from None
    console.print(files.table)
    console.print(
        f"wrote {files.html}, {files.convergence_png}, {files.pareto_png}"
        + (f", {files.best_graph_png}" if files.best_graph_png else ""),
        highlight=False,
    )


def _replay_query_ids(pool: Any, wanted: list[str] | None) -> set[str] | None:
    """Query ids every searched replay model recorded (None for a pool with live models)."""
    from moagraph.search.evaluator import is_replay_pool, pool_replay_records

    if not is_replay_pool(pool, wanted):
        return None
    names = list(wanted) if wanted else list(pool.names)
    have: dict[str, set[str]] = {}
    for r in pool_replay_records(pool, names):
        have.setdefault(str(r["model"]), set()).add(str(r["query_id"]))
    sets = [have.get(m, set()) for m in names]
    return set.intersection(*sets) if sets else set()


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
        "models": wanted,
        "flat": flat,
        "sink_mode": "vote",
        "max_copies": None,
        "records": None,
        "evaluator": "executor",
        "notes": notes,
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
        sink_mode="select",
        evaluator="exact-replay-select",
        objective=ORACLE_OBJECTIVE,
        evaluator_text=(
            "exact replay, select mode (oracle best-of-n from the recorded judge scores, no LLM call); "
            f"kind {kind!r} answers cannot be majority-voted, so a vote sink would score an arbitrary input; "
            "copies per model capped at the recorded samples per query"
        ),
    )
    return plan
