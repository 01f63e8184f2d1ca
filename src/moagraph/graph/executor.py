"""Run a collaboration graph on one query: topological, concurrent, budgeted.

Each node starts the moment its inputs are done (one asyncio task per node),
so independent nodes overlap up to each endpoint's concurrency limit, which
:class:`~moagraph.models.runtime.PoolRuntime` enforces; many queries can run
through one executor at once. Every call is measured into a :class:`Trace`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from moagraph.errors import BudgetError
from moagraph.graph.cost import GraphCost, estimate_cost, task_unit_flops
from moagraph.graph.prompts import node_messages, parse_judge_choice
from moagraph.graph.spec import Graph, Role
from moagraph.graph.trace import NodeTrace, Trace
from moagraph.models.base import (
    BackendConfigError,
    BackendError,
    ReplayMiss,
    SamplingParams,
    TokenCallback,
    emit,
)
from moagraph.models.cost import call_dollars, call_flops
from moagraph.models.runtime import PoolRuntime
from moagraph.tasks.base import Example, Task

__all__ = ["Budget", "BudgetExceeded", "GraphExecutor", "vote"]


class Budget(BaseModel):
    """Caps per query. FLOPs are normalised (one no-input call of the smallest
    pool model = 1), so a budget means the same thing for any pool."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_flops_norm: float | None = Field(None, gt=0, description="Normalised FLOPs per query.")
    max_dollars: float | None = Field(None, ge=0, description="Dollars per query.")
    max_latency_s: float | None = Field(None, gt=0, description="Wall seconds per query.")

    def over_estimate(self, est: GraphCost) -> str | None:
        if self.max_flops_norm is not None and est.flops_norm > self.max_flops_norm:
            return f"estimated {est.flops_norm:.3g} normalised FLOPs > max_flops_norm {self.max_flops_norm:g}"
        if self.max_dollars is not None and est.dollars > self.max_dollars:
            return f"estimated ${est.dollars:.3g} > max_dollars {self.max_dollars:g}"
        return None


class BudgetExceeded(BudgetError):
    """A graph's planned cost is over the budget; nothing was called."""


@dataclass
class _PlanNode:
    id: str
    role: Role
    model: str | None
    inputs: list[str]
    consumers: list[str]
    params: SamplingParams
    sample_index: int
    query_bound: bool  # first-layer node: the replay pool may answer it by query id


@dataclass
class _Plan:
    graph: Graph
    order: list[_PlanNode]
    sink: str
    estimate: GraphCost
    by_id: dict[str, _PlanNode] = field(default_factory=dict)


def vote(task: Task, answers: list[Any]) -> tuple[int, dict[str, int]]:
    """Majority over extracted answers, clustered with ``task.equivalent``.

    Returns the index of the winning input (the earliest member of the
    biggest cluster; ties go to the cluster whose first member is earliest)
    and the cluster sizes keyed by their representative answer. With no
    extractable answer at all the first input wins.
    """
    clusters: list[tuple[Any, list[int]]] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        for rep, members in clusters:
            if task.equivalent(rep, a):
                members.append(i)
                break
        else:
            clusters.append((a, [i]))
    if not clusters:
        return 0, {}
    best = max(clusters, key=lambda c: (len(c[1]), -c[1][0]))
    return best[1][0], {str(rep): len(m) for rep, m in clusters}


