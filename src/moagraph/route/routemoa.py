"""RouteMoA: per-query layered routing with a scorer prior and a mixture of judges.

1. The scorer predicts each model's quality from the query; layer 1 = top-k,
   near-ties (within ``margin``) broken by cost, then latency.
2. After each layer every answering model rates its own answer (self) and the
   others' (cross) on 1-10; an answer's rank score is
   ``prior_weight * scorer + (1 - prior_weight) * mean_judge`` (both in [0, 1]).
3. Stop early when the judges agree (top answer's mean >= threshold, spread <=
   max_spread, >= min_judges readable scores); else the next layer's models
   are the top-k by rank score (a model keeps its latest judged score, else its
   scorer score) and
   refine the best answers.
4. An aggregator (the top-ranked model) fuses the best answers.
Every call is budget-guarded (see :mod:`runner`); every decision is in
``Trace.meta``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from moagraph.graph.prompts import aggregator_messages, refine_messages
from moagraph.graph.trace import Trace
from moagraph.models.base import SamplingParams
from moagraph.models.runtime import PoolRuntime
from moagraph.route.base import RoutePlan, register_router
from moagraph.route.judges import JudgeResult, judge_messages, judges_agree, normalised, parse_score
from moagraph.route.runner import Call, QueryRun, RouteBudget, rank_models
from moagraph.route.scorer import Scorer
from moagraph.tasks.base import Example, Task


class RouteMoAConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(3, ge=1, description="Models per layer.")
    margin: float = Field(0.02, ge=0, description="Scores within this of the best are near-ties (cheaper wins).")
    cost_key: Literal["flops", "dollars"] = "flops"
    max_layers: int = Field(2, ge=1, description="Answering layers before the aggregator.")
    judges: bool = Field(True, description="Run self/cross assessment after each layer.")
    cross: bool = Field(True, description="Cross-assessment (else self only).")
    prior_weight: float = Field(0.5, ge=0, le=1, description="Weight of the scorer prior vs judges.")
    stop_threshold: float = Field(8.0, ge=1, le=10, description="Early stop: top mean judge score.")
    stop_max_spread: float = Field(2.0, ge=0, description="Early stop: max - min judge score.")
    min_judges: int = Field(2, ge=1, description="Early stop: readable judge scores needed.")
    n_inputs: int = Field(3, ge=1, description="Best answers passed to the next layer / aggregator.")
    aggregate: bool = Field(True, description="Fuse with an aggregator (else return the top answer).")
    aggregate_on_stop: bool = Field(False, description="Also aggregate after an early stop.")
    max_tokens: int = Field(512, ge=1)
    judge_max_tokens: int = Field(8, ge=1)
    temperature: float = Field(0.0, ge=0)
    stop: tuple[str, ...] = ()
    max_flops_norm: float | None = Field(None, gt=0, description="Hard budget: normalised FLOPs per query.")
    max_dollars: float | None = Field(None, gt=0, description="Hard budget: dollars per query.")


@register_router("routemoa")
class RouteMoA:
    """The RouteMoA policy (implements :class:`moagraph.graph.trace.Policy`)."""

    def __init__(
        self,
        scorer: Scorer,
        runtime: PoolRuntime,
        config: RouteMoAConfig | None = None,
        name: str = "routemoa",
        **overrides: Any,
    ) -> None:
        scorer.check_pool(runtime.pool)
        self.scorer = scorer
        self.runtime = runtime
        base = config or RouteMoAConfig()
        # Validate the merged settings and keep the *validated* model: model_copy(update=...)
        # skips validation, so RouteMoA(k="2") used to keep the string and fail in plan().
        self.config = RouteMoAConfig.model_validate({**base.model_dump(), **overrides})
        self.name = name

    # --- decisions without LLM calls ----------------------------------------
    def score(self, text: str) -> tuple[dict[str, float], dict[str, float]]:
        """Scorer prior per model + timings (encoder ms, head ms)."""
        t0 = time.perf_counter()
        x = self.scorer.encoder.encode([text])
        t1 = time.perf_counter()
        row = self.scorer.predict_embedded(x)[0]
        t2 = time.perf_counter()
        scores = {m: float(v) for m, v in zip(self.scorer.models, row)}
        return scores, {"encode_ms": (t1 - t0) * 1e3, "head_ms": (t2 - t1) * 1e3}

    def rank(self, scores: dict[str, float], task: Task | None = None) -> list[str]:
        a, b = (task.avg_input_tokens, task.avg_output_tokens) if task else (200, 300)
        return rank_models(scores, self.runtime.pool, self.config.margin, a, b, self.config.cost_key)

    def plan(self, example: Example, task: Task | None = None) -> RoutePlan:
        scores, timing = self.score(example.question)
        t0 = time.perf_counter()
        ranked = self.rank(scores, task)
        layer1 = ranked[: self.config.k]
        timing["policy_ms"] = (time.perf_counter() - t0) * 1e3
        c = self.config
        return RoutePlan(
            layers=[list(layer1)] * c.max_layers,
            aggregator=layer1[0] if c.aggregate else None,
            ranked=layer1,
            scores=scores,
            judges_per_layer=(len(layer1) ** 2 if c.cross else len(layer1)) if c.judges else 0,
            judge_max_tokens=c.judge_max_tokens,
            meta={"timing": timing, "note": "later layers are chosen by judges at run time"},
        )

    # --- the full policy -----------------------------------------------------
    async def answer(self, example: Example, task: Task, on_token: Any = None) -> Trace:
        c = self.config
        params = SamplingParams(temperature=c.temperature, max_tokens=c.max_tokens, stop=tuple(c.stop))
        run = QueryRun(self.runtime, task, example, self.name, params,
                       RouteBudget(c.max_flops_norm, c.max_dollars))
        question = task.format_question(example)
        scores, timing = self.score(question)
        t0 = time.perf_counter()
        ranked = self.rank(scores, task)
        timing["policy_ms"] = (time.perf_counter() - t0) * 1e3
        meta: dict[str, Any] = {"router": "routemoa", "config": c.model_dump(), "prior": scores,
                                "ranking": ranked, "timing": timing, "layers": []}

        layer_models = ranked[: c.k]
        current: dict[str, str] = {}  # model -> answer text of the latest layer
        current_nodes: dict[str, str] = {}  # model -> node id
        combined: dict[str, float] = {}
        belief = dict(scores)  # latest rank score per model: judged layers overwrite the prior
        stop_reason = ""
        prev_inputs: list[str] = []
        prev_nodes: list[str] = []
        for layer in range(1, c.max_layers + 1):
            calls = []
            for m in layer_models:
                nid = f"L{layer}:{m}"
                if layer == 1:
                    msgs = task.prompt(example)
                    calls.append(Call(nid, "assistant", m, msgs, query_bound=True))
                else:
                    msgs = refine_messages(task, example, prev_inputs)
                    calls.append(Call(nid, "assistant", m, msgs, inputs=list(prev_nodes)))
            results = await run.run_calls(calls)
            answered = {call.model: r for call, r in zip(calls, results) if r is not None and r.error is None}
            info: dict[str, Any] = {"layer": layer, "models": layer_models,
                                    "answered": list(answered)}
            if not answered:
                info["note"] = "no answers (budget or errors)"
                meta["layers"].append(info)
                stop_reason = stop_reason or (
                    "budget: no call of this layer fits" if run.skipped else "every call failed")
                break
            current = {m: r.output for m, r in answered.items()}
            current_nodes = {m: r.node_id for m, r in answered.items()}
            judged: list[JudgeResult] = []
            if c.judges:
                judged = await self._judge(run, question, layer, current, current_nodes)
                info["judge_scores"] = {j.answer_model: j.scores for j in judged}
            jmap = {j.answer_model: j for j in judged}
            combined = {}
            for m in current:
                jm = normalised(jmap[m].mean) if m in jmap else None
                combined[m] = scores[m] if jm is None else c.prior_weight * scores[m] + (1 - c.prior_weight) * jm
            info["combined"] = combined
            belief.update(combined)
            meta["layers"].append(info)
            if c.judges:
                agree, why = judges_agree(judged, c.stop_threshold, c.stop_max_spread, c.min_judges)
                info["agreement"] = why
                if agree:
                    stop_reason = f"early stop after layer {layer}: {why}"
                    break
            if layer == c.max_layers:
                stop_reason = f"max_layers={c.max_layers} reached"
                break
            order = sorted(combined, key=lambda m: -combined[m])
            prev_inputs = [current[m] for m in order[: c.n_inputs]]
            prev_nodes = [current_nodes[m] for m in order[: c.n_inputs]]
            layer_models = self.rank(belief, task)[: c.k]

        best_order = sorted(combined, key=lambda m: -combined[m]) if combined else []
        output, source = (current[best_order[0]], f"top answer ({best_order[0]})") if best_order else ("", "none")
        early = stop_reason.startswith("early stop")
        if best_order and c.aggregate and (not early or c.aggregate_on_stop):
            agg = self.rank(belief, task)[0]
            ins = best_order[: c.n_inputs]
            msgs = aggregator_messages(task, example, [current[m] for m in ins])
            (res,) = await run.run_calls(
                [Call("aggregator", "aggregator", agg, msgs, inputs=[current_nodes[m] for m in ins])]
            )
            if res is not None and res.error is None:
                output, source = res.output, f"aggregator ({agg}) over {ins}"
            elif res is None:
                source += "; aggregator skipped: budget"
            else:
                source += f"; aggregator failed: {res.error}"
            meta["aggregator"] = agg
        meta["stop_reason"] = stop_reason
        meta["final"] = source
        return run.finish(output, meta)

    async def _judge(
        self, run: QueryRun, question: str, layer: int, answers: dict[str, str], nodes: dict[str, str]
    ) -> list[JudgeResult]:
        c = self.config
        calls: list[Call] = []
        pairs: list[tuple[str, str]] = []
        for judge in answers:
            for author, text in answers.items():
                if not c.cross and judge != author:
                    continue
                calls.append(Call(f"L{layer}:judge:{judge}->{author}", "judge", judge,
                                  judge_messages(question, text), inputs=[nodes[author]],
                                  max_tokens=c.judge_max_tokens))
                pairs.append((judge, author))
        results = await run.run_calls(calls)
        out = {m: JudgeResult(answer_model=m) for m in answers}
        for (judge, author), r in zip(pairs, results):
            if r is None:
                out[author].scores[judge] = None
                out[author].raw[judge] = "<skipped: budget>"
            elif r.error is not None:
                out[author].scores[judge] = None
                out[author].raw[judge] = f"<error: {r.error}>"
            else:
                out[author].scores[judge] = parse_score(r.output)
                out[author].raw[judge] = r.output[:200]
        return list(out.values())
