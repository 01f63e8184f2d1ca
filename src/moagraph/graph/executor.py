"""Run a collaboration graph on one query: topological, concurrent, budgeted.

Each node starts the moment its inputs are done (one asyncio task per node),
so independent nodes overlap up to each endpoint's concurrency limit, which
:class:`~moagraph.models.runtime.PoolRuntime` enforces; many queries can run
through one executor at once. The graph is planned and its estimated cost checked
against the budget before any call; each LLM node then goes through the shared
:class:`~moagraph.graph.run.QueryRun` (the path routers use too), which reserves
the call's upper-bound cost first and measures it into the :class:`Trace`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from moagraph.errors import BudgetError
from moagraph.graph.agreement import condition_holds, majority
from moagraph.graph.budget import Budget
from moagraph.graph.cost import GraphCost, estimate_cost, task_unit_flops
from moagraph.graph.prompts import node_messages, parse_judge_choice
from moagraph.graph.run import Call, QueryRun, is_transient
from moagraph.graph.spec import Condition, Graph, Role
from moagraph.graph.trace import NodeTrace, Trace
from moagraph.models.base import SamplingParams, TokenCallback, emit
from moagraph.models.runtime import PoolRuntime
from moagraph.tasks.base import Example, Task

__all__ = ["Budget", "BudgetExceeded", "GraphExecutor", "is_transient", "vote"]


class BudgetExceeded(BudgetError):
    """A graph's planned cost is over the budget; nothing was called."""


