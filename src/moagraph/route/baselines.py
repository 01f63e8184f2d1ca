"""Baselines RouteMoA is measured against, run by the same layered runner.

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
from typing import Any

import numpy as np

from moagraph.graph.prompts import aggregator_messages, refine_messages
from moagraph.graph.trace import Trace
from moagraph.models.base import SamplingParams
from moagraph.models.cost import node_flops
from moagraph.models.runtime import PoolRuntime
from moagraph.route.base import RoutePlan, RouterError
from moagraph.route.runner import Call, QueryRun, RouteBudget, plan_flops
from moagraph.route.scorer import Scorer
from moagraph.tasks.base import Example, Task


class _LayeredBaseline:
    """Fixed-shape MoA: subclasses only choose the models (``choose``)."""

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
        max_flops_norm: float | None = None,
        max_dollars: float | None = None,
        name: str | None = None,
        aggregator: str | None = None,
    ) -> None:
        if layers < 1:
            raise RouterError(f"layers={layers}: must be >= 1")
        if scorer is not None:
            scorer.check_pool(runtime.pool)
        self.runtime = runtime
        self.scorer = scorer
        self.layers = layers
        self.aggregate = aggregate
        self.n_inputs = n_inputs
        self.params = SamplingParams(
            temperature=temperature, max_tokens=max_tokens, stop=tuple(stop)
        )
        self.budget = RouteBudget(max_flops_norm, max_dollars)
        self.name = name or self.kind
        if aggregator is not None and aggregator not in runtime.pool:
            raise RouterError(
                f"aggregator {aggregator!r} is not in pool {runtime.pool.name!r}; "
                f"models: {', '.join(runtime.pool.names)}"
            )
        self.aggregator = aggregator  # None: the policy's own choice (``choose``)

    def estimate_flops(
        self,
        example: Example,
        task: Task,
        *,
        prompt_tokens: float | None = None,
        max_tokens: int | None = None,
    ) -> float:
        """Normalised FLOPs of this query's plan (no LLM call); see :func:`plan_flops`."""
        return plan_flops(
            self.plan(example, task),
            self.runtime.pool,
            task,
            prompt_tokens=prompt_tokens,
            max_tokens=min(max_tokens or self.params.max_tokens, self.params.max_tokens),
        )

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

    async def answer(self, example: Example, task: Task, on_token: Any = None) -> Trace:
        plan = self.plan(example, task)
        run = QueryRun(self.runtime, task, example, self.name, self.params, self.budget)
        current: dict[str, str] = {}
        nodes: dict[str, str] = {}
        for layer, models in enumerate(plan.layers, 1):
            if layer == 1:
                calls = [
                    Call(f"L1:{m}", "assistant", m, task.prompt(example), query_bound=True)
                    for m in models
                ]
            else:
                keep = [m for m in plan.ranked if m in current][: self.n_inputs]
                msgs = refine_messages(task, example, [current[m] for m in keep])
                calls = [
                    Call(f"L{layer}:{m}", "assistant", m, msgs, inputs=[nodes[k] for k in keep])
                    for m in models
                ]
            res = await run.run_calls(calls)
            got = {c.model: r for c, r in zip(calls, res) if r is not None and r.error is None}
            if not got:
                break
            current = {m: r.output for m, r in got.items()}
            nodes = {m: r.node_id for m, r in got.items()}
        ranked_here = [m for m in plan.ranked if m in current]
        output = current[ranked_here[0]] if ranked_here else ""
        final = f"top answer ({ranked_here[0]})" if ranked_here else "none"
        if ranked_here and plan.aggregator is not None and len(plan.ranked) > 1:
            keep = ranked_here[: self.n_inputs]
            msgs = aggregator_messages(task, example, [current[m] for m in keep])
            (r,) = await run.run_calls(
                [
                    Call(
                        "aggregator",
                        "aggregator",
                        plan.aggregator,
                        msgs,
                        inputs=[nodes[m] for m in keep],
                    )
                ]
            )
            if r is not None and r.error is None:
                output, final = r.output, f"aggregator ({plan.aggregator})"
        return run.finish(
            output,
            {
                "router": self.kind,
                "plan": plan.layers[0],
                "final": final,
                "aggregator": plan.aggregator,
            },
        )


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
    import json
    import re

    idx_m = re.search(r'"chosen responses"\s*:\s*(?:list:)?\s*(\[[^\]]*\])', text or "")
    stop_m = re.search(r'"end debate"\s*:\s*(true|false)', text or "", re.I)
    try:
        idx = [int(i) for i in json.loads(idx_m.group(1))] if idx_m else []
    except (ValueError, TypeError):
        idx = []
    if not idx or any(i < 0 or i >= n for i in idx):
        idx = list(range(min(k, n)))
    return idx, bool(stop_m and stop_m.group(1).lower() == "true")