class GraphExecutor:
    """Executes graphs for one task on one pool runtime.

    ``default_params`` apply to every LLM node; a node's own ``temperature`` /
    ``max_tokens`` override them.
    """

    def __init__(
        self,
        runtime: PoolRuntime,
        task: Task,
        *,
        default_params: SamplingParams | None = None,
    ) -> None:
        self.runtime = runtime
        self.task = task
        self.default_params = default_params or SamplingParams()
        self.unit_flops = task_unit_flops(runtime.pool, task)
        self._plans: dict[str, _Plan] = {}

    # --- planning -----------------------------------------------------------
    def plan(self, graph: Graph) -> _Plan:
        """Validate once and precompute order, params and sample indices."""
        key = graph.model_dump_json()
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        graph.validate_against(self.runtime.pool)
        order = graph.topological_order()
        seen_first: dict[str, int] = {}
        seen_inner: dict[str, int] = {}
        nodes: list[_PlanNode] = []
        for nid in order:
            n = graph.node(nid)
            params = self.default_params
            if n.temperature is not None or n.max_tokens is not None:
                params = dataclasses.replace(
                    params,
                    temperature=n.temperature if n.temperature is not None else params.temperature,
                    max_tokens=n.max_tokens if n.max_tokens is not None else params.max_tokens,
                )
            counter = seen_inner if n.inputs else seen_first
            idx = counter.get(n.model or "", 0)
            counter[n.model or ""] = idx + 1
            nodes.append(
                _PlanNode(
                    id=nid,
                    role=n.role,
                    model=n.model,
                    inputs=list(n.inputs),
                    consumers=graph.successors(nid),
                    params=params,
                    sample_index=n.sample_index if n.sample_index is not None else idx,
                    query_bound=not n.inputs,
                )
            )
        plan = _Plan(graph, nodes, graph.sink, estimate_cost(graph, self.runtime.pool, self.task))
        plan.by_id = {p.id: p for p in nodes}
        if len(self._plans) > 256:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def estimate(self, graph: Graph) -> GraphCost:
        return self.plan(graph).estimate

    # --- running ------------------------------------------------------------
    async def run(
        self,
        graph: Graph,
        example: Example,
        *,
        budget: Budget | None = None,
        on_token: TokenCallback | None = None,
    ) -> Trace:
        """Answer ``example`` with ``graph``.

        Raises :class:`BudgetExceeded` (before any call) when the planned cost is
        over ``budget``. A node failure or a measured overrun does not raise: the
        trace comes back with ``error`` set and the nodes that finished.
        """
        plan = self.plan(graph)
        if budget is not None:
            why = budget.over_estimate(plan.estimate)
            if why:
                raise BudgetExceeded(
                    f"graph {graph.name!r}: {why}; raise the budget or use a cheaper graph"
                )
        trace = Trace(query_id=example.id, policy=graph.name or "graph")
        trace.meta.update(
            est_flops_norm=plan.estimate.flops_norm,
            unit_flops=self.unit_flops,
        )
        t0 = time.perf_counter()
        done: dict[str, NodeTrace] = {}
        waiting = {p.id: len(p.inputs) for p in plan.order}
        running: dict[asyncio.Task[NodeTrace], str] = {}

        def start(p: _PlanNode) -> None:
            stream = on_token if p.id == plan.sink else None
            t = asyncio.create_task(self._run_node(p, example, done, t0, stream))
            running[t] = p.id

        for p in plan.order:
            if not p.inputs:
                start(p)
        try:
            while running and plan.sink not in done:
                timeout = None
                if budget is not None and budget.max_latency_s is not None:
                    timeout = max(0.0, budget.max_latency_s - (time.perf_counter() - t0))
                finished, _ = await asyncio.wait(
                    running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not finished:
                    trace.error = (
                        f"budget exceeded: {time.perf_counter() - t0:.3g}s elapsed > "
                        f"max_latency_s {budget.max_latency_s:g}"  # type: ignore[union-attr]
                    )
                    break
                for t in finished:
                    nid = running.pop(t)
                    nt = t.result()  # _run_node never raises (errors go into the NodeTrace)
                    done[nid] = nt
                    trace.nodes.append(nt)
                    if nt.error is not None and trace.error is None:
                        trace.error = f"node {nid!r} (model {nt.model}): {nt.error}"
                        if nt.meta.get("transient"):  # `--resume` runs this query again
                            trace.meta["transient_error"] = True
                    for c in plan.by_id[nid].consumers:
                        waiting[c] -= 1
                if trace.error is None and budget is not None:
                    trace.error = self._measured_overrun(trace, budget, t0)
                if trace.error is not None:
                    break
                for t_nid in [i for i, w in waiting.items() if w == 0 and i not in done]:
                    if t_nid not in running.values():
                        start(plan.by_id[t_nid])
        finally:
            for t in running:
                t.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        self._finish(trace, plan, done, t0)
        sink_role = plan.by_id[plan.sink].role
        if plan.sink in done and trace.error is None and sink_role in (Role.VOTE, Role.JUDGE):
            await emit(on_token, trace.output)  # these sinks pass a finished text on
        return trace

    def _measured_overrun(self, trace: Trace, budget: Budget, t0: float) -> str | None:
        flops_norm = sum(n.flops for n in trace.nodes) / self.unit_flops
        dollars = sum(n.dollars for n in trace.nodes)
        elapsed = time.perf_counter() - t0
        if budget.max_flops_norm is not None and flops_norm > budget.max_flops_norm:
            return f"budget exceeded: measured {flops_norm:.3g} normalised FLOPs > max_flops_norm {budget.max_flops_norm:g}"
        if budget.max_dollars is not None and dollars > budget.max_dollars:
            return f"budget exceeded: measured ${dollars:.3g} > max_dollars {budget.max_dollars:g}"
        if budget.max_latency_s is not None and elapsed > budget.max_latency_s:
            return (
                f"budget exceeded: {elapsed:.3g}s elapsed > max_latency_s {budget.max_latency_s:g}"
            )
        return None

    def _finish(self, trace: Trace, plan: _Plan, done: dict[str, NodeTrace], t0: float) -> None:
        trace.wall_s = time.perf_counter() - t0
        trace.flops = sum(n.flops for n in trace.nodes)
        trace.dollars = sum(n.dollars for n in trace.nodes)
        finish: dict[str, float] = {}
        for p in plan.order:  # critical path over the nodes that ran
            if p.id in done:
                finish[p.id] = done[p.id].latency_s + max(
                    (finish.get(i, 0.0) for i in p.inputs), default=0.0
                )
        trace.latency_s = finish.get(plan.sink, max(finish.values(), default=0.0))
        trace.meta["flops_norm"] = trace.flops / self.unit_flops
        trace.nodes.sort(key=lambda n: (n.start_s, n.node_id))
        sink = done.get(plan.sink)
        if sink is not None and trace.error is None:
            trace.output = sink.output
            trace.answer = sink.answer
            src = sink.meta.get("source", plan.sink)
            score = done[src].meta.get("score") if src in done else None
            if score is not None:
                trace.meta["sink_score"] = score

    async def _run_node(
        self,
        p: _PlanNode,
        example: Example,
        done: dict[str, NodeTrace],
        t0: float,
        on_token: TokenCallback | None,
    ) -> NodeTrace:
        nt = NodeTrace(node_id=p.id, role=p.role.value, model=p.model)
        nt.start_s = time.perf_counter() - t0
        inputs = [done[i] for i in p.inputs]
        try:
            if p.role is Role.VOTE:
                win, counts = vote(self.task, [x.answer for x in inputs])
                nt.output, nt.answer = inputs[win].output, inputs[win].answer
                nt.meta = {"votes": counts, "source": _source(inputs[win])}
                nt.end_s = time.perf_counter() - t0
                nt.latency_s = nt.end_s - nt.start_s
                return nt
            assert p.model is not None
            messages = node_messages(p.role, self.task, example, [x.output for x in inputs])
            nt.prompt = [{"role": m["role"], "content": m["content"]} for m in messages]
            c = await self.runtime.complete(
                p.model,
                messages,
                p.params,
                sample_index=p.sample_index,
                query_id=example.id if p.query_bound else None,
                on_token=on_token if p.role is not Role.JUDGE else None,
            )
            spec = self.runtime.spec(p.model)
            nt.prompt_tokens, nt.completion_tokens = c.prompt_tokens, c.completion_tokens
            nt.flops = call_flops(spec, c.prompt_tokens, c.completion_tokens)
            nt.dollars = call_dollars(spec, c.prompt_tokens, c.completion_tokens)
            nt.latency_s, nt.cached = c.latency_s, c.cached
            nt.meta = {
                "sample_index": p.sample_index,
                **{k: v for k, v in c.meta.items() if _small(v)},
            }
            if c.finish_reason != "stop":  # e.g. "length": the server reports it
                nt.meta["finish_reason"] = c.finish_reason
            if p.role is Role.JUDGE:
                k = parse_judge_choice(c.text, len(inputs))
                nt.meta.update(judge_output=c.text, choice=k, parsed=k is not None)
                chosen = inputs[k if k is not None else 0]
                nt.output, nt.answer = chosen.output, chosen.answer
                nt.meta["source"] = _source(chosen)
            else:
                nt.output = c.text
                nt.answer = self.task.extract(c.text)
        except Exception as e:
            nt.error = f"{type(e).__name__}: {e}"
            if is_transient(e):
                nt.meta["transient"] = True
        nt.end_s = time.perf_counter() - t0
        if not nt.latency_s:
            nt.latency_s = nt.end_s - nt.start_s
        return nt


def is_transient(e: BaseException) -> bool:
    """A failure of the infrastructure, not of the query: a crashed local model, a timeout,
    an endpoint that kept failing. Such a query is unfinished, so a resumed run retries it;
    configuration errors and replay misses would fail the same way again, so they stay."""
    return isinstance(e, BackendError) and not isinstance(e, (BackendConfigError, ReplayMiss))


def _source(nt: NodeTrace) -> str:
    """The LLM node whose text a vote/judge passes on (follows chains of them)."""
    return str(nt.meta.get("source", nt.node_id))


def _small(v: Any) -> bool:
    return v is None or (isinstance(v, (str, int, float, bool)) and len(str(v)) < 2000)
