"""One evaluation run, assembled the way ``moagraph eval`` starts it.

Why a separate object: a run needs more than :func:`moagraph.evaluate` takes (names
resolved to a pool, graph and examples; a run id; the config that ``--resume`` checks
so a resumed run cannot silently mix models or sampling settings; a call cache), and
the CLI should only parse flags and print. Scripts get the same run, resume checks
included, without going through the CLI.

>>> from moagraph.graph.eval_job import prepare_eval
>>> job = prepare_eval(pool="zeroeval-math", model="Qwen2.5-7B-Instruct", task="math",
...                    split="zeroeval", n=4, run_id="doc")
>>> est = job.dry_run()
>>> est.calls_per_query, est.queries
(1, 4)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moagraph.errors import ConfigError
from moagraph.graph.cost import GraphCost, estimate_cost
from moagraph.graph.evaluate import EvalReport, aevaluate
from moagraph.graph.executor import Budget, GraphExecutor
from moagraph.graph.policy import GraphPolicy
from moagraph.graph.spec import Graph
from moagraph.models.base import SamplingParams
from moagraph.models.pool import ModelSpec, Pool
from moagraph.tasks.base import Example, Task

__all__ = ["DryRun", "EvalJob", "prepare_eval"]


@dataclass(frozen=True)
class DryRun:
    """What a run would cost, from the task's average input/output lengths; nothing called."""

    cost: GraphCost  # per query
    calls_per_query: int
    queries: int

    @property
    def total_flops(self) -> float:
        return self.cost.flops * self.queries

    @property
    def total_dollars(self) -> float:
        return self.cost.dollars * self.queries

    @property
    def total_calls(self) -> int:
        return self.calls_per_query * self.queries


@dataclass
class EvalJob:
    """A graph on a task's examples with a pool: ready to estimate or run."""

    pool: Pool
    graph: Graph
    task: Task
    split: str
    examples: list[Example]
    params: SamplingParams
    budget: Budget | None
    run_id: str
    config: dict[str, Any]  # what --resume compares with the stored run
    cache_note: str | None = None  # after a run: why the call cache stopped writing, if it did

    def estimate(self) -> GraphCost:
        """Planned cost per query (the executor's estimate: prompt lengths from the task)."""
        return estimate_cost(self.graph, self.pool, self.task)

    def dry_run(self) -> DryRun:
        return DryRun(self.estimate(), len(self.graph.llm_nodes), len(self.examples))

    def over_budget(self) -> str | None:
        """Why every query would be refused, or None when the plan fits the budget."""
        return self.budget.over_estimate(self.estimate()) if self.budget is not None else None

    async def arun(
        self,
        store: Any,
        *,
        cache: str | Path | None = None,
        concurrency: int = 8,
        progress: bool = False,
        resume: bool = False,
        retry_errors: bool = False,
    ) -> EvalReport:
        """Run (or continue) the job into ``store`` (a :class:`moagraph.RunStore`)."""
        from moagraph.models.runtime import PoolRuntime

        if resume:
            self.check_resume_data(store)
        call_cache = _open_cache(cache)
        runtime = PoolRuntime(self.pool, cache=call_cache)
        try:
            executor = GraphExecutor(runtime, self.task, default_params=self.params)
            policy = GraphPolicy(self.graph, executor, budget=self.budget)
            return await aevaluate(
                policy,
                self.task,
                self.examples,
                store=store,
                run_id=self.run_id,
                resume=resume,
                concurrency=concurrency,
                progress=progress,
                config=self.config,
                retry_errors=retry_errors,
            )
        finally:
            await runtime.aclose()
            if call_cache is not None:
                self.cache_note = call_cache.write_disabled

    def check_resume_data(self, store: Any) -> None:
        """Refuse to resume a run whose stored results were made on other examples.

        The ids can stay the same while the data set changed (another copy of the data, an
        edited file): the stored results would then be reported as answers to questions
        they never saw. The config holds a fingerprint of every example's id, question and
        reference; :meth:`RunStore.create_run` compares the whole config, this names the data.
        """
        from moagraph.store import RunStoreError

        existing = store.run(self.run_id)
        if existing is None:
            return
        stored = existing.config.get(_CONTENT_KEY)
        if stored == self.config[_CONTENT_KEY]:
            return
        if existing.config.get("examples_sha256") != self.config["examples_sha256"]:
            return  # other ids (--n, --seed, --split): create_run names the changed options
        where = _data_source(self.task, self.split)
        if stored is None:
            why = (
                "was stored by an older moagraph that kept no fingerprint of the examples' "
                "questions and references, so it cannot be checked against this data"
            )
        else:
            why = (
                "was made on other examples: the ids may match, but the questions or "
                f"references of task {self.task.name!r}, split {self.split!r} ({where}) "
                "differ from the ones its results answer"
            )
        raise RunStoreError(
            f"--resume: run {self.run_id!r} in {store.path} {why}. Its {existing.n_results} "
            "stored results would be reported as this run's; restore the original data "
            "(--data-dir / $MOAGRAPH_DATA_DIR) and resume, or rerun without --resume under a "
            "new --run-id"
        )

    def run(self, store: Any, **kw: Any) -> EvalReport:
        """:meth:`arun` from synchronous code."""
        return asyncio.run(self.arun(store, **kw))