class SMoA(_LayeredBaseline):
    """SMoA: all models answer, a moderator (the aggregator model) selects ``k`` responses
    and may end the debate; the next round reads the selected ones; the aggregator fuses."""

    kind = "smoa"

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

    async def answer(self, example: Example, task: Task, on_token: Any = None) -> Trace:
        import re

        models = list(self.runtime.pool.names)
        run = QueryRun(self.runtime, task, example, self.name, self.params, self.budget)
        question = task.format_question(example)
        roles: list[str] = []
        role_node: list[str] = []
        if self.roles:
            (r,) = await run.run_calls(
                [
                    Call(
                        "roles",
                        "assistant",
                        self.agg,
                        [
                            {
                                "role": "user",
                                "content": ROLE_PROMPT.format(n=len(models), task=question),
                            }
                        ],
                    )
                ]
            )
            if r is not None and r.error is None:
                roles = [
                    p.strip()
                    for p in re.split(r"\[Generated Role Description\]", r.output)
                    if p.strip()
                ]
                role_node = [r.node_id]
        refs: list[str] = []
        ref_nodes: list[str] = []
        rounds_meta: list[dict[str, Any]] = []
        for rnd in range(1, self.layers + 1):
            calls = []
            for i, m in enumerate(models):
                msgs = task.prompt(example) if rnd == 1 else refine_messages(task, example, refs)
                if i < len(roles):
                    msgs = [{"role": "system", "content": roles[i]}, *msgs]
                calls.append(
                    Call(
                        f"R{rnd}:{m}",
                        "assistant",
                        m,
                        msgs,
                        inputs=role_node + ref_nodes,
                        query_bound=rnd == 1,
                    )
                )
            res = await run.run_calls(calls)
            got = [
                (c.model, r)
                for c, r in zip(calls, res)
                if r is not None and r.error is None and r.output
            ]
            if not got:
                break
            prompt = SMOA_JUDGE_PROMPT.format(n=len(got), k=self.k)
            for i, (_, r) in enumerate(got):
                prompt += f"\nResponse {i}:\n{r.output}\n"
            (j,) = await run.run_calls(
                [
                    Call(
                        f"R{rnd}:moderator",
                        "judge",
                        self.agg,
                        [{"role": "user", "content": prompt}],
                        inputs=[r.node_id for _, r in got],
                        max_tokens=1024,
                    )
                ]
            )
            chosen, stop = parse_moderator(
                j.output if j is not None and j.error is None else "", len(got), self.k
            )
            refs = [got[i][1].output for i in chosen]
            ref_nodes = [got[i][1].node_id for i in chosen]
            rounds_meta.append(
                {"round": rnd, "chosen": [got[i][0] for i in chosen], "end_debate": stop}
            )
            if stop:
                break
        output, final = (refs[0], "first chosen response") if refs else ("", "none")
        if refs and self.aggregate:
            (r,) = await run.run_calls(
                [
                    Call(
                        "aggregator",
                        "aggregator",
                        self.agg,
                        aggregator_messages(task, example, refs),
                        inputs=ref_nodes,
                    )
                ]
            )
            if r is not None and r.error is None:
                output, final = r.output, f"aggregator ({self.agg})"
        return run.finish(
            output,
            {"router": self.kind, "rounds": rounds_meta, "final": final, "aggregator": self.agg},
        )


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