@dataclass
class _PlanNode:
    id: str
    role: Role
    model: str | None
    inputs: list[str]
    consumers: list[str]  # nodes that depend on this one (its inputs' readers and conditions)
    params: SamplingParams
    sample_index: int
    query_bound: bool  # first-layer node: the replay pool may answer it by query id
    depends: list[str] = field(default_factory=list)  # inputs + condition nodes
    condition: Condition | None = None


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
    return majority(answers, task.equivalent)


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
        by_id = {n.id: n for n in graph.nodes}
        consumers: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
        for n in graph.nodes:  # one pass (a lookup per node was quadratic on long graphs)
            for src in n.depends_on:
                consumers[src].append(n.id)
        seen_first: dict[str, int] = {}
        seen_inner: dict[str, int] = {}
        nodes: list[_PlanNode] = []
        for nid in order:
            n = by_id[nid]
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
                    consumers=consumers[nid],
                    params=params,
                    sample_index=n.sample_index if n.sample_index is not None else idx,
                    query_bound=not n.inputs,
                    depends=list(n.depends_on),
                    condition=n.condition,
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
        over ``budget``. Each LLM node then goes through the query run's budget guard
        (:class:`~moagraph.graph.run.QueryRun`): a node whose upper-bound cost no longer
        fits is not started. A refused node, a node failure or a measured overrun does not
        raise: the trace comes back with ``error`` set and the nodes that finished.
        """
        plan = self.plan(graph)
        if budget is not None:
            why = budget.over_estimate(plan.estimate)
            if why:
                raise BudgetExceeded(
                    f"graph {graph.name!r}: {why}; raise the budget or use a cheaper graph"
                )
        run = QueryRun(
            self.runtime,
            self.task,
            example,
            graph.name or "graph",
            self.default_params,
            budget,
            unit=self.unit_flops,
        )
        trace = run.trace
        trace.meta.update(est_flops_norm=plan.estimate.flops_norm, unit_flops=self.unit_flops)
        done: dict[str, NodeTrace] = {}
        waiting = {p.id: len(p.depends) for p in plan.order}
        running: dict[asyncio.Task[NodeTrace | None], str] = {}

        def start(p: _PlanNode) -> None:
            stream = on_token if p.id == plan.sink else None
            t = asyncio.create_task(self._run_node(run, p, done, stream))
            running[t] = p.id

        for p in plan.order:
            if not p.depends:
                start(p)
        max_latency_s = run.budget.max_latency_s
        try:
            while running and plan.sink not in done:
                timeout = None
                if max_latency_s is not None:
                    timeout = max(0.0, max_latency_s - run.elapsed_s)
                finished, _ = await asyncio.wait(
                    running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not finished:
                    trace.error = (
                        f"budget exceeded: {run.elapsed_s:.3g}s elapsed > "
                        f"max_latency_s {max_latency_s:g}"
                    )
                    break
                for t in finished:
                    nid = running.pop(t)
                    nt = t.result()  # _run_node never raises (errors go into the NodeTrace)
                    if nt is None:  # refused by the budget guard before it started
                        if trace.error is None:
                            node = plan.by_id[nid]
                            trace.error = (
                                f"budget exceeded: node {nid!r} (model {node.model}) not "
                                f"started: {run.skip_reason(nid)}"
                            )
                        continue
                    done[nid] = nt
                    if nt.error is not None and trace.error is None:
                        trace.error = f"node {nid!r} (model {nt.model}): {nt.error}"
                        if nt.meta.get("transient"):  # `--resume` runs this query again
                            trace.meta["transient_error"] = True
                    for c in plan.by_id[nid].consumers:
                        waiting[c] -= 1
                if trace.error is None:
                    trace.error = run.measured_overrun()
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
        skipped = [nid for nid, nt in done.items() if nt.skipped]
        if skipped:
            trace.meta["skipped_nodes"] = skipped
            if plan.sink in skipped and trace.error is None:
                trace.error = f"no answer: every input of the sink {plan.sink!r} was skipped"
        run.finish(sink=plan.sink)
        sink = done.get(plan.sink)
        if sink is not None and trace.error is None:
            src = sink.meta.get("source", plan.sink)
            score = done[src].meta.get("score") if src in done else None
            if score is not None:
                trace.meta["sink_score"] = score
        sink_role = plan.by_id[plan.sink].role
        if sink is not None and trace.error is None and sink_role in (Role.VOTE, Role.JUDGE):
            await emit(on_token, trace.output)  # these sinks pass a finished text on
        return trace

    async def _run_node(
        self,
        run: QueryRun,
        p: _PlanNode,
        done: dict[str, NodeTrace],
        on_token: TokenCallback | None,
    ) -> NodeTrace | None:
        """One node: a vote here, an LLM call through the query run (None: refused by
        its budget guard), or a skip (its condition is false, or none of its inputs ran:
        no call, no cost). Never raises: a failure is the node's ``error``."""
        why_skip = self._skip_reason(p, done)
        if why_skip is not None:
            nt = NodeTrace(node_id=p.id, role=p.role.value, model=p.model, skipped=True)
            nt.start_s = nt.end_s = run.elapsed_s
            nt.meta = {"skipped": why_skip}
            run.record(nt, p.depends)
            return nt
        inputs = [done[i] for i in p.inputs if not done[i].skipped]
        if p.role is Role.VOTE:
            nt = NodeTrace(node_id=p.id, role=p.role.value, model=p.model)
            nt.start_s = run.elapsed_s
            if not inputs:
                nt.error = "no input ran: every input was skipped by its condition"
                run.record(nt, p.depends)
                return nt
            win, counts = vote(self.task, [x.answer for x in inputs])
            nt.output, nt.answer = inputs[win].output, inputs[win].answer
            nt.meta = {"votes": counts, "source": _source(inputs[win])}
            nt.end_s = run.elapsed_s
            nt.latency_s = nt.end_s - nt.start_s
            run.record(nt, p.depends)
            return nt
        assert p.model is not None
        try:
            messages = node_messages(p.role, self.task, run.example, [x.output for x in inputs])
        except Exception as e:  # a prompt that cannot be built fails this query only
            nt = NodeTrace(node_id=p.id, role=p.role.value, model=p.model)
            nt.start_s = nt.end_s = run.elapsed_s
            nt.error = f"{type(e).__name__}: {e}"
            run.record(nt, p.depends)
            return nt
        nt_or_none = await run.call(
            Call(
                p.id,
                p.role.value,
                p.model,
                messages,
                inputs=list(p.depends),
                query_bound=p.query_bound,
                params=p.params,
                sample_index=p.sample_index,
                on_token=on_token if p.role is not Role.JUDGE else None,
            )
        )
        if nt_or_none is None or nt_or_none.error is not None or p.role is not Role.JUDGE:
            return nt_or_none
        nt = nt_or_none
        k = parse_judge_choice(nt.output, len(inputs))
        nt.meta.update(judge_output=nt.output, choice=k, parsed=k is not None)
        chosen = inputs[k if k is not None else 0]
        nt.output, nt.answer = chosen.output, chosen.answer
        nt.meta["source"] = _source(chosen)
        return nt

    def _skip_reason(self, p: _PlanNode, done: dict[str, NodeTrace]) -> str | None:
        """Why ``p`` does not run (None: it runs): its condition is false, or it reads
        inputs and none of them ran (a vote instead fails: it has nothing to count)."""
        if p.condition is not None:
            ran = [done[i].answer for i in p.condition.among if not done[i].skipped]
            if not condition_holds(p.condition, ran, self.task.equivalent):
                return f"condition false: {p.condition.text()}"
        if p.inputs and all(done[i].skipped for i in p.inputs) and p.role is not Role.VOTE:
            return "no input ran: every input was skipped by its condition"
        return None


def _source(nt: NodeTrace) -> str:
    """The LLM node whose text a vote/judge passes on (follows chains of them)."""
    return str(nt.meta.get("source", nt.node_id))
