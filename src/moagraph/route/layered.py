"""The layered router: one layer loop, budget, trace and cost estimate for every router.

A router decides its next layer from the previous layer's answers (and, for some,
judge or moderator verdicts), so it cannot hand a whole graph to the graph executor
up front. :class:`LayeredRouter` owns what all of them share: the query run (every
call reserved against the budget and traced by :class:`~moagraph.graph.run.QueryRun`,
as graph nodes are), the loop that runs a layer's calls concurrently and stops when
none answers, the final aggregator call, ``estimate_flops`` from the router's
``plan``. A router implements only its choices, RouteLLM style (one decision method,
the framework runs it):

- :meth:`LayeredRouter.choose_layer`: the next layer (models, prompts, inputs), or
  None to stop; it may make judge calls through ``state.run`` first;
- :meth:`LayeredRouter.choose_final`: the answer without aggregation and, optionally,
  the aggregator call that fuses the last layer;
- :meth:`LayeredRouter.new_state` and :meth:`~moagraph.route.base.Router.plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from moagraph.graph.budget import Budget
from moagraph.graph.run import Call, QueryRun
from moagraph.graph.trace import NodeTrace, Trace
from moagraph.models.base import ChatMessage, SamplingParams
from moagraph.models.cost import call_flops, node_flops, unit_flops
from moagraph.models.pool import Pool
from moagraph.models.runtime import PoolRuntime
from moagraph.route.base import RoutePlan
from moagraph.tasks.base import Example, Task

__all__ = ["FinalChoice", "LayerChoice", "LayerState", "LayeredRouter", "plan_flops"]


@dataclass
class LayerChoice:
    """The next layer: ``models`` answer ``messages`` (one list for all, or one per model)
    reading the nodes ``inputs``. ``info``: this layer's entry in the router's trace meta;
    the loop adds ``answered`` (and a ``note`` when nobody answered)."""

    models: list[str]
    messages: list[ChatMessage] | Mapping[str, list[ChatMessage]]
    inputs: list[str] = field(default_factory=list)
    info: dict[str, Any] | None = None

    def messages_for(self, model: str) -> list[ChatMessage]:
        if isinstance(self.messages, Mapping):
            return self.messages[model]
        return self.messages


@dataclass
class FinalChoice:
    """The answer: ``output`` (described by ``label``) unless ``aggregator`` is set and its
    call on ``messages`` (reading ``inputs``) succeeds; ``aggregated_label`` then
    describes it (default ``"aggregator (<model>)"``)."""

    output: str
    label: str
    aggregator: str | None = None
    messages: list[ChatMessage] | None = None
    inputs: list[str] = field(default_factory=list)
    aggregated_label: str | None = None


@dataclass
class LayerState:
    """One query in a layered router: its run, the layers that answered, the trace meta.

    ``layers[i]`` maps each model that answered layer ``i + 1`` (no error) to its node.
    Routers subclass it for their own per-query bookkeeping (a router object is shared
    by concurrent queries, so nothing per query lives on the router)."""

    run: QueryRun
    example: Example
    task: Task
    layers: list[dict[str, NodeTrace]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    stop_reason: str = ""

    @property
    def layer(self) -> int:
        """How many layers answered so far."""
        return len(self.layers)

    @property
    def last(self) -> dict[str, NodeTrace]:
        """The latest layer's answers (empty before the first)."""
        return self.layers[-1] if self.layers else {}


S = TypeVar("S", bound=LayerState)


class LayeredRouter(Generic[S]):
    """Base of every router: runs the layers a subclass chooses (see the module doc)."""

    kind = "layered"
    node_prefix = "L"  # node ids are f"{node_prefix}{layer}:{model}"
    layer_word = "layer"  # how stop reasons name a layer ("round" for RouteMoA, SMoA)

    def __init__(
        self, runtime: PoolRuntime, *, params: SamplingParams, budget: Budget, name: str
    ) -> None:
        self.runtime = runtime
        self.params = params
        self.budget = budget
        self.name = name

    # --- what a router implements ------------------------------------------
    def plan(self, example: Example, task: Task | None = None) -> RoutePlan:
        """The decision from the query alone (no LLM call)."""
        raise NotImplementedError

    def new_state(self, run: QueryRun, example: Example, task: Task) -> S:
        """Fresh per-query state (the router's subclass of :class:`LayerState`)."""
        raise NotImplementedError

    async def choose_layer(self, state: S) -> LayerChoice | None:
        """The next layer, or None to stop (set ``state.stop_reason`` to say why)."""
        raise NotImplementedError

    def choose_final(self, state: S) -> FinalChoice:
        """The answer from the layers that ran, and the aggregator call if any."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------
    def estimate_flops(
        self,
        example: Example,
        task: Task,
        *,
        prompt_tokens: float | None = None,
        max_tokens: int | None = None,
    ) -> float:
        """Normalised FLOPs of this query's plan (no LLM call); see :func:`plan_flops`."""
        mt = self.params.max_tokens
        return plan_flops(
            self.plan(example, task),
            self.runtime.pool,
            task,
            prompt_tokens=prompt_tokens,
            max_tokens=min(max_tokens or mt, mt),
        )

    async def answer(self, example: Example, task: Task, on_token: Any = None) -> Trace:
        """Run the chosen layers, then the final choice; every call budget-guarded."""
        run = QueryRun(self.runtime, task, example, self.name, self.params, self.budget)
        state = self.new_state(run, example, task)
        while (choice := await self.choose_layer(state)) is not None:
            n = state.layer + 1
            calls = [
                Call(
                    f"{self.node_prefix}{n}:{m}",
                    "assistant",
                    m,
                    choice.messages_for(m),
                    inputs=list(choice.inputs),
                    query_bound=n == 1,
                )
                for m in choice.models
            ]
            skipped_before = len(run.skipped)
            results = await run.run_calls(calls)
            got = {c.model: r for c, r in zip(calls, results) if r is not None and r.error is None}
            if choice.info is not None:
                choice.info["answered"] = list(got)
            if not got:
                if choice.info is not None:
                    choice.info["note"] = "no answers (budget or errors)"
                state.stop_reason = (
                    f"budget: no call of this {self.layer_word} fits"
                    if len(run.skipped) > skipped_before
                    else "every call failed"
                )
                break
            state.layers.append(got)
        final = self.choose_final(state)
        output, label = final.output, final.label
        if final.aggregator is not None and final.messages is not None:
            (r,) = await run.run_calls(
                [
                    Call(
                        "aggregator",
                        "aggregator",
                        final.aggregator,
                        final.messages,
                        inputs=list(final.inputs),
                    )
                ]
            )
            if r is not None and r.error is None:
                output = r.output
                label = final.aggregated_label or f"aggregator ({final.aggregator})"
            elif r is None:
                label += "; aggregator skipped: budget"
            else:
                label += f"; aggregator failed: {r.error}"
        meta = dict(state.meta)
        meta["final"] = label
        meta.setdefault("aggregator", final.aggregator)
        if state.stop_reason:
            meta["stop_reason"] = state.stop_reason
        return run.finish(output, meta)


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
    plan; the run itself is capped by its budget (:class:`~moagraph.graph.run.QueryRun`)."""
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
