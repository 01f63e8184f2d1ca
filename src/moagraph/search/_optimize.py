"""``moagraph.search.optimize``: one call runs a whole graph search (Optuna's
``optimize`` / DSPy's ``compile`` shape); the CLI ``moagraph search`` only
parses options and prints what this returns.

:func:`prepare_search` builds everything a search needs (questions split into
train / validation / test, the search space, the evaluator, the optimiser,
the study config and name) without evaluating anything; :func:`aoptimize`
opens the study in its storage and drives it; :func:`optimize` is its
synchronous form; :func:`estimate_search` is the ``--dry-run`` plan (no model
call).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moagraph.errors import ConfigError
from moagraph.search.base import Optimizer
from moagraph.search.space import SearchSpace, default_output_model, parse_budget
from moagraph.search.storage import StorageLike, StudyStorage, get_storage
from moagraph.search.study import ProgressFn, Study, StudyError, StudyResult, run_study

__all__ = [
    "ORACLE_OBJECTIVE",
    "SearchEstimate",
    "SearchSetup",
    "aoptimize",
    "create_study",
    "estimate_search",
    "load_study",
    "optimize",
    "plan_evaluation",
    "prepare_search",
    "replay_query_ids",
]


Log = Callable[[str], None]

ALL_QUESTIONS = 100_000
"""A --train-n/--heldout-n/--test-n this large means every question of that part (no note)."""


def create_study(storage: StorageLike, name: str, config: dict[str, Any] | None = None) -> Study:
    """A new study ``name`` in ``storage`` (``None``: in memory; ``"sqlite:///PATH"`` or a
    path: SQLite; or a :class:`~moagraph.search.storage.StudyStorage`)."""
    return Study.open(storage, name, dict(config or {}))


def load_study(storage: StorageLike, name: str) -> Study:
    """An existing study (its trials, held-out picks and result) from ``storage``."""
    return Study.load(storage, name)


@dataclass
class SearchSetup:
    """Everything one search needs, built without evaluating anything."""

    name: str
    config: dict[str, Any]
    space: SearchSpace
    evaluator: Any
    optimizer: Optimizer
    iterations: int
    plan: dict[str, Any]
    pool: Any
    task: Any
    notes: list[str] = field(default_factory=list)
    examples: dict[str, list[Any]] = field(default_factory=dict)
    runtimes: list[Any] = field(default_factory=list)
    multi_objective: bool = False
    latency: bool = False

    async def aclose(self) -> None:
        await self.optimizer.aclose()
        for rt in self.runtimes:
            await rt.aclose()


def _load_pool(pool: Any) -> Any:
    from moagraph.models.pool import Pool, load_pool
    from moagraph.pools import resolve_pool

    if isinstance(pool, Pool):
        return pool
    return load_pool(resolve_pool(str(pool)))


def _load_task(task: Any, data_dir: Path | None = None) -> Any:
    if not isinstance(task, str):
        return task
    from moagraph.tasks.registry import get_task

    return get_task(task, data_dir=data_dir) if data_dir is not None else get_task(task)


def prepare_search(
    pool: Any,
    task: Any,
    *,
    optimizer: str = "agent-reinforce",
    n_trials: int = 10,
    budget: str | float = 4,
    budget_dollars: float | None = None,
    guided_iterations: int | None = None,
    pilot: str | None = None,
    mixes: str | None = None,
    train_n: int = 10,
    heldout_n: int = 20,
    test_n: int = 100,
    split: str = "test",
    split_seed: int = 0,
    sink: str = "auto",
    output_model: str | None = None,
    latency: bool = False,
    seed: int = 0,
    max_nodes: int = 4,
    flat: bool = False,
    stages: int = 1,
    thresholds: Sequence[float] = (1.0, 0.5),
    updates: bool = True,
    models: Sequence[str] | None = None,
    study_name: str | None = None,
    agent: Any = None,
    agent_pool: Any = "local",
    agent_model: str | None = None,
    multi_objective: bool = False,
    cache: str | Path | None = None,
    max_tokens: int = 256,
    ray: str | None = None,
    data_dir: Path | None = None,
    log: Log | None = None,
) -> SearchSetup:
    """Build the search (see :func:`optimize` for the options); evaluates nothing."""
    from moagraph.models.base import SamplingParams
    from moagraph.models.cache import CallCache
    from moagraph.models.runtime import PoolRuntime
    from moagraph.pools.splits import split_ids
    from moagraph.search import get_optimizer, optimizer_names
    from moagraph.search.agent import RuntimeAgent
    from moagraph.search.evaluator import ExactReplayEvaluator, ExecutorEvaluator, is_replay_pool

    say = log or (lambda _m: None)
    if optimizer not in optimizer_names():
        raise ConfigError(
            f"--optimizer {optimizer!r} is unknown; use one of: {', '.join(optimizer_names())}"
        )
    if n_trials < 1:
        raise StudyError(f"n_trials={n_trials}: use --iterations >= 1")
    pool_arg = pool
    pool = _load_pool(pool)
    task_obj = _load_task(task, data_dir)
    task_name = task if isinstance(task, str) else str(getattr(task_obj, "name", task_obj))
    wanted = list(models) if models else None
    for m in wanted or []:
        if m not in pool:
            raise ConfigError(
                f"--models: {m!r} is not in pool {pool.name!r} ({', '.join(pool.names)})"
            )
    if sink not in ("auto", "llm", "vote"):
        raise ConfigError(f"--sink {sink!r}: use auto, llm or vote")
    budget_value, paper_b = parse_budget(budget)
    # Train / validation / test: the split's ids (for a replay pool, only the ids it recorded)
    # are partitioned by a hash of (seed, id) (moagraph.pools.splits.split_ids); the search sees
    # train ids only, the final pick validation ids, the report test ids.
    all_examples = task_obj.load(split)
    pool_ids = replay_query_ids(pool, wanted)
    if pool_ids is not None:
        all_examples = [e for e in all_examples if e.id in pool_ids]
    parts = split_ids([e.id for e in all_examples], seed=split_seed)
    by_id = {e.id: e for e in all_examples}

    def draw(part: str, n: int, salt: int) -> list[Any]:
        ids = list(parts[part])
        random.Random(seed * 1000 + salt).shuffle(ids)
        return [by_id[i] for i in ids[:n]]

    train, heldout, test = (
        draw("train", train_n, 1),
        draw("validation", heldout_n, 2),
        draw("test", test_n, 3),
    )
    if not train or (heldout_n and not heldout):
        raise ConfigError(
            f"--split {split!r}: {len(all_examples)} usable questions split into "
            f"{', '.join(f'{k} {len(v)}' for k, v in parts.items())}; not enough for --train-n/--heldout-n"
        )
    notes: list[str] = []
    for part, got, want in (
        ("train", train, train_n),
        ("validation", heldout, heldout_n),
        ("test", test, test_n),
    ):
        if len(got) < want < ALL_QUESTIONS:
            notes.append(
                f"{part}: only {len(got)} of --{'heldout' if part == 'validation' else part}-n {want} questions available"
            )
    examples = [*train, *heldout, *test]
    plan = plan_evaluation(task_obj, task_name, pool, wanted, flat, [e.id for e in examples])
    sink_mode = plan["sink_mode"]
    replay_only = is_replay_pool(pool, plan["models"] or wanted)
    if output_model is not None and output_model not in pool:
        raise ConfigError(
            f"--output-model: {output_model!r} is not in pool {pool.name!r} ({', '.join(pool.names)})"
        )
    # a hybrid pool (``moagraph pool extend``): recorded node answers, a live output node reads them
    live_output = output_model is not None and pool[output_model].backend != "replay"
    if sink_mode == "vote":
        if sink == "llm" and replay_only and not live_output:
            raise ConfigError(
                f"--sink llm: pool {pool.name!r} is replay-only, so nothing can run the output node on the "
                "graph's answers; use --sink vote (or auto), a pool with live models, or a hybrid pool "
                "(moagraph pool extend POOL --add local -o hybrid.yaml) with --output-model naming its live model"
            )
        if sink == "llm" or (sink == "auto" and (not replay_only or live_output)):
            sink_mode = "llm"
            if plan["evaluator"].startswith("exact-replay"):
                plan.update(
                    evaluator="executor",
                    objective=f"mean task score of the output node's ({output_model}) answer",
                    evaluator_text=(
                        "graph executor: the nodes' answers come from the recordings, the live output "
                        f"node {output_model} reads them (every call through the call cache); copies per "
                        "model capped at the recorded samples per query"
                    ),
                )
        elif sink == "auto":
            plan["notes"].append(
                "sink: a free vote (the pool is replay-only, so no LLM output node can read the graph's answers); "
                "the paper's graphs end in a charged LLM output node (--sink llm on a live pool)"
            )
    if output_model is not None and sink_mode != "llm":
        plan["notes"].append(f"--output-model {output_model} is unused: the sink is a {sink_mode}")
    if ray is not None and plan["evaluator"] == "exact-replay-vote":
        # exact replay calls no model; on a cluster, score through the executor so the calls
        # go to the replicas (the same scores: exact replay reproduces the executor's)
        plan.update(
            evaluator="executor",
            evaluator_text="graph executor, models as replicas on the Ray cluster (--ray)",
        )
    space_kw: dict[str, Any] = dict(
        budget_dollars=budget_dollars,
        max_nodes=max_nodes,
        models=plan["models"],
        flat=plan["flat"],
        sink_mode=sink_mode,
        max_copies=plan["max_copies"],
        output_model=output_model if sink_mode == "llm" else None,
        stages=stages,
        thresholds=thresholds,
    )
    if paper_b is not None:
        probe = SearchSpace.from_pool(pool, task_obj, budget=None, **space_kw)
        budget_value = probe.paper_budget(paper_b)
        unit = probe.config()["unit"]
        out_m = probe.output_model or "(priced as) " + default_output_model(probe.models)
        say(
            f"budget paper:{paper_b} = {budget_value:.2f} normalised FLOPs: a complete DAG of {paper_b} "
            f"{min(probe.models, key=lambda m: m.n_params).name} nodes + an output node {out_m} "
            f"(unit: {unit}; the official rule, FairyFali/AgentRE swarm/graph/composite_graph.py)"
        )
    if budget_value is None:
        raise ConfigError(f"--budget {budget!r}: give a number or paper:b")
    notes.extend(plan["notes"])
    space = SearchSpace.from_pool(pool, task_obj, budget=budget_value, **space_kw)
    run_pool = pool
    if ray is not None:  # models as Ray replicas; the study, cache and grader stay here
        from moagraph.scale.cluster import connect, on_cluster

        connect(ray)
        run_pool = on_cluster(pool)
    call_cache = CallCache(cache) if cache is not None else None
    runtime = PoolRuntime(run_pool, cache=call_cache)
    runtimes: list[Any] = [runtime]
    evaluator: Any
    if plan["evaluator"] == "executor":
        evaluator = ExecutorEvaluator(
            runtime,
            task_obj,
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
            task=task_obj,
            records=plan["records"],
            test=test,
        )
    kwargs: dict[str, Any] = {}
    from moagraph.search import AGENT_OPTIMIZERS

    if optimizer in AGENT_OPTIMIZERS:
        if agent is None:
            pool_key = pool_arg if isinstance(pool_arg, str) else pool.name
            apool = (
                pool
                if agent_pool in (pool_key, pool.name) or agent_pool is pool
                else _load_pool(agent_pool or "local")
            )
            live = [m.name for m in apool.models if m.backend != "replay"]
            default_agent = (
                "qwen-coder-1.5b" if "qwen-coder-1.5b" in live else (live[0] if live else None)
            )
            name = agent_model or default_agent
            if name is None or name not in apool:
                raise ConfigError(
                    f"--agent-model: pick a live model of pool {apool.name!r} ({', '.join(apool.names)})"
                )
            if apool is pool:
                agent_runtime = runtime
            else:
                agent_runtime = PoolRuntime(
                    apool, cache=CallCache(cache) if cache is not None else None
                )
                runtimes.append(agent_runtime)
            agent = RuntimeAgent(agent_runtime, name)
        kwargs = {"agent": agent, "task_kind": getattr(task_obj, "kind", None)}
    if optimizer == "agent-reinforce":
        kwargs["objective"] = "latency" if latency else "accuracy"
        if guided_iterations is not None:
            kwargs["guided_iterations"] = guided_iterations
        from moagraph.search.agent_reinforce import MIX_MODES, PILOT_MODES, auto_pilot_mixes

        auto_pilot, auto_mixes = auto_pilot_mixes(space.sink_mode)
        if pilot not in (None, "auto", *PILOT_MODES):
            raise ConfigError(f"--pilot {pilot!r}: use one of auto, {', '.join(PILOT_MODES)}")
        if mixes not in (None, "auto", *MIX_MODES):
            raise ConfigError(f"--mixes {mixes!r}: use one of auto, {', '.join(MIX_MODES)}")
        kwargs["pilot"] = auto_pilot if pilot in (None, "auto") else pilot
        kwargs["mixes"] = auto_mixes if mixes in (None, "auto") else mixes
        if space.conditional and mixes in (None, "auto"):
            kwargs["mixes"] = "all"  # a mix escalates: only its cheapest model must fit
        if not updates:
            kwargs["updates"] = False
        if (pilot in (None, "auto") or mixes in (None, "auto")) and space.sink_mode != "llm":
            say(
                f"agent-reinforce: pilot={kwargs['pilot']}, mixes={kwargs['mixes']} (auto: with a free "
                "vote sink, weak budget-filling voters outvote the best model; the paper's "
                "size/maximal apply to graphs with an LLM output node: --pilot size --mixes maximal)"
            )
    elif guided_iterations is not None:
        raise ConfigError(
            "--guided-iterations applies to --optimizer agent-reinforce only; use --iterations"
        )
    if not updates and optimizer != "agent-reinforce":
        raise ConfigError("--no-updates applies to --optimizer agent-reinforce only; drop it")
    for flag, val in (("--pilot", pilot), ("--mixes", mixes)):
        if val not in (None, "auto") and optimizer != "agent-reinforce":
            raise ConfigError(f"{flag} applies to --optimizer agent-reinforce only; drop it")
    opt = get_optimizer(optimizer, space, seed=seed, **kwargs)
    iterations = n_trials
    if guided_iterations is not None:
        iterations = guided_iterations + int(getattr(opt, "planned_prior_evaluations", 0))
    btag = f"paper{paper_b}" if paper_b is not None else f"{budget_value:g}"
    name = study_name or f"{optimizer}-{task_name}-{pool.name}-b{btag}-s{seed}"
    config = {
        "optimizer": optimizer,
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
        "pool_models": {m.name: m.identity_fields() for m in pool.models},
    }
    return SearchSetup(
        name=name,
        config=config,
        space=space,
        evaluator=evaluator,
        optimizer=opt,
        iterations=iterations,
        plan=plan,
        pool=pool,
        task=task_obj,
        notes=notes,
        examples={"train": train, "heldout": heldout, "test": test},
        runtimes=runtimes,
        multi_objective=multi_objective,
        latency=latency,
    )


async def run_search(
    setup: SearchSetup,
    storage: StorageLike = None,
    *,
    resume: bool = False,
    on_trial: ProgressFn | None = None,
    on_open: Callable[[Study], None] | None = None,
    close: bool = True,
) -> StudyResult:
    """Open ``setup``'s study in ``storage`` (create, or continue it with ``resume``) and run it.

    Closes the setup's runtimes and the optimiser when done (unless ``close=False``:
    then the caller may evaluate more with ``setup.evaluator`` and calls
    ``setup.aclose()``); a storage given as an object stays open (a path or URL is
    opened and closed here)."""
    store: StudyStorage | None = None
    try:
        owned = not isinstance(storage, StudyStorage)
        store = get_storage(storage)
        if resume and setup.name not in store.study_names():
            known = store.study_names()
            raise StudyError(
                f"--resume: study {setup.name!r} is not in {getattr(store, 'path', 'the storage')} "
                f"(known: {', '.join(known) or 'none'}); check --study-name and --study, or drop "
                "--resume to start a new study"
            )
        st = Study.open(store, setup.name, setup.config, resume=resume)
        if on_open is not None:
            on_open(st)
        return await run_study(
            st,
            setup.optimizer,
            setup.evaluator,
            setup.iterations,
            multi_objective=setup.multi_objective or setup.latency,
            latency_weight=0.05 if setup.latency else 0.0,
            on_trial=on_trial,
        )
    finally:
        if store is not None and owned:
            store.close()
        if close:
            await setup.aclose()


async def aoptimize(
    pool: Any,
    task: Any = None,
    *,
    storage: StorageLike = None,
    resume: bool = False,
    on_trial: ProgressFn | None = None,
    evaluator: Any = None,
    **options: Any,
) -> StudyResult:
    """Async :func:`optimize` (for callers already inside an event loop)."""
    if isinstance(pool, SearchSpace):
        return await _optimize_space(
            pool, evaluator, storage=storage, resume=resume, on_trial=on_trial, **options
        )
    if evaluator is not None:
        raise ConfigError("evaluator=: pass a SearchSpace as the first argument to use your own")
    if task is None:
        raise ConfigError("task: name a task (e.g. 'math') or pass a Task object")
    setup = prepare_search(pool, task, **options)
    return await run_search(setup, storage, resume=resume, on_trial=on_trial)


async def _optimize_space(
    space: SearchSpace,
    evaluator: Any,
    *,
    storage: StorageLike,
    resume: bool,
    on_trial: ProgressFn | None,
    optimizer: str = "random",
    n_trials: int = 10,
    seed: int = 0,
    study_name: str | None = None,
    multi_objective: bool = False,
    **optimizer_options: Any,
) -> StudyResult:
    from moagraph.search import get_optimizer

    if evaluator is None:
        raise ConfigError(
            "optimize(space, ...): a SearchSpace needs evaluator= (a GraphEvaluator); "
            "or pass a pool and a task to have one built"
        )
    opt = get_optimizer(optimizer, space, seed=seed, **optimizer_options)
    config = {
        "optimizer": optimizer,
        "seed": seed,
        "space": space.config(),
        "iterations": n_trials,
        "optimizer_options": {
            k: v
            for k, v in optimizer_options.items()
            if isinstance(v, (str, int, float, type(None)))
        },
        "multi_objective": multi_objective,
    }
    setup = SearchSetup(
        name=study_name or f"{optimizer}-s{seed}",
        config=config,
        space=space,
        evaluator=evaluator,
        optimizer=opt,
        iterations=n_trials,
        plan={},
        pool=None,
        task=None,
        multi_objective=multi_objective,
    )
    return await run_search(setup, storage, resume=resume, on_trial=on_trial)


def optimize(
    pool: Any,
    task: Any = None,
    *,
    storage: StorageLike = None,
    resume: bool = False,
    on_trial: ProgressFn | None = None,
    evaluator: Any = None,
    **options: Any,
) -> StudyResult:
    """Search a collaboration graph of ``pool``'s models for ``task`` under a budget.

    ``pool``: a bundled pool name, a pool YAML path or a ``Pool`` (or a
    :class:`~moagraph.search.SearchSpace` together with ``evaluator=``, your own
    :class:`~moagraph.search.evaluator.GraphEvaluator`). ``task``: a task name or
    object. ``storage``: ``None`` (in memory), ``"sqlite:///PATH"``, a path, or a
    :class:`~moagraph.search.storage.StudyStorage`; ``resume=True`` continues the
    stored study ``study_name`` where it stopped. Options (as the CLI's): ``optimizer``
    (agent-reinforce, reinforce, random, bayesopt, textgrad, exhaustive, maao), ``n_trials``,
    ``budget`` (normalised FLOPs or ``"paper:b"``), ``budget_dollars``, ``seed``,
    ``train_n``, ``heldout_n``, ``test_n``, ``split``, ``split_seed``, ``max_nodes``,
    ``flat``, ``stages`` (> 1: conditional graphs, a cascade whose later stages run only when
    earlier answers disagree; the budget then applies to the expected cost), ``thresholds``
    (the escalation thresholds a stage may use), ``updates`` (agent-reinforce: False = the
    pilot + mix choice ablation), ``models``, ``sink``, ``output_model``, ``latency``,
    ``multi_objective``,
    ``guided_iterations``, ``pilot`` (agent-reinforce: ``"size"``, the paper's, or
    ``"coverage"``: every model's own train accuracy in the pilot), ``mixes``
    (agent-reinforce: ``"maximal"``, the paper's, or ``"all"`` feasible mixes; both
    default to ``"auto"``: the paper's with an LLM sink, coverage/all with a vote sink), ``study_name``, ``agent`` (an ``AgentLLM``) or
    ``agent_pool``/``agent_model``, ``cache`` (a call-cache file), ``max_tokens``,
    ``ray`` (``HOST:PORT``, ``auto`` or ``local``: model calls on a Ray cluster).

    An evaluation that raises is stored as a failed trial and the search goes on.
    Returns the picked graph (best on the validation questions) with its rewards,
    scored once on test questions the search never saw.

    >>> import moagraph
    >>> res = moagraph.search.optimize("zeroeval-math", "math", split="zeroeval",
    ...     optimizer="random", n_trials=4, budget=4, flat=True,
    ...     models=["gemma-2-9b-it", "Meta-Llama-3-8B-Instruct"],
    ...     train_n=8, heldout_n=4, test_n=8, seed=0)
    >>> res.n_trials, res.n_failed, res.cost <= 4
    (4, 0, True)
    >>> sorted({n.model for n in res.best_graph.llm_nodes}) <= ["Meta-Llama-3-8B-Instruct", "gemma-2-9b-it"]
    True
    """
    return asyncio.run(
        aoptimize(
            pool,
            task,
            storage=storage,
            resume=resume,
            on_trial=on_trial,
            evaluator=evaluator,
            **options,
        )
    )


# --- --dry-run: what a search would spend -----------------------------------------------
@dataclass
class SearchEstimate:
    """Upper bounds on what a search spends (every graph fits the per-query budget)."""

    queries: dict[str, int]  # graph evaluations on questions, per phase (train, heldout, test)
    flops_per_query: float  # absolute FLOPs, at most
    flops_norm_per_query: float  # normalised FLOPs (the budget), at most
    dollars_per_query: float
    calls_per_query: int  # model calls of one graph on one question, at most
    replayed: bool  # True: answers come from recordings, no model is called
    agent_calls: int  # agent LLM calls, about (one reply per trial)

    @property
    def total_queries(self) -> int:
        return sum(self.queries.values())

    @property
    def total_calls(self) -> int:
        return 0 if self.replayed else self.total_queries * self.calls_per_query

    @property
    def total_flops(self) -> float:
        return self.total_queries * self.flops_per_query

    @property
    def total_dollars(self) -> float:
        return self.total_queries * self.dollars_per_query

    def lines(self) -> list[str]:
        q = self.queries
        out = [
            f"dry run: no model was called; at most {self.total_queries} graph evaluations on questions "
            f"(train {q['train']}, validation {q['heldout']}, test {q['test']})",
            f"per query, at most: {self.flops_norm_per_query:.3g} normalised FLOPs "
            f"({self.flops_per_query:.3g} FLOPs), ${self.dollars_per_query:.6f}, "
            f"{self.calls_per_query} model calls",
            f"total, at most: {self.total_flops:.3g} FLOPs, ${self.total_dollars:.4f}, "
            f"{self.total_calls} model calls"
            + (
                " (exact replay: every answer comes from the pool's recordings)"
                if self.replayed
                else ""
            ),
        ]
        if self.agent_calls:
            out.append(f"agent: about {self.agent_calls} LLM calls (one reply per trial)")
        return out


def estimate_search(setup: SearchSetup, heldout_top: int = 3) -> SearchEstimate:
    """What ``setup`` would spend, from the space's budget and the task's average lengths
    (``graph/cost.py``'s estimates); calls nothing."""
    from moagraph.search import AGENT_OPTIMIZERS

    sp = setup.space
    ex = setup.examples
    deg = 0 if sp.flat else max(0, sp.max_nodes - 1)
    sink_calls = 1 if sp.sink_mode == "llm" and sp.output_model else 0
    per_call_d = max((sp.node_dollars(m, deg) for m in sp.model_names), default=0.0)
    out_d = (
        sp.node_dollars(sp.output_model, sp.max_nodes) if sink_calls and sp.output_model else 0.0
    )
    dollars = (
        sp.budget_dollars if sp.budget_dollars is not None else sp.max_nodes * per_call_d + out_d
    )
    budget = sp.budget or 0.0
    return SearchEstimate(
        queries={
            "train": setup.iterations * len(ex.get("train", [])),
            "heldout": heldout_top * len(ex.get("heldout", [])),
            "test": len(ex.get("test", [])),
        },
        flops_per_query=budget * sp.unit_flops,
        flops_norm_per_query=budget,
        dollars_per_query=dollars,
        calls_per_query=sp.max_nodes + sink_calls,
        replayed=str(setup.plan.get("evaluator", "")).startswith("exact-replay"),
        agent_calls=setup.iterations if setup.config.get("optimizer") in AGENT_OPTIMIZERS else 0,
    )


# --- the evaluation plan ---------------------------------------------------------------
def replay_query_ids(pool: Any, wanted: list[str] | None) -> set[str] | None:
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


def plan_evaluation(
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
        raise ConfigError(
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
            raise ConfigError(
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
