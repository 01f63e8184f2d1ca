"""Baselines RouteMoA is measured against, all on the layered router base (:mod:`.layered`).

All share one shape: some models answer in layer 1, the same models refine
for ``layers - 1`` more layers, an aggregator fuses (or not). They differ
only in which models, chosen how:

- ``dense``: every pool model (classic MoA: 3 rounds as the official
  ``emoa_large/configs/moa.json``), aggregator = best by training label;
- ``smoa``: SMoA (official ``emoa_large/src/emoa/core/smoa_v2.py``, config
  ``emoa_large/configs/smoa.json``): every model answers (with a generated role),
  a judge/moderator (the aggregator model) picks ``k`` = 3 responses and may end
  the debate, the next round sees only those, the aggregator fuses them;
- ``oracle``: the cheapest model that is right on the query (needs labels);
- ``sparse``: a fixed subset (given, or the k best by training label);
- ``single``: the single best model by training label, one call;
- ``random``: k random models per query (seeded by query id);
- ``threshold``: weak model if the scorer predicts it is good enough, else strong.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from moagraph.graph.budget import Budget
from moagraph.graph.prompts import aggregator_messages, refine_messages
from moagraph.graph.run import Call, QueryRun
from moagraph.models.base import ChatMessage, SamplingParams
from moagraph.models.cost import node_flops
from moagraph.models.runtime import PoolRuntime
from moagraph.route.base import RoutePlan, RouterError
from moagraph.route.layered import FinalChoice, LayerChoice, LayeredRouter, LayerState
from moagraph.route.scorer import Scorer
from moagraph.tasks.base import Example, Task

S = TypeVar("S", bound=LayerState)


class _Baseline(LayeredRouter[S]):
    """Settings, training prior and fixed-shape plan shared by the baselines; subclasses
    choose the models (``choose``)."""

    kind = "baseline"

    def __init__(
        self,
        runtime: PoolRuntime,
        scorer: Scorer | None = None,
        *,
        layers: int = 3,
        aggregate: bool = True,
        n_inputs: int | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        stop: tuple[str, ...] = (),
        json_schema: dict[str, Any] | None = None,
        max_flops_norm: float | None = None,
        max_dollars: float | None = None,
        name: str | None = None,
        aggregator: str | None = None,
    ) -> None:
        if layers < 1:
            raise RouterError(f"layers={layers}: must be >= 1")
        for cap, v in (("max_flops_norm", max_flops_norm), ("max_dollars", max_dollars)):
            if v is not None and v <= 0:
                raise RouterError(f"budget {cap}={v}: must be > 0 (or unset for no cap)")
        if scorer is not None:
            scorer.check_pool(runtime.pool)
        super().__init__(
            runtime,
            params=SamplingParams(
                temperature=temperature,
                max_tokens=max_tokens,
                stop=tuple(stop),
                json_schema=json_schema,
            ),
            budget=Budget(max_flops_norm=max_flops_norm, max_dollars=max_dollars),
            name=name or self.kind,
        )
        self.scorer = scorer
        self.layers = layers
        self.aggregate = aggregate
        self.n_inputs = n_inputs
        if aggregator is not None and aggregator not in runtime.pool:
            raise RouterError(
                f"aggregator {aggregator!r} is not in pool {runtime.pool.name!r}; "
                f"models: {', '.join(runtime.pool.names)}"
            )
        self.aggregator = aggregator  # None: the policy's own choice (``choose``)

    # helpers -------------------------------------------------------------
    def prior(self) -> dict[str, float]:
        """Training mean label per model (no scorer: all equal)."""
        if self.scorer is None:
            return {m: 0.0 for m in self.runtime.pool.names}
        return self.scorer.prior_scores()

    def by_prior(self, models: list[str] | None = None) -> list[str]:
        p = self.prior()
        ms = models if models is not None else self.runtime.pool.names
        return sorted(ms, key=lambda m: (-p.get(m, 0.0), m))

    def choose(self, example: Example) -> tuple[list[str], str | None]:
        """(layer-1 models in this policy's order of preference, aggregator)."""
        raise NotImplementedError

    def plan(self, example: Example, task: Task | None = None) -> RoutePlan:
        ranked, agg = self.choose(example)
        if agg is not None and self.aggregator is not None:
            agg = self.aggregator
        return RoutePlan(
            layers=[list(ranked)] * self.layers,
            aggregator=agg if self.aggregate else None,
            ranked=list(ranked),
            scores=self.prior(),
        )


@dataclass
class _FixedState(LayerState):
    plan: RoutePlan = field(default_factory=lambda: RoutePlan([], None, []))


class _LayeredBaseline(_Baseline[_FixedState]):
    """Fixed-shape MoA: the plan's models answer every layer; later layers refine the
    previous layer's answers (best by the plan's ranking first, at most ``n_inputs``);
    the plan's aggregator fuses the last layer's."""

    def new_state(self, run: QueryRun, example: Example, task: Task) -> _FixedState:
        plan = self.plan(example, task)
        return _FixedState(
            run, example, task, meta={"router": self.kind, "plan": plan.layers[0]}, plan=plan
        )

    async def choose_layer(self, state: _FixedState) -> LayerChoice | None:
        plan, n = state.plan, state.layer
        if n == len(plan.layers):
            return None
        if n == 0:
            return LayerChoice(plan.layers[0], state.task.prompt(state.example))
        current = state.last
        keep = [m for m in plan.ranked if m in current][: self.n_inputs]
        msgs = refine_messages(state.task, state.example, [current[m].output for m in keep])
        return LayerChoice(plan.layers[n], msgs, inputs=[current[m].node_id for m in keep])

    def choose_final(self, state: _FixedState) -> FinalChoice:
        plan, current = state.plan, state.last
        ranked_here = [m for m in plan.ranked if m in current]
        if not ranked_here:
            return FinalChoice("", "none", aggregator=plan.aggregator)
        top = ranked_here[0]
        final = FinalChoice(current[top].output, f"top answer ({top})", aggregator=plan.aggregator)
        if plan.aggregator is not None and len(plan.ranked) > 1:
            keep = ranked_here[: self.n_inputs]
            final.messages = aggregator_messages(
                state.task, state.example, [current[m].output for m in keep]
            )
            final.inputs = [current[m].node_id for m in keep]
        return final


class DenseMoA(_LayeredBaseline):
    kind = "dense"

    def choose(self, example: Example) -> tuple[list[str], str | None]:
        ranked = self.by_prior()
        return ranked, ranked[0]


class SparseMoA(_LayeredBaseline):
    kind = "sparse"

    def __init__(
        self,
        runtime: PoolRuntime,
        scorer: Scorer | None = None,
        *,
        models: list[str] | None = None,
        k: int = 3,
        **kw: Any,
    ) -> None:
        super().__init__(runtime, scorer, **kw)
        if models:
            unknown = [m for m in models if m not in runtime.pool]
            if unknown:
                raise RouterError(f"sparse models {unknown} are not in pool {runtime.pool.name!r}")
        self.models = self.by_prior(list(models)) if models else self.by_prior()[:k]

    def choose(self, example: Example) -> tuple[list[str], str | None]:
        return list(self.models), self.models[0]


class SingleBest(_LayeredBaseline):
    kind = "single"

    def __init__(self, runtime: PoolRuntime, scorer: Scorer | None = None, **kw: Any) -> None:
        kw.setdefault("layers", 1)
        kw.setdefault("aggregate", False)
        super().__init__(runtime, scorer, **kw)

    def choose(self, example: Example) -> tuple[list[str], str | None]:
        return [self.by_prior()[0]], None


class RandomK(_LayeredBaseline):
    kind = "random"

    def __init__(
        self,
        runtime: PoolRuntime,
        scorer: Scorer | None = None,
        *,
        k: int = 3,
        seed: int = 0,
        **kw: Any,
    ) -> None:
        super().__init__(runtime, scorer, **kw)
        if not 1 <= k <= len(runtime.pool.models):
            raise RouterError(f"random k={k}: must be between 1 and {len(runtime.pool.models)}")
        self.k, self.seed = k, seed

    def choose(self, example: Example) -> tuple[list[str], str | None]:
        h = int(hashlib.sha256(f"{self.seed}:{example.id}".encode()).hexdigest()[:8], 16)
        names = self.runtime.pool.names
        picks = [
            names[i] for i in np.random.default_rng(h).choice(len(names), self.k, replace=False)
        ]
        return picks, picks[0]


class ThresholdRouter(_LayeredBaseline):
    """RouteLLM-style binary router: the weak model when the scorer predicts its quality
    >= ``cutoff``, else the strong one. Defaults: strong = best by training label; weak =
    best by training label among the cheaper half of the pool."""

    kind = "threshold"

    def __init__(
        self,
        runtime: PoolRuntime,
        scorer: Scorer | None = None,
        *,
        cutoff: float = 0.5,
        strong: str | None = None,
        weak: str | None = None,
        **kw: Any,
    ) -> None:
        if scorer is None:
            raise RouterError("threshold router needs a trained scorer (--router FILE)")
        kw.setdefault("layers", 1)
        kw.setdefault("aggregate", False)
        super().__init__(runtime, scorer, **kw)
        pool = runtime.pool
        ranked = self.by_prior()
        cost = {m.name: node_flops(m, 0, 200, 300) for m in pool.models}
        cheap = sorted(pool.names, key=lambda m: cost[m])[: max(1, len(pool.names) // 2)]
        self.strong = strong or ranked[0]
        self.weak = weak or next(m for m in ranked if m in cheap and m != self.strong)
        for role, m in (("strong", self.strong), ("weak", self.weak)):
            if m not in pool:
                raise RouterError(f"threshold {role} model {m!r} is not in pool {pool.name!r}")
        self.cutoff = cutoff

    def choose(self, example: Example) -> tuple[list[str], str | None]:
        assert self.scorer is not None
        s = self.scorer.scores(example.question)
        return ([self.weak] if s[self.weak] >= self.cutoff else [self.strong]), None


SMOA_JUDGE_PROMPT = (
    "You are a moderator. You will be provided {n} responses from various open-source models to the "
    "latest user query. Your task is to carefully and meticulously select {k} responses from them, "
    "according to correctness, fluency, relevance, and quality. It is crucial to critically evaluate "
    "the information provided in these responses, recognizing that some of them may be biased or "
    "incorrect. Additionally, you need to decide whether to end the debate by measuring the "
    "consistency between responses and giving an indicator controlling ending the debate or not.\n\n"
    "Your answer should be like this JSON FILE STYLE:\n\n"
    '{{\n    "chosen responses": list:[indexes of best {k} responses]  ,\n'
    '    "end debate": true/false  // whether to end the debate\n}}'
)
"""Official ``emoa_large/configs/moderator_prompt.txt``."""

ROLE_PROMPT = (
    "Your task is to generate {n} role descriptions for the following task:\n{task}, Each role "
    "description should include occupation, personality, and social group. Separate each role "
    "description with [Generated Role Description]"
)


def parse_moderator(text: str, n: int, k: int) -> tuple[list[int], bool]:
    """Official ``parse_judge_output``: chosen indexes (default the first k) and the stop flag."""
    idx_m = re.search(r'"chosen responses"\s*:\s*(?:list:)?\s*(\[[^\]]*\])', text or "")
    stop_m = re.search(r'"end debate"\s*:\s*(true|false)', text or "", re.I)
    try:
        idx = [int(i) for i in json.loads(idx_m.group(1))] if idx_m else []
    except (ValueError, TypeError):
        idx = []
    if not idx or any(i < 0 or i >= n for i in idx):
        idx = list(range(min(k, n)))
    return idx, bool(stop_m and stop_m.group(1).lower() == "true")


@dataclass
class _SMoAState(LayerState):
    roles: list[str] = field(default_factory=list)
    role_node: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)  # the moderator's chosen answers
    ref_nodes: list[str] = field(default_factory=list)


class SMoA(_Baseline[_SMoAState]):
    """SMoA: all models answer, a moderator (the aggregator model) selects ``k`` responses
    and may end the debate; the next round reads the selected ones; the aggregator fuses."""

    kind = "smoa"
    node_prefix = "R"
    layer_word = "round"

    def __init__(
        self,
        runtime: PoolRuntime,
        scorer: Scorer | None = None,
        *,
        k: int = 3,
        roles: bool = True,
        aggregator: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(runtime, scorer, **kw)
        self.k, self.roles = k, roles
        self.agg = aggregator or self.by_prior()[0]
        if self.agg not in runtime.pool:
            raise RouterError(f"smoa aggregator {self.agg!r} is not in pool {runtime.pool.name!r}")

    def choose(self, example: Example) -> tuple[list[str], str | None]:
        return self.by_prior(), self.agg

    def new_state(self, run: QueryRun, example: Example, task: Task) -> _SMoAState:
        return _SMoAState(
            run, example, task, meta={"router": self.kind, "rounds": [], "aggregator": self.agg}
        )

    async def choose_layer(self, state: _SMoAState) -> LayerChoice | None:
        """Round 1 (after the role generation call), or the moderator's verdict on the
        last round and then the next round over the responses it chose."""
        task, example, rnd = state.task, state.example, state.layer
        models = list(self.runtime.pool.names)
        if rnd == 0 and self.roles:
            msg: ChatMessage = {
                "role": "user",
                "content": ROLE_PROMPT.format(n=len(models), task=task.format_question(example)),
            }
            r = await state.run.call(Call("roles", "assistant", self.agg, [msg]))
            if r is not None and r.error is None:
                state.roles = [
                    p.strip()
                    for p in re.split(r"\[Generated Role Description\]", r.output)
                    if p.strip()
                ]
                state.role_node = [r.node_id]
        if rnd > 0:
            got = [(m, r) for m, r in state.last.items() if r.output]
            if not got:
                return None
            prompt = SMOA_JUDGE_PROMPT.format(n=len(got), k=self.k)
            for i, (_, r) in enumerate(got):
                prompt += f"\nResponse {i}:\n{r.output}\n"
            j = await state.run.call(
                Call(
                    f"R{rnd}:moderator",
                    "judge",
                    self.agg,
                    [{"role": "user", "content": prompt}],
                    inputs=[r.node_id for _, r in got],
                    max_tokens=1024,
                )
            )
            chosen, stop = parse_moderator(
                j.output if j is not None and j.error is None else "", len(got), self.k
            )
            state.refs = [got[i][1].output for i in chosen]
            state.ref_nodes = [got[i][1].node_id for i in chosen]
            state.meta["rounds"].append(
                {"round": rnd, "chosen": [got[i][0] for i in chosen], "end_debate": stop}
            )
            if stop or rnd == self.layers:
                return None
        messages: dict[str, list[ChatMessage]] = {}
        for i, m in enumerate(models):
            msgs = task.prompt(example) if rnd == 0 else refine_messages(task, example, state.refs)
            if i < len(state.roles):
                msgs = [{"role": "system", "content": state.roles[i]}, *msgs]
            messages[m] = msgs
        return LayerChoice(models, messages, inputs=state.role_node + state.ref_nodes)

    def choose_final(self, state: _SMoAState) -> FinalChoice:
        if not state.refs:
            return FinalChoice("", "none", aggregator=self.agg)
        final = FinalChoice(state.refs[0], "first chosen response", aggregator=self.agg)
        if self.aggregate:
            final.messages = aggregator_messages(state.task, state.example, state.refs)
            final.inputs = list(state.ref_nodes)
        return final


class Oracle(_LayeredBaseline):
    """Upper bound: the cheapest model that is right on the query (one call).

    ``labels``: query id -> {model: 0/1 label}; a query without a right model (or
    without labels) goes to the best model by training label."""

    kind = "oracle"

    def __init__(
        self,
        runtime: PoolRuntime,
        scorer: Scorer | None = None,
        *,
        labels: dict[str, dict[str, float]] | None = None,
        **kw: Any,
    ) -> None:
        kw.setdefault("layers", 1)
        kw.setdefault("aggregate", False)
        super().__init__(runtime, scorer, **kw)
        self.labels = labels or {}
        self._cost = {m.name: node_flops(m, 0, 200, 300) for m in runtime.pool.models}

    def choose(self, example: Example) -> tuple[list[str], str | None]:
        lab = self.labels.get(example.id, {})
        right = [m for m, v in lab.items() if v is not None and v >= 0.5 and m in self._cost]
        if right:
            return [min(right, key=lambda m: (self._cost[m], m))], None
        return [self.by_prior()[0]], None
