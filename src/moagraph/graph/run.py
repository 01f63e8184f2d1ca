"""One query's run: the single path every LLM call of a graph or a router takes.

:class:`QueryRun` is what :class:`~moagraph.graph.executor.GraphExecutor` (per node)
and every router (per layer) call through, so budget, sampling, tracing and the
critical path are written once:

- **Budget guard**: before a call starts its cost is bounded from above (prompt
  tokens <= UTF-8 bytes + 16 per message, completion tokens <= ``max_tokens``) and
  reserved; the call is refused unless spent + reserved + bound fits the budget
  (:class:`~moagraph.graph.budget.Budget`, tightened by any
  :func:`~moagraph.graph.budget.budget_scope`). So a query's measured cost never
  passes its budget as long as the backend honours ``max_tokens`` (replay backends
  return recorded lengths and may not: :meth:`QueryRun.measured_overrun` catches that).
- **Sampling**: the call gets the full :class:`SamplingParams` (``json_schema`` too)
  with its own ``max_tokens``.
- **Trace**: one :class:`NodeTrace` per call (tokens, FLOPs, dollars, latency, errors),
  and the critical-path latency over the calls' declared inputs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from moagraph.graph.budget import Budget, scoped_budget
from moagraph.graph.trace import NodeTrace, Trace
from moagraph.models.base import (
    BackendConfigError,
    BackendError,
    ChatMessage,
    ReplayMiss,
    SamplingParams,
    TokenCallback,
)
from moagraph.models.cost import call_dollars, call_flops, unit_flops
from moagraph.models.runtime import PoolRuntime
from moagraph.tasks.base import Example, Task

__all__ = [
    "MESSAGE_OVERHEAD_TOKENS",
    "Call",
    "QueryRun",
    "is_transient",
    "prompt_token_bound",
]

MESSAGE_OVERHEAD_TOKENS = 16
_UNCAPPED = Budget()


def prompt_token_bound(messages: Sequence[ChatMessage]) -> int:
    """Upper bound on prompt tokens: byte-level BPE never makes more tokens than bytes."""
    return sum(len(m["content"].encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def is_transient(e: BaseException) -> bool:
    """A failure of the infrastructure, not of the query: a crashed local model, a timeout,
    an endpoint that kept failing. Such a query is unfinished, so a resumed run retries it;
    configuration errors and replay misses would fail the same way again, so they stay."""
    return isinstance(e, BackendError) and not isinstance(e, (BackendConfigError, ReplayMiss))


@dataclass
class Call:
    """One LLM call of a query.

    ``inputs``: node ids whose outputs the prompt reads (the critical path waits for
    them). ``query_bound``: a first-layer call, which a replay pool may answer by query
    id. ``params``: this call's sampling (None = the run's); ``max_tokens`` overrides
    its ``max_tokens``. ``sample_index`` None: numbered per model over the query-bound
    calls, 0 for the others.
    """

    node_id: str
    role: str
    model: str
    messages: list[ChatMessage]
    inputs: list[str] = field(default_factory=list)
    query_bound: bool = False
    max_tokens: int | None = None
    params: SamplingParams | None = None
    sample_index: int | None = None
    on_token: TokenCallback | None = None


@dataclass
class _Admitted:
    call: Call
    params: SamplingParams
    flops: float
    dollars: float


class QueryRun:
    """State of one query: spent cost, reservations, node traces, critical path."""

    def __init__(
        self,
        runtime: PoolRuntime,
        task: Task,
        example: Example,
        policy: str,
        params: SamplingParams | None = None,
        budget: Budget | None = None,
        *,
        unit: float | None = None,
    ) -> None:
        self.runtime = runtime
        self.task = task
        self.example = example
        self.params = params or SamplingParams()
        # the policy's own caps, tightened by any scoped (per-request) budget
        self.budget = (budget or _UNCAPPED).tighter(scoped_budget())
        self.unit = (
            unit
            if unit is not None
            else unit_flops(runtime.pool.models, task.avg_input_tokens, task.avg_output_tokens)
        )
        self.trace = Trace(query_id=example.id, policy=policy)
        self.nodes: dict[str, NodeTrace] = {}
        self.skipped: list[dict[str, Any]] = []
        self._cp_end: dict[str, float] = {}  # critical-path finish time per node
        self._reserved_flops = 0.0
        self._reserved_dollars = 0.0
        self._spent_flops = 0.0  # running sums of the recorded nodes (admission is per call)
        self._spent_dollars = 0.0
        self._samples: dict[str, int] = {}
        self.t0 = time.perf_counter()

    # --- cost --------------------------------------------------------------
    @property
    def spent_flops(self) -> float:
        return self._spent_flops

    @property
    def spent_dollars(self) -> float:
        return self._spent_dollars

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.t0

    def bound(
        self, model: str, messages: Sequence[ChatMessage], max_tokens: int
    ) -> tuple[float, float]:
        """Upper bound on a call's (FLOPs, dollars) before it is made."""
        spec = self.runtime.spec(model)
        n_p = prompt_token_bound(messages)
        return call_flops(spec, n_p, max_tokens), call_dollars(spec, n_p, max_tokens)

    def fits(self, flops: float, dollars: float) -> str | None:
        """None when a call of this (upper-bound) cost fits the budget now; else why not."""
        b = self.budget
        if b.max_flops_norm is not None:
            total = (self.spent_flops + self._reserved_flops + flops) / self.unit
            if total > b.max_flops_norm:
                return f"would reach {total:.3g} normalised FLOPs > max_flops_norm {b.max_flops_norm:g}"
        if b.max_dollars is not None:
            total_d = self.spent_dollars + self._reserved_dollars + dollars
            if total_d > b.max_dollars:
                return f"would reach ${total_d:.3g} > max_dollars {b.max_dollars:g}"
        if b.max_latency_s is not None and self.elapsed_s >= b.max_latency_s:
            return f"{self.elapsed_s:.3g}s elapsed >= max_latency_s {b.max_latency_s:g}"
        return None

    def measured_overrun(self) -> str | None:
        """Why the measured cost so far is over the budget (None when within it)."""
        b = self.budget
        flops_norm = self.spent_flops / self.unit
        dollars = self.spent_dollars
        elapsed = self.elapsed_s
        if b.max_flops_norm is not None and flops_norm > b.max_flops_norm:
            return f"budget exceeded: measured {flops_norm:.3g} normalised FLOPs > max_flops_norm {b.max_flops_norm:g}"
        if b.max_dollars is not None and dollars > b.max_dollars:
            return f"budget exceeded: measured ${dollars:.3g} > max_dollars {b.max_dollars:g}"
        if b.max_latency_s is not None and elapsed > b.max_latency_s:
            return f"budget exceeded: {elapsed:.3g}s elapsed > max_latency_s {b.max_latency_s:g}"
        return None

    def skip_reason(self, node_id: str) -> str | None:
        """Why the call ``node_id`` was refused by the budget (None if it was not)."""
        for s in reversed(self.skipped):
            if s["node"] == node_id:
                return str(s["why"])
        return None

    # --- calls -------------------------------------------------------------
    def admit(self, c: Call) -> _Admitted | None:
        """Bound ``c``'s cost and reserve it; None (and a ``skipped`` entry) when it does
        not fit. Synchronous, so calls admitted together cannot overbook the budget."""
        params = c.params or self.params
        mt = c.max_tokens or params.max_tokens
        if mt != params.max_tokens:
            params = dataclasses.replace(params, max_tokens=mt)
        f = d = 0.0
        if self.budget.capped:  # nothing to bound against otherwise
            f, d = self.bound(c.model, c.messages, mt)
        why = self.fits(f, d)
        if why is not None:
            self.skipped.append({"node": c.node_id, "model": c.model, "role": c.role, "why": why})
            return None
        self._reserved_flops += f
        self._reserved_dollars += d
        return _Admitted(c, params, f, d)

    async def call(self, c: Call) -> NodeTrace | None:
        """Make one call if it fits the budget (None when refused: see :meth:`skip_reason`)."""
        a = self.admit(c)
        return None if a is None else await self._run(a)

    async def run_calls(self, calls: Sequence[Call]) -> list[NodeTrace | None]:
        """Admit calls in order, then run the admitted ones concurrently; a call that
        might break the budget is skipped (None in its place)."""
        admitted = [self.admit(c) for c in calls]
        done = await asyncio.gather(*(self._run(a) for a in admitted if a is not None))
        it = iter(done)
        return [None if a is None else next(it) for a in admitted]

    async def _run(self, a: _Admitted) -> NodeTrace:
        try:
            return await self._complete(a.call, a.params)
        finally:
            self._reserved_flops -= a.flops
            self._reserved_dollars -= a.dollars

    async def _complete(self, c: Call, params: SamplingParams) -> NodeTrace:
        idx = c.sample_index
        if idx is None:
            idx = 0
            if c.query_bound:
                idx = self._samples.get(c.model, 0)
                self._samples[c.model] = idx + 1
        nt = NodeTrace(
            node_id=c.node_id,
            role=c.role,
            model=c.model,
            prompt=[{"role": m["role"], "content": m["content"]} for m in c.messages],
        )
        nt.start_s = self.elapsed_s
        try:
            comp = await self.runtime.complete(
                c.model,
                c.messages,
                params,
                sample_index=idx,
                query_id=self.example.id if c.query_bound else None,
                on_token=c.on_token,
            )
            spec = self.runtime.spec(c.model)
            nt.output = comp.text
            nt.prompt_tokens, nt.completion_tokens = comp.prompt_tokens, comp.completion_tokens
            nt.flops = call_flops(spec, comp.prompt_tokens, comp.completion_tokens)
            nt.dollars = call_dollars(spec, comp.prompt_tokens, comp.completion_tokens)
            nt.latency_s, nt.cached = comp.latency_s, comp.cached
            nt.meta = {"sample_index": idx, **{k: v for k, v in comp.meta.items() if _small(v)}}
            if comp.finish_reason != "stop":  # e.g. "length": the server reports it
                nt.meta["finish_reason"] = comp.finish_reason
            if c.role != "judge":  # a judge's text is a verdict, not an answer
                nt.answer = self._extract(comp.text)
        except Exception as e:  # the query fails, not the run: the error is in its trace
            nt.error = f"{type(e).__name__}: {e}"
            if is_transient(e):
                nt.meta["transient"] = True
        nt.end_s = self.elapsed_s
        if not nt.latency_s:
            nt.latency_s = nt.end_s - nt.start_s
        self.record(nt, c.inputs)
        return nt

    def record(self, nt: NodeTrace, inputs: Sequence[str] = ()) -> None:
        """Add a finished node (an LLM call, or a node without one such as a vote)."""
        ready = max((self._cp_end.get(i, 0.0) for i in inputs), default=0.0)
        self._cp_end[nt.node_id] = ready + nt.latency_s
        self._spent_flops += nt.flops
        self._spent_dollars += nt.dollars
        self.nodes[nt.node_id] = nt
        self.trace.nodes.append(nt)

    def _extract(self, text: str) -> Any:
        try:
            return self.task.extract(text)
        except Exception:  # an unparseable reply has no answer; it is not a failed call
            return None

    # --- the end -----------------------------------------------------------
    def finish(
        self, output: str = "", meta: dict[str, Any] | None = None, *, sink: str | None = None
    ) -> Trace:
        """Totals, critical path and output. A graph names its ``sink`` node (its output
        and answer are the trace's, unless the run failed); a router passes ``output``
        (an empty one with no error recorded means every call was refused or failed)."""
        t = self.trace
        if sink is not None:
            node = self.nodes.get(sink)
            if node is not None and t.error is None:
                t.output, t.answer = node.output, node.answer
            t.latency_s = self._cp_end.get(sink, max(self._cp_end.values(), default=0.0))
        else:
            t.output = output
            t.answer = self._extract(output) if output else None
            t.latency_s = max(self._cp_end.values(), default=0.0)
            if not output and t.error is None:
                errs = [n.error for n in t.nodes if n.error]
                t.error = errs[0] if errs else "no answer: every call was skipped by the budget"
        t.flops = self.spent_flops
        t.dollars = self.spent_dollars
        t.wall_s = self.elapsed_s
        t.nodes.sort(key=lambda n: (n.start_s, n.node_id))
        t.meta.update(meta or {})
        t.meta["flops_norm"] = t.flops / self.unit
        t.meta["unit_flops"] = self.unit
        if self.budget.capped:
            t.meta["budget"] = self.budget.model_dump(exclude_none=True)
        if self.skipped:
            t.meta["skipped_calls"] = self.skipped
        return t


def _small(v: Any) -> bool:
    return v is None or (isinstance(v, (str, int, float, bool)) and len(str(v)) < 2000)
