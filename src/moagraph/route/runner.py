"""Layered execution shared by RouteMoA and its baselines: one accounting for all.

A router decides its next layer from the previous layer's answers (and the
judges' scores), so it cannot hand a whole graph to the graph executor up
front; it runs layer by layer here instead. Every call still goes through
:meth:`PoolRuntime.complete`, uses the graph package's role prompts, and is
measured into the same :class:`NodeTrace` fields the graph executor fills.

Budget guard: before a call starts, its cost is bounded from above (prompt
tokens <= UTF-8 bytes + 16 per message, completion tokens <= ``max_tokens``)
and the call is skipped unless spent + reserved + bound fits the budget. So a
query's measured cost never exceeds its budget as long as the backend honours
``max_tokens`` (replay backends return recorded lengths and may not).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from moagraph.graph.trace import NodeTrace, Trace
from moagraph.models.base import BackendError, ChatMessage, SamplingParams
from moagraph.models.cost import call_dollars, call_flops, node_flops, unit_flops
from moagraph.models.pool import ModelSpec, Pool
from moagraph.models.runtime import PoolRuntime
from moagraph.tasks.base import Example, Task

if TYPE_CHECKING:
    from moagraph.route.base import RoutePlan

MESSAGE_OVERHEAD_TOKENS = 16


def prompt_token_bound(messages: Sequence[ChatMessage]) -> int:
    """Upper bound on prompt tokens: byte-level BPE never makes more tokens than bytes."""
    return sum(len(m["content"].encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS for m in messages)


# --- latency model (documented assumption; recordings carry no latency) ------------------
PREFILL_S_PER_TOKEN_PER_B = 2e-5  # prefill: 20 us per prompt token per billion params
DECODE_S_PER_TOKEN = 5e-3  # decode: 5 ms per output token fixed overhead ...
DECODE_S_PER_TOKEN_PER_B = 5e-4  # ... plus 0.5 ms per output token per billion params


def model_latency_s(spec: ModelSpec, prompt_tokens: float, completion_tokens: float) -> float:
    """Latency model: proportional to params x tokens (prefill and decode rates above).

    A spec may override with ``extra.latency_s_per_token`` (measured decode seconds per
    output token), which the tie-breaker and the replay evaluation then use instead.
    """
    per_tok = spec.extra.get("latency_s_per_token") if spec.extra else None
    if per_tok is not None:
        return float(per_tok) * completion_tokens
    return prompt_tokens * spec.params_b * PREFILL_S_PER_TOKEN_PER_B + completion_tokens * (
        DECODE_S_PER_TOKEN + spec.params_b * DECODE_S_PER_TOKEN_PER_B
    )


def rank_models(
    scores: dict[str, float],
    pool: Pool,
    margin: float,
    avg_in: float,
    avg_out: float,
    cost_key: str = "flops",
) -> list[str]:
    """Models best first; within ``margin`` of the best remaining score, cheaper first
    (FLOPs, or dollars with ``cost_key='dollars'``), then lower latency, then name."""

    def cost(m: str) -> tuple[float, float, str]:
        spec = pool[m]
        c = (
            call_dollars(spec, avg_in, avg_out)
            if cost_key == "dollars"
            else node_flops(spec, 0, avg_in, avg_out)
        )
        return (c, model_latency_s(spec, avg_in, avg_out), m)

    remaining = sorted(scores, key=lambda m: (-scores[m], m))
    out: list[str] = []
    while remaining:
        best = scores[remaining[0]]
        near = [m for m in remaining if scores[m] >= best - margin]
        pick = min(near, key=cost)
        out.append(pick)
        remaining.remove(pick)
    return out


@dataclass
class RouteBudget:
    """Hard per-query caps: normalised FLOPs and/or dollars (None = no cap)."""

    max_flops_norm: float | None = None
    max_dollars: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_flops_norm", "max_dollars"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"budget {name}={v}: must be > 0 (or unset for no cap)")

    def tighter(self, other: RouteBudget | None) -> RouteBudget:
        """The budget that respects both caps (the smaller of each)."""
        if other is None:
            return self

        def low(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else min(a, b)

        return RouteBudget(
            low(self.max_flops_norm, other.max_flops_norm), low(self.max_dollars, other.max_dollars)
        )


_SCOPED_BUDGET: ContextVar[RouteBudget | None] = ContextVar("moagraph_route_budget", default=None)


@contextmanager
def budget_scope(budget: RouteBudget | None) -> Iterator[None]:
    """Cap every router query run started in this context (and tasks created from it)
    by ``budget`` on top of the router's own budget: how the server applies
    ``--budget-flops`` and a request's ``moagraph.budget_flops`` to routers, which are
    built once and shared by all requests."""
    token = _SCOPED_BUDGET.set(budget)
    try:
        yield
    finally:
        _SCOPED_BUDGET.reset(token)


def plan_flops(
    plan: RoutePlan,
    pool: Pool,
    task: Task,
    *,
    prompt_tokens: float | None = None,
    max_tokens: int | None = None,
) -> float:
    """Normalised FLOPs of a routing plan before any call (an estimate, not a bound).

    Each layer's calls read the previous layer's answers (in-degree = its width), the
    aggregator reads the last layer, and ``judges_per_layer`` judge calls per layer (made
    by the plan's top model) read that layer with ``judge_max_tokens`` of output. A =
    ``prompt_tokens`` (default: the task average), B = the task's average output capped by
    ``max_tokens``. The unit is the pool's smallest model answering with no inputs at the
    task averages, as in graph budgets. A judge-driven router may stop earlier than its
    plan; the run itself is capped by its budget (:class:`QueryRun`)."""
    a = float(task.avg_input_tokens if prompt_tokens is None else prompt_tokens)
    b = float(
        task.avg_output_tokens if max_tokens is None else min(task.avg_output_tokens, max_tokens)
    )
    total = 0.0
    prev = 0
    for layer in plan.layers:
        total += sum(node_flops(pool[m], prev, a, b) for m in layer)
        if plan.judges_per_layer and layer:
            judge = pool[plan.ranked[0] if plan.ranked else layer[0]]
            total += plan.judges_per_layer * call_flops(
                judge, a + len(layer) * b, plan.judge_max_tokens
            )
        prev = len(layer)
    if plan.aggregator is not None and len(plan.ranked) > 1:
        total += node_flops(pool[plan.aggregator], prev, a, b)
    return total / unit_flops(pool.models, task.avg_input_tokens, task.avg_output_tokens)


@dataclass
class Call:
    node_id: str
    role: str
    model: str
    messages: list[ChatMessage]
    inputs: list[str] = field(default_factory=list)  # node ids this call waits for
    query_bound: bool = False  # first-layer call: replay may answer it by query id
    max_tokens: int | None = None


class QueryRun:
    """State of one query: spent cost, reservations, node traces, critical path."""

    def __init__(
        self,
        runtime: PoolRuntime,
        task: Task,
        example: Example,
        policy: str,
        params: SamplingParams,
        budget: RouteBudget | None = None,
    ) -> None:
        self.runtime = runtime
        self.task = task
        self.example = example
        self.params = params
        # the router's own caps, tightened by any scoped (per-request) budget
        self.budget = (budget or RouteBudget()).tighter(_SCOPED_BUDGET.get())
        self.unit = unit_flops(runtime.pool.models, task.avg_input_tokens, task.avg_output_tokens)
        self.trace = Trace(query_id=example.id, policy=policy)
        self.nodes: dict[str, NodeTrace] = {}
        self._cp_end: dict[str, float] = {}  # critical-path finish time per node
        self._reserved_flops = 0.0
        self._reserved_dollars = 0.0
        self._samples: dict[str, int] = {}
        self.t0 = time.perf_counter()
        self.skipped: list[dict[str, Any]] = []

    # --- cost --------------------------------------------------------------
    @property
    def spent_flops(self) -> float:
        return sum(n.flops for n in self.trace.nodes)

    @property
    def spent_dollars(self) -> float:
        return sum(n.dollars for n in self.trace.nodes)

    def bound(
        self, model: str, messages: Sequence[ChatMessage], max_tokens: int
    ) -> tuple[float, float]:
        spec = self.runtime.spec(model)
        n_p = prompt_token_bound(messages)
        return call_flops(spec, n_p, max_tokens), call_dollars(spec, n_p, max_tokens)

    def fits(self, flops: float, dollars: float) -> str | None:
        """None when a call of this (upper-bound) cost fits; else why not."""
        b = self.budget
        if b.max_flops_norm is not None:
            total = (self.spent_flops + self._reserved_flops + flops) / self.unit
            if total > b.max_flops_norm:
                return f"would reach {total:.3g} normalised FLOPs > budget {b.max_flops_norm:g}"
        if b.max_dollars is not None:
            total_d = self.spent_dollars + self._reserved_dollars + dollars
            if total_d > b.max_dollars:
                return f"would reach ${total_d:.3g} > budget ${b.max_dollars:g}"
        return None

    # --- calls -------------------------------------------------------------
    async def run_calls(self, calls: Sequence[Call]) -> list[NodeTrace | None]:
        """Run calls concurrently; a call that might break the budget is skipped (None)."""
        admitted: list[tuple[Call, float, float, int]] = []
        results: list[NodeTrace | None] = [None] * len(calls)
        for c in calls:
            mt = c.max_tokens or self.params.max_tokens
            f, d = self.bound(c.model, c.messages, mt)
            why = self.fits(f, d)
            if why is not None:
                self.skipped.append(
                    {"node": c.node_id, "model": c.model, "role": c.role, "why": why}
                )
                continue
            self._reserved_flops += f
            self._reserved_dollars += d
            admitted.append((c, f, d, mt))

        async def one(c: Call, f: float, d: float, mt: int) -> NodeTrace:
            try:
                return await self._call(c, mt)
            finally:
                self._reserved_flops -= f
                self._reserved_dollars -= d

        done = await asyncio.gather(*(one(*a) for a in admitted))
        it = iter(done)
        for i, c in enumerate(calls):
            if any(a[0] is c for a in admitted):
                results[i] = next(it)
        return results

    async def _call(self, c: Call, max_tokens: int) -> NodeTrace:
        spec = self.runtime.spec(c.model)
        if c.query_bound:
            idx = self._samples.get(c.model, 0)
            self._samples[c.model] = idx + 1
        else:
            idx = 0
        params = SamplingParams(
            temperature=self.params.temperature,
            top_p=self.params.top_p,
            max_tokens=max_tokens,
            seed=self.params.seed,
            stop=self.params.stop,
        )
        nt = NodeTrace(
            node_id=c.node_id,
            role=c.role,
            model=c.model,
            prompt=[{"role": m["role"], "content": m["content"]} for m in c.messages],
        )
        nt.start_s = time.perf_counter() - self.t0
        try:
            comp = await self.runtime.complete(
                c.model,
                c.messages,
                params,
                sample_index=idx,
                query_id=self.example.id if c.query_bound else None,
            )
            nt.output = comp.text
            nt.prompt_tokens, nt.completion_tokens = comp.prompt_tokens, comp.completion_tokens
            nt.latency_s, nt.cached = comp.latency_s, comp.cached
            if comp.finish_reason != "stop":  # e.g. "length": the server reports it
                nt.meta["finish_reason"] = comp.finish_reason
            nt.flops = call_flops(spec, comp.prompt_tokens, comp.completion_tokens)
            nt.dollars = call_dollars(spec, comp.prompt_tokens, comp.completion_tokens)
            if c.role not in ("judge",):
                try:
                    nt.answer = self.task.extract(comp.text)
                except Exception:
                    nt.answer = None
        except BackendError as e:
            nt.error = str(e)
        nt.end_s = time.perf_counter() - self.t0
        ready = max((self._cp_end.get(i, 0.0) for i in c.inputs), default=0.0)
        self._cp_end[c.node_id] = ready + nt.latency_s
        self.nodes[c.node_id] = nt
        self.trace.nodes.append(nt)
        return nt

    def finish(self, output: str, meta: dict[str, Any]) -> Trace:
        t = self.trace
        t.output = output
        try:
            t.answer = self.task.extract(output) if output else None
        except Exception:
            t.answer = None
        t.flops = self.spent_flops
        t.dollars = self.spent_dollars
        t.latency_s = max(self._cp_end.values(), default=0.0)
        t.wall_s = time.perf_counter() - self.t0
        t.meta.update(meta)
        t.meta["flops_norm"] = t.flops / self.unit
        t.meta["unit_flops"] = self.unit
        if self.budget.max_flops_norm is not None or self.budget.max_dollars is not None:
            t.meta["budget"] = {
                "max_flops_norm": self.budget.max_flops_norm,
                "max_dollars": self.budget.max_dollars,
            }
        if self.skipped:
            t.meta["skipped_calls"] = self.skipped
        if not output and t.error is None:
            errs = [n.error for n in t.nodes if n.error]
            t.error = errs[0] if errs else "no answer: every call was skipped by the budget"
        return t
