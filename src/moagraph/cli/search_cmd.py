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
from moagraph.cli._options import DEFAULT_CACHE, deprecated, opt, resolve_task
from moagraph.search._optimize import ALL_QUESTIONS

console = Console()

DEFAULT_STAGES = 3
"""--stages default on the bundled ground-truth pools: conditional graphs (a cascade of up to
three stages) are scored exactly from the recordings, so the search can find them for free."""


@app.command("search")
def search_command(
    task: Annotated[
        str | None,
        opt(
            "--task",
            "Default: the bundled pool's task (zeroeval-math: math, mmlu-pro: mmlu-pro), else gsm8k.",
        ),
    ] = None,
    pool: Annotated[str, opt("--pool")] = "zeroeval-gsm8k",
    data_dir: Annotated[Path | None, opt("--data-dir")] = None,
    budget: Annotated[
        str, opt("--budget", "Here the smallest model is the smallest searched one.")
    ] = "paper:8",
    budget_dollars: Annotated[float | None, opt("--budget-dollars")] = None,
    optimizer: Annotated[
        str,
        typer.Option(
            "--optimizer",
            help="agent-reinforce | reinforce | random | bayesopt | textgrad | exhaustive",
        ),
    ] = "agent-reinforce",
    iterations: Annotated[
        int | None,
        typer.Option(
            "--iterations",
            min=1,
            help="Graph evaluations on training questions (all phases). Default: 10; agent-reinforce "
            "without --guided-iterations: its pilot + pretest evaluations + DEFAULT_GUIDED_ITERATIONS (1) guided one.",
        ),
    ] = None,
    guided_iterations: Annotated[
        int | None,
        typer.Option(
            "--guided-iterations",
            min=1,
            help="agent-reinforce: agent-guided evaluations after the pilot/pretest ones (the paper: 10); overrides --iterations.",
        ),
    ] = None,
    pilot: Annotated[
        str | None,
        typer.Option(
            "--pilot",
            help="agent-reinforce pilot: size (the paper's: models alone, spread over sizes), coverage (every model's own train accuracy from as few flat pilot graphs as fit) or auto (default: size with an LLM output node, coverage with a vote sink).",
        ),
    ] = None,
    mixes: Annotated[
        str | None,
        typer.Option(
            "--mixes",
            help="agent-reinforce mix choice: maximal (the paper's: budget-filling mixes), all (every feasible mix) or auto (default: maximal with an LLM output node, all with a vote sink).",
        ),
    ] = None,
    train_n: Annotated[
        int | None,
        typer.Option(
            "--train-n",
            min=1,
            help="Training questions per evaluation (default: 10; 50 on the bundled ground-truth replay pools, where an evaluation costs no call).",
        ),
    ] = None,
    heldout_n: Annotated[
        int | None,
        typer.Option(
            "--heldout-n",
            min=0,
            help="Validation questions to pick the final graph. Default: 100 on the bundled "
            "ground-truth pools (replayed evaluations are free), else 20.",
        ),
    ] = None,
    test_n: Annotated[
        int | None,
        typer.Option(
            "--test-n",
            min=0,
            help="Test questions the picked graph is reported on (95% CI). Default: every test "
            "question on the bundled ground-truth pools, else 100.",
        ),
    ] = None,
    split: Annotated[
        str | None,
        opt(
            "--split",
            "Default: the bundled pool's (zeroeval-math: zeroeval), else test. Its ids are split "
            "train/validation/test by a hash of id + --split-seed.",
        ),
    ] = None,
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
    seed: Annotated[int, opt("--seed", "Seeds the optimiser and the question sample.")] = 0,
    max_nodes: Annotated[
        int, typer.Option("--max-nodes", min=1, help="Most LLM nodes in a graph.")
    ] = 4,
    stages: Annotated[
        int | None,
        typer.Option(
            "--stages",
            min=1,
            help="Conditional graphs: up to this many stages, each later stage running only when the "
            "answers of the earlier ones disagree (1: every node always runs). The budget then "
            "applies to the expected cost per question; a request's budget caps the worst case. "
            f"Default: {DEFAULT_STAGES} on the bundled ground-truth pools, else 1.",
        ),
    ] = None,
    thresholds: Annotated[
        str,
        typer.Option(
            "--thresholds",
            help="Escalation thresholds a stage may use, comma-separated in (0, 1]: a stage runs "
            "when the agreement of the earlier answers is below it (1 = on any disagreement).",
        ),
    ] = "1,0.5",
    no_updates: Annotated[
        bool,
        typer.Option(
            "--no-updates",
            help="agent-reinforce ablation: pilot + mix choice only, no agent updates after them.",
        ),
    ] = False,
    flat: Annotated[
        bool | None,
        typer.Option(
            "--flat/--no-flat",
            help="Only first-layer assistants into the vote sink (no edges). Default: flat on a replay-only pool with a votable task (a replayed inner node would return its recorded first answer, not refine its inputs), else not.",
        ),
    ] = None,
    models: Annotated[
        str | None,
        opt(
            "--models",
            "The pool models to search over (default: all, or those within --max-params-b).",
        ),
    ] = None,
    max_params_b: Annotated[
        float | None,
        opt(
            "--max-params-b",
            "Models of estimated size are left out too. Default: 10 on the bundled ground-truth "
            "pools (zeroeval-math, zeroeval-gsm8k, mmlu-pro), else no limit; 0 = no limit.",
            min=0,
        ),
    ] = None,
    study: Annotated[Path, typer.Option("--study", help="SQLite study file.")] = Path(
        "runs/study.sqlite"
    ),
    study_name: Annotated[
        str | None, typer.Option("--study-name", help="Study name (default from the options).")
    ] = None,
    resume: Annotated[bool, opt("--resume", "Continues --study-name.")] = False,
    agent_pool: Annotated[
        str,
        typer.Option(
            "--agent-pool", help="Pool of the agent LLM: a bundled name, pool YAML file or folder."
        ),
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
        Path, opt("--cache", "Repeated graphs and agent prompts are free, so a rerun is fast.")
    ] = DEFAULT_CACHE,
    no_cache: Annotated[bool, opt("--no-cache")] = False,
    max_tokens: Annotated[int, opt("--max-tokens", min=1)] = 256,
    out: Annotated[
        Path | None,
        opt("--out", "The best graph's YAML (default: next to the study, NAME.best.yaml)."),
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare/--no-compare",
            help="Report the found graph against the best single model that fits the budget (chosen on train+validation, paired bootstrap CI on test).",
        ),
    ] = True,
    ray: Annotated[
        str | None, opt("--ray", "The study and grading stay here, so --resume works.")
    ] = None,
    dry_run: Annotated[
        bool,
        opt(
            "--dry-run",
            "For the whole search: upper bounds from the budget and the task's average lengths.",
        ),
    ] = False,
    old_n: Annotated[
        int | None, typer.Option("-n", hidden=True, min=1, help="Deprecated: --iterations.")
    ] = None,
) -> None:
    """Search a collaboration graph under a compute budget; writes the best graph as YAML.

    With no options: Agent-REINFORCE (the local Qwen2.5-Coder-1.5B agent) on the
    bundled zeroeval-math replay pool (open models of at most 10B), budget
    paper:8 (the paper's 42), then the found graph against the best single model
    on test questions. Agent calls are cached in runs/cache.sqlite."""
    if old_n is not None:
        deprecated("search -n", "--iterations (-n is the number of examples elsewhere)")
        iterations = iterations if iterations is not None else old_n
    try:
        if out is not None and out.suffix == "" and out.name in _optimizer_names():
            raise ValueError(
                f"-o {out}: -o is --out (where the best graph is written); for the optimiser "
                f"use --optimizer {out.name}"
            )
        task, split, models, flat = _resolve_defaults(pool, task, split, models, flat, max_params_b)
        if train_n is None:
            train_n = REPLAY_TRAIN_N if pool in POOL_DEFAULTS else 10
        if stages is None:
            stages = DEFAULT_STAGES if pool in POOL_DEFAULTS else 1
        if heldout_n is None:
            heldout_n = REPLAY_HELDOUT_N if pool in POOL_DEFAULTS else 20
        if test_n is None:
            test_n = REPLAY_TEST_N if pool in POOL_DEFAULTS else 100
        try:
            thresholds_v = tuple(float(t) for t in thresholds.split(",") if t.strip())
        except ValueError:
            raise ValueError(
                f"--thresholds {thresholds!r}: give numbers in (0, 1], comma-separated (e.g. 1,0.5)"
            ) from None
        if iterations is None:
            iterations = 10
            if optimizer == "agent-reinforce" and guided_iterations is None:
                guided_iterations = DEFAULT_GUIDED_ITERATIONS
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
                None if no_cache else cache,
                max_tokens,
                out,
                guided_iterations=guided_iterations,
                pilot=pilot,
                mixes=mixes,
                test_n=test_n,
                split_seed=split_seed,
                sink=sink,
                output_model=output_model,
                latency=latency,
                compare=compare,
                ray=ray,
                dry_run=dry_run,
                stages=stages,
                thresholds=thresholds_v,
                updates=not no_updates,
                data_dir=data_dir,
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
    cache_path: Path | None,
    max_tokens: int,
    out: Path | None,
    *,
    guided_iterations: int | None = None,
    pilot: str | None = None,
    mixes: str | None = None,
    test_n: int = 100,
    split_seed: int = 0,
    sink: str = "auto",
    output_model: str | None = None,
    latency: bool = False,
    compare: bool = True,
    ray: str | None = None,
    dry_run: bool = False,
    stages: int = 1,
    thresholds: tuple[float, ...] = (1.0, 0.5),
    updates: bool = True,
    data_dir: Path | None = None,
) -> None:
    """Parse-and-print around :func:`moagraph.search.prepare_search` / ``run_search``."""
    from moagraph.search import estimate_search, prepare_search, run_search
    from moagraph.search.space import graph_text

    def say(msg: str) -> None:
        console.print(msg, highlight=False)

    setup = prepare_search(
        pool_name,
        resolve_task(task_name, data_dir) if ":" in task_name else task_name,
        optimizer=opt_name,
        n_trials=iterations,
        budget=budget_text,
        budget_dollars=budget_dollars,
        guided_iterations=guided_iterations,
        pilot=pilot,
        mixes=mixes,
        train_n=train_n,
        heldout_n=heldout_n,
        test_n=test_n,
        split=split,
        split_seed=split_seed,
        sink=sink,
        output_model=output_model,
        latency=latency,
        seed=seed,
        max_nodes=max_nodes,
        flat=flat,
        models=[m.strip() for m in models.split(",")] if models else None,
        study_name=study_name,
        agent_pool=agent_pool,
        agent_model=agent_model,
        multi_objective=multi_objective,
        cache=None if dry_run else cache_path,
        max_tokens=max_tokens,
        ray=None if dry_run else ray,
        stages=stages,
        thresholds=thresholds,
        updates=updates,
        data_dir=data_dir,
        log=say,
    )
    for note in setup.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    if study_name is None and not resume and not dry_run and study_path.exists():
        # a rerun of the same command: a new study next to the old one (the agent's calls
        # come from the call cache, so it is fast), rather than an error
        from moagraph.search.study import list_studies

        known = set(list_studies(study_path))
        if setup.name in known:
            base, k = setup.name, 2
            while f"{base}-{k}" in known:
                k += 1
            setup.name = f"{base}-{k}"
            say(
                f"study {base} already in {study_path}: this run is {setup.name} "
                "(--resume continues the first, --study-name names one)"
            )
    space, name, plan = setup.space, setup.name, setup.plan
    console.print(
        f"study [cyan]{name}[/cyan] in {study_path}: {opt_name} on {task_name} with pool {setup.pool.name}, "
        f"budget {space.budget:g}, {len(space.feasible_mixes())} feasible mixes",
        highlight=False,
    )
    console.print(f"objective: {plan['objective']}", highlight=False)
    console.print(f"evaluator: {plan['evaluator_text']}", highlight=False)
    if space.conditional:
        console.print(
            f"conditional graphs: up to {space.stages} stages, a later stage running only when the "
            f"earlier answers agree less than its threshold ({', '.join(f'{t:g}' for t in space.thresholds)}); "
            "the budget applies to the expected cost per question (the nodes that ran), "
            "a request's budget caps the worst case",
            highlight=False,
        )
    if dry_run:
        try:
            for line in estimate_search(setup).lines():
                say(line)
        finally:
            await setup.aclose()
        return
    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    comparison = None
    try:
        with prog:
            bar = prog.add_task(opt_name, total=setup.iterations)

            def on_trial(done: int, total: int, row: Any, best: float) -> None:
                prog.update(bar, completed=done, description=f"{opt_name} best {best:.3f}")

            res = await run_search(setup, study_path, resume=resume, on_trial=on_trial, close=False)
        if compare and setup.examples.get("test"):
            from moagraph.search.compare import compare_best_single

            try:
                comparison = await compare_best_single(
                    setup.evaluator, space, res.best_graph, seed=seed
                )
            except ValueError as e:
                console.print(f"[yellow]no best-single comparison:[/yellow] {e}", highlight=False)
    finally:
        await setup.aclose()
    path = out or study_path.with_name(f"{name}.best.yaml")
    res.best_graph.name = res.best_graph.name or f"best-{name}"
    res.best_graph.meta.update(train_accuracy=res.train_reward, expected_flops_norm=res.cost)
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
    cost = f"{res.cost:.2f}"
    if res.worst_cost is not None:
        cost = f"{res.cost:.2f} expected, {res.worst_cost:.2f} worst"
    t.add_row(
        f"{res.train_reward:.3f}",
        "-" if res.heldout_reward is None else f"{res.heldout_reward:.3f}",
        cost,
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
    if res.escalated is not None and res.test_cost is not None:
        console.print(
            f"escalation: later stages ran on {100 * res.escalated:.0f}% of the test questions; "
            f"expected cost {res.test_cost:.2f} normalised FLOPs per question "
            f"(worst case {res.worst_cost or 0:.2f})",
            highlight=False,
        )
    ph = res.phases
    console.print(
        f"evaluations: {res.n_trials} (pilot {ph.get('pilot', 0)}, pretest {ph.get('pretest', 0)}, "
        f"guided/search {ph.get('guided', 0)})",
        highlight=False,
    )
    if res.n_failed:
        console.print(
            f"[yellow]{res.n_failed} trial(s) failed[/yellow] (their evaluation raised; stored with "
            "the error, never picked as best)",
            highlight=False,
        )
    st = res.stats
    if st.get("agent_calls") and st.get("agent_errors") == st.get("agent_calls"):
        console.print(
            f"[yellow]agent: not available[/yellow] ({str(st.get('agent_error', ''))[:160]}); "
            "the mix choice used the pilot ranking and the updates were REINFORCE steps "
            '(install the local agent with pip install -e ".[local]", or name --agent-pool)',
            highlight=False,
        )
    elif st.get("agent_calls"):
        console.print(
            f"agent: {st.get('agent_calls')} calls, {st.get('agent_replies_ok', 0)} updates and "
            f"{st.get('mix_choice_parsed', 0)} mix choice used as written, "
            f"{st.get('fallback_steps', 0)} fallback steps"
            + (f"; fixed mix {st['fixed_mix']}" if st.get("fixed_mix") else ""),
            highlight=False,
        )
    if comparison is not None:
        from moagraph.search.compare import comparison_table

        console.print(comparison_table(comparison, oracle=oracle))
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
    outdir: Annotated[Path | None, opt("--out", "A folder (default: STUDY-report/).")] = None,
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


DEFAULT_GUIDED_ITERATIONS = 3
"""agent-reinforce's guided evaluations when neither --iterations nor --guided-iterations is given.
Three, so the first command makes three calls of the local 1.5B agent on the CPU (the mix choice and
two updates; no update call follows the last guided evaluation) and ends in minutes. With the mix
fixed after the pretest, the updates change which stage each model answers in and when to escalate."""

REPLAY_TRAIN_N = 200
"""--train-n default on the POOL_DEFAULTS pools: replayed evaluations are free, so more questions."""
REPLAY_HELDOUT_N = 100
REPLAY_TEST_N = ALL_QUESTIONS
"""--heldout-n / --test-n defaults there: 100 validation questions, every test question."""

POOL_DEFAULTS: dict[str, tuple[str, str]] = {
    "zeroeval-math": ("math", "zeroeval"),
    "zeroeval-gsm8k": ("gsm8k", "zeroeval"),
    "mmlu-pro": ("mmlu-pro", "test"),
}
"""Task and split of each bundled ground-truth pool (what --task/--split default to with it)."""

DEFAULT_MAX_PARAMS_B = 10.0
"""Size cap (billions) applied by default on the POOL_DEFAULTS pools: open models one machine serves."""


def _optimizer_names() -> list[str]:
    from moagraph.search import optimizer_names

    return optimizer_names()


def _resolve_defaults(
    pool_name: str,
    task: str | None,
    split: str | None,
    models: str | None,
    flat: bool | None,
    max_params_b: float | None,
) -> tuple[str, str, str | None, bool]:
    """Fill --task/--split/--models/--flat from the pool when not given (see POOL_DEFAULTS)."""
    from moagraph.models.pool import load_pool
    from moagraph.pools import resolve_pool
    from moagraph.search.evaluator import is_replay_pool, is_votable

    known = POOL_DEFAULTS.get(pool_name)
    task = task or (known[0] if known else "gsm8k")
    split = split or (known[1] if known and task == known[0] else "test")
    cap = max_params_b if max_params_b is not None else (DEFAULT_MAX_PARAMS_B if known else None)
    if models is None and cap:
        pool = load_pool(resolve_pool(pool_name))
        keep = [
            m.name
            for m in pool.models
            if m.params_b <= cap and not (m.extra or {}).get("size_estimated")
        ]
        if not keep:
            raise ValueError(
                f"--max-params-b {cap:g}: no model of known size in pool {pool.name!r} is that small; "
                "raise it, or name --models"
            )
        models = ",".join(keep)
        console.print(
            f"models: the {len(keep)} of {len(pool.models)} in {pool.name} with a known size <= {cap:g}B "
            f"({', '.join(keep)}); --models / --max-params-b to change",
            highlight=False,
        )
    if flat is None:
        pool = load_pool(resolve_pool(pool_name))
        wanted = [m.strip() for m in models.split(",")] if models else None
        flat = (
            all(m in pool for m in wanted or [])
            and is_replay_pool(pool, wanted)
            and is_votable(resolve_task(task))
        )
    return task, split, models, flat