_CONTENT_KEY = "examples_content_sha256"


def examples_fingerprint(examples: list[Example]) -> str:
    """sha256 over every example's id, question and reference (in order): what a resume
    must find unchanged, since the stored scores grade those very questions."""
    h = hashlib.sha256()
    for ex in examples:
        row = [ex.id, ex.question, ex.reference]
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _data_source(task: Task, split: str) -> str:
    """Where a task's split comes from, for messages: the data folder, or bundled data."""
    from moagraph.tasks._common import FileTask

    if isinstance(task, FileTask) and split != "sample":
        return f"data folder {task.data_dir}" if task.data_dir is not None else "no data folder"
    return "bundled or task-provided data"


def _open_cache(path: str | Path | None) -> Any:
    if path is None:
        return None
    import sqlite3

    from moagraph.models.cache import CacheError, CallCache

    try:
        return CallCache(path)
    except CacheError:
        raise  # names the file and the fix
    except (sqlite3.Error, OSError) as e:
        raise ConfigError(
            f"call cache {path} cannot be used ({type(e).__name__}: {e}); pass --cache with a "
            "new path, or move that file away (it is not deleted for you)"
        ) from None


def prepare_eval(
    *,
    pool: str | Path | Pool = "local",
    graph: str | Path | Graph | None = None,
    model: str | None = None,
    task: str | Task = "gsm8k",
    split: str = "sample",
    n: int = 3,
    seed: int = 0,
    max_tokens: int = 128,
    temperature: float = 0.0,
    budget_flops: float | None = None,
    budget_dollars: float | None = None,
    run_id: str | None = None,
    ray: str | None = None,
    connect_ray: bool = True,
) -> EvalJob:
    """Resolve names (bundled pool/graph names or paths), pick the examples and build the
    job's resume config. ``graph`` and ``model`` are exclusive; neither means one call of
    the pool's first model. ``ray`` runs the pool's models as Ray replicas (HEAD:6379,
    ``auto`` or ``local``) unless ``connect_ray`` is False (a dry run calls nothing)."""
    from moagraph.graph.builders import single
    from moagraph.graphs import resolve_graph
    from moagraph.models.pool import load_pool
    from moagraph.pools import resolve_pool
    from moagraph.tasks.registry import get_task

    if graph is not None and model is not None:
        raise ConfigError(
            "--graph and --model: give one of them (a graph file, or one model to call once)"
        )
    if not math.isfinite(temperature) or temperature < 0:
        raise ConfigError(f"--temperature {temperature}: must be a finite number >= 0")
    if budget_dollars is not None and not (math.isfinite(budget_dollars) and budget_dollars >= 0):
        raise ConfigError(f"--budget-dollars {budget_dollars}: must be a finite number >= 0")
    p = pool if isinstance(pool, Pool) else load_pool(resolve_pool(str(pool)))
    specs: dict[str, ModelSpec] = {m.name: m for m in p.models}  # as written: the identity
    if ray is not None and connect_ray:  # the store and cache stay on this driver
        from moagraph.scale.cluster import connect, on_cluster

        connect(ray)
        p = on_cluster(p)
    g = (
        graph
        if isinstance(graph, Graph)
        else Graph.load(resolve_graph(str(graph)))
        if graph is not None
        else single(model or p.models[0].name)
    )
    g.validate_against(p)
    on_ray = [m for m in g.models_used if p[m].ray is not None]
    if connect_ray and on_ray:
        # a model with a `ray:` option: connect now, so an unreachable cluster stops the
        # command before any query instead of failing each one
        from moagraph.scale.cluster import ensure_connected

        try:
            ensure_connected()
        except ValueError as e:
            raise ConfigError(f"model {on_ray[0]!r} has a `ray:` option, but {e}") from None
    t = get_task(task) if isinstance(task, str) else task
    examples = t.load(split, n=n, seed=seed)
    if not examples:
        raise ConfigError(f"--split {split!r} of task {t.name!r} has no examples")
    budget = (
        Budget(max_flops_norm=budget_flops, max_dollars=budget_dollars)
        if budget_flops is not None or budget_dollars is not None
        else None
    )
    run_id = run_id or (
        f"{g.name}-{t.name}-{split}-n{n}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}-"
        f"{secrets.token_hex(2)}"
    )
    config: dict[str, Any] = {
        "graph": g.to_dict(),
        "pool": p.name,
        "pool_models": {m: specs[m].identity_fields() for m in g.models_used},
        "examples_sha256": hashlib.sha256(
            "\n".join(ex.id for ex in examples).encode("utf-8")
        ).hexdigest(),
        _CONTENT_KEY: examples_fingerprint(examples),
        "split": split,
        "seed": seed,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "budget_flops": budget_flops,
    }
    if budget_dollars is not None:  # only when set: runs stored before the flag still resume
        config["budget_dollars"] = budget_dollars
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    return EvalJob(p, g, t, split, examples, params, budget, run_id, config)
