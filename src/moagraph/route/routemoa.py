"""RouteMoA as the official code runs it (``rongyan4/RouteMoA``,
``emoa_large/src/emoa/core/emoa_v2.py``, ``EmoaApp.process_func_emoa``;
configuration ``emoa_large/configs/routemoa.json``).

Per query:

1. The scorer gives every model P(correct) from the query alone; the prior is
   mapped with ``map_scores`` (x < 0.5: 0.8 x^1.5, else 1 - 0.8 (1-x)^1.5).
   Models are ranked by score, exact ties by output then input price
   (official); round 1 = the top ``k`` = 3.
2. **Assessment inside the answer call** (official): each round-1 reply is a
   JSON object ``{"answer", "self_score"}``; round-2 replies add
   ``peer_scores`` for every round-1 answer. One call per answering model; the
   self-score is parsed from the same reply (``safe_json_extract``). The
   cross-score of a round-1 answer is the peer score given by the round-2
   model with the highest self-score ("the best model"). No separate judge
   calls (option ``assessment="judge"`` runs them instead, as this project
   used to; ``"none"`` skips assessment).
3. Combined scores (official weights): after round 1,
   ``0.9 * mapped + 0.1 * self`` (an unparsed or zero self-score counts 0.8);
   after round 2, for models in both rounds
   ``0.25 * mapped + 0.15 * self1 + 0.15 * self2 + 0.45 * cross`` (missing
   self 0.5; missing cross = keep the previous score), for models new in
   round 2 ``0.9 * mapped + 0.1 * self2``, for round-1 models dropped in
   round 2 ``0.7 * mapped + 0.1 * self1 + 0.2 * cross``. Every other model
   keeps its mapped prior. The next round's models are the top ``k`` by
   combined score over the whole pool.
4. Early stop when the best combined score of the round's models is
   ``> 0.76``. At most 3 rounds (round 3 answers in plain text, no scores).
5. A fixed aggregator (``agg_model``; default here: the strongest model of the
   pool by the scorer's training prior, or a named one) **always** fuses the
   last round's answers.

Deviations from the official code, each a named option (defaults = official
unless said):

- ``margin`` (default 0 = exact ties by price): scores within ``margin`` of the
  best count as tied and the cheaper (``cost_key``) wins; price ties between
  $0 open models fall back to FLOPs then name (official: candidate order).
- ``self_scores_per_round`` (default True): the weights ``self1`` / ``self2``
  use the round-1 and round-2 self-scores as their names say; the official code
  rebinds ``self_scores`` each round, so it reads the round-2 self-score for
  both. And the official round-2 update also applies the "dropped" formula to
  models that never answered (their cross-score defaults to 1.0); here it
  applies only to models that answered in round 1.
- ``assessment`` ("inline" official, "judge", "none", "agreement"); ``aggregator``;
  ``aggregator_prompt`` ("official", or "moa": dense MoA's aggregator prompt);
  ``rounds``; ``k``; weights and threshold are all overridable.

Answer evidence where no self/peer score exists (``assessment="agreement"``, not in the
official code): a replay pool records one answer per model and no self/peer scores, so the
official assessment reads nothing and the stop rule decides from the scorer alone. With
``"agreement"`` each round's answers are extracted with the task's extractor and clustered
with ``task.equivalent`` exactly as the graph vote (:func:`moagraph.graph.executor.vote`)
clusters them; an answer's agreement is the share of the round's answers in its cluster
(cross-assessment by the other models' answers). The combined score of a model that
answered is ``w_mapped * mapped + w_agree * agreement`` (``agreement_weights``, default
(0.2, 0.8): with ``k = 3`` and the official threshold 0.76 a round stops exactly when all
its answers agree), never below its mapped prior (``agreement_floor``: agreement adds
evidence, so a round that disagrees keeps its models rather than trading them for
models nobody has assessed); optionally (``answer_model``) a logistic model over answer-level
features (scorer prior, agreement, answer length) fitted on training queries gives the
answered model's P(correct) instead. It is the **default when every model of the pool
replays recordings** (a replay pool) and an assessment was not named; live pools keep the
official in-answer self-assessment (``"inline"``).

The layer loop, budget guard and trace are the shared router base's
(:mod:`moagraph.route.layered`); every decision (prior,
mapped prior, parsed scores, combined scores, stop reason) is in ``Trace.meta``.
"""

from __future__ import annotations

import ast
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from textwrap import dedent
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from moagraph.graph.budget import Budget
from moagraph.graph.prompts import aggregator_messages
from moagraph.graph.run import Call, QueryRun
from moagraph.models.base import ChatMessage, SamplingParams
from moagraph.models.cost import call_dollars, node_flops
from moagraph.models.pool import Pool
from moagraph.models.runtime import PoolRuntime
from moagraph.route.base import RoutePlan, RouterError
from moagraph.route.judges import judge_messages, normalised, parse_score
from moagraph.route.layered import FinalChoice, LayerChoice, LayeredRouter, LayerState
from moagraph.route.scorer import Scorer
from moagraph.tasks.base import Example, Task

# --- official prompts (emoa_v2.py build_prompt_round_one / build_prompt_subsequent) -------
ROUND1_PROMPT = dedent("""
    You are participating in a multi-agent reasoning task.

    **Your objectives**
    1. Produce the best possible answer to the user's query.
    2. Critically evaluate your own answer and give it a quality score **between 0 and 1**
       (0 = completely wrong, 1 = perfect).

    **Output format** - return **ONLY** a valid JSON object:
    ```json
    {
      "answer": "<your answer>",
      "self_score": <float between 0 and 1>
    }
    ```
    Do **not** add any keys, comments or extra text.
""").strip()


def round2_prompt(previous: list[str]) -> str:
    block = "\n\n".join(f"ANSWER_{i}: {a}" for i, a in enumerate(previous))
    return (
        dedent("""
        You are participating in a multi-agent reasoning task.Here are several answers from other LLMs:

        {block}

        **Your objectives**
        1. Taking every answer in the previous round into account and produce an improved answer to the user's query.
        2. Critically evaluate your own answer and give it a quality score **between 0 and 1**
            (0 = completely wrong, 1 = perfect).
        3. Critically evaluate **each** ANSWER_i above with a value in [0, 1] representing its quality.
            (0 = completely wrong, 1 = perfect)

        **Output format** - return **ONLY** a valid JSON object:
        ```json
        {{
          "answer": "<your improved answer>",
          "self_score": <float>,
          "peer_scores": [<float_score_for_ANSWER_0>, <float_score_for_ANSWER_1>, ...]
        }}
        ```
        Do not include any other text.
    """)
        .strip()
        .format(block=block)
    )


def round3_prompt(previous: list[str]) -> str:
    block = "\n\n".join(f"ANSWER_{i}: {a}" for i, a in enumerate(previous))
    return (
        "You are participating in a multi-agent reasoning task.\n"
        f"Here are some answers generated by LLMs in the last round:\n{block}\n\n"
        "**Your objective**\nProduce the best possible answer to the user's query, taking into\n"
        "account every ANSWER_i above.  Return only your answer text.\n\n"
        "**Output format - return ONLY the raw answer (no JSON or any other file).**"
    )


AGGREGATOR_PROMPT = dedent("""
    You have been provided with a set of responses from various open-source
    models to the latest user query. Your task is to synthesise these
    responses into a single, high-quality answer. Critically evaluate the
    information given, correct any mistakes, and produce a coherent,
    well-structured response that meets the highest standards of accuracy.

    Responses from models:
""").strip()


def with_system(
    task: Task, example: Example, inject: str, references: list[str] | None = None
) -> list[ChatMessage]:
    """The task's messages with ``inject`` (and numbered references) prepended to the system prompt."""
    msgs: list[dict[str, str]] = [
        {"role": m["role"], "content": m["content"]} for m in task.prompt(example)
    ]
    sys_text = inject
    if references:
        sys_text += "\n" + "\n".join(f"{i + 1}. {r}" for i, r in enumerate(references))
    if msgs and msgs[0]["role"] == "system":
        msgs[0]["content"] = sys_text + "\n\n" + msgs[0]["content"]
    else:
        msgs.insert(0, {"role": "system", "content": sys_text})
    return msgs  # type: ignore[return-value]


# --- parsing (emoa_v2.py safe_json_extract) ---------------------------------------------
_FENCE = re.compile(r"```(?:json)?\s*([\s\S]+?)```", re.I)
_BRACE = re.compile(r"\{[\s\S]*?}", re.M)


def _score(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if 0.0 <= f <= 1.0 else None


def parse_assessment(raw: str) -> tuple[float | None, list[float | None]]:
    """(self_score, peer_scores) from a reply; None where unreadable or out of [0, 1].

    Like the official ``safe_json_extract``: a fenced ```json block, else any
    ``{...}``, else a ``self_score: x`` pattern. The answer is the whole reply.
    """

    def try_parse(txt: str) -> tuple[float | None, list[float | None]] | None:
        txt = txt.strip().replace("{{", "{").replace("}}", "}")
        txt = re.sub(r",\s*([}\]])", r"\1", txt)
        for loader in (json.loads, ast.literal_eval):
            try:
                obj = loader(txt if loader is ast.literal_eval else txt.replace("'", '"'))
            except Exception:
                continue
            if isinstance(obj, dict) and ("self_score" in obj or "answer" in obj):
                peers = obj.get("peer_scores") or []
                return _score(obj.get("self_score")), [_score(p) for p in peers] if isinstance(
                    peers, list
                ) else []
        return None

    for m in _FENCE.finditer(raw or ""):
        r = try_parse(m.group(1))
        if r:
            return r
    for m in _BRACE.finditer(raw or ""):
        r = try_parse(m.group(0))
        if r:
            return r
    m2 = re.search(r'["\']?self_score["\']?\s*:\s*([0-9]*\.?[0-9]+)', raw or "", re.I)
    return (_score(m2.group(1)) if m2 else None), []


def map_scores(
    scores: dict[str, float], a: float = 0.8, b: float = 1.5, c: float = 0.8, d: float = 1.5
) -> dict[str, float]:
    """Official ``EmoaApp.map_scores``: x < 0.5 -> a x^b; else 1 - c (1 - x)^d."""
    out = {}
    for m, x in scores.items():
        x = min(1.0, max(0.0, float(x)))
        out[m] = a * x**b if x < 0.5 else 1 - c * (1 - x) ** d
    return out


def answer_clusters(equivalent: Callable[[Any, Any], bool], answers: list[Any]) -> list[list[int]]:
    """Positions of ``answers`` grouped as the graph vote groups them
    (:func:`moagraph.graph.executor.vote`): each answer joins the first cluster whose
    representative (its first member) is ``equivalent`` to it, else opens a new one;
    ``None`` (nothing extracted) joins no cluster."""
    clusters: list[tuple[Any, list[int]]] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        for rep, members in clusters:
            try:
                same = rep == a or bool(equivalent(rep, a))
            except Exception:
                same = False
            if same:
                members.append(i)
                break
        else:
            clusters.append((a, [i]))
    return [m for _, m in clusters]


def agreement_scores(
    answers: dict[str, Any], equivalent: Callable[[Any, Any], bool]
) -> dict[str, float]:
    """Cross-assessment from agreement: per model, the share of the round's answers in its
    answer's cluster (1.0 = every answer agrees; an unextractable answer scores 0)."""
    models = list(answers)
    n = len(models)
    out = {m: 0.0 for m in models}
    for members in answer_clusters(equivalent, [answers[m] for m in models]):
        for i in members:
            out[models[i]] = len(members) / n
    return out


def _logit(p: float) -> float:
    p = min(1 - 1e-4, max(1e-4, float(p)))
    return math.log(p / (1 - p))


def answer_features(prior: float, agreement: float, tokens: float) -> list[float]:
    """Answer-level features of one answered model: (1, logit prior, agreement share,
    log(1 + answer tokens)); the inputs of ``RouteMoAConfig.answer_model``."""
    return [1.0, _logit(prior), float(agreement), math.log1p(max(0.0, float(tokens)))]


def answer_probability(coef: tuple[float, ...], features: list[float]) -> float:
    z = sum(c * f for c, f in zip(coef, features))
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


class RouteMoAConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(3, ge=1, description="Models per round (official 3).")
    rounds: int = Field(
        3, ge=1, le=3, description="Answer rounds before the aggregator (official 3)."
    )
    assessment: Literal["inline", "judge", "none", "agreement"] = Field(
        "inline",
        description="inline: scores in the answer reply (official); judge: separate calls; "
        "agreement: cross-assessment from agreement between the round's answers (task "
        "equivalence), no extra call or token; the default on replay pools.",
    )
    agreement_weights: tuple[float, float] = Field(
        (0.2, 0.8),
        description="agreement: (mapped prior, agreement share) weights of an answered "
        "model's combined score; (0.2, 0.8) with k=3 stops exactly on a unanimous round.",
    )
    agreement_floor: bool = Field(
        True,
        description="agreement: an answered model's combined score never drops below its "
        "mapped prior (agreement only adds evidence), so a round that does not agree keeps "
        "its models; False: the weighted sum alone, and a dissenting or unmatched answer's "
        "model can be replaced by an unanswered one.",
    )
    answer_model: tuple[float, float, float, float] | None = Field(
        None,
        description="agreement: logistic coefficients (intercept, logit prior, agreement "
        "share, log answer tokens) fitted on training queries "
        "(moagraph.route.evaluator.fit_answer_model); the answered model's combined score is "
        "then its predicted P(correct). None: agreement_weights.",
    )
    map_prior: bool = Field(True, description="Power-map the scorer prior (official map_scores).")
    w_round1: tuple[float, float] = (0.9, 0.1)
    w_round2: tuple[float, float, float, float] = (0.25, 0.15, 0.15, 0.45)
    w_round2_new: tuple[float, float] = (0.9, 0.1)
    w_round2_dropped: tuple[float, float, float] = (0.7, 0.1, 0.2)
    self_default_r1: float = Field(
        0.8, description="Round-1 self-score when unparsed or 0 (official)."
    )
    self_default_r2: float = Field(
        0.5, description="Round-2 self-score when unparsed or 0 (official)."
    )
    self_default_dropped: float = Field(
        0.3, description="Dropped model's self-score default (official)."
    )
    self_scores_per_round: bool = Field(
        True, description="self1/self2 from their own rounds (see module doc)."
    )
    stop_threshold: float = Field(
        0.76, description="Early stop: best combined score > this (official)."
    )
    margin: float = Field(
        0.0, ge=0, description="Near-tie band (0 = exact ties by price, official)."
    )
    cost_key: Literal["price", "flops", "dollars"] = Field(
        "price",
        description="Tie-break: price (official: output then input price), flops or call dollars.",
    )
    aggregator: str | None = Field(None, description="Fixed aggregator; None = strongest by prior.")
    aggregate: bool = Field(True, description="Always fuse with the aggregator (official).")
    aggregator_prompt: Literal["official", "moa"] = Field(
        "official",
        description="official: AGGREGATOR_PROMPT + numbered answers in the system prompt; "
        "moa: the MoA prompt dense MoA uses (answers in the user turn, ends asking for the "
        "final answer in the question's format).",
    )
    max_tokens: int = Field(1024, ge=1)
    judge_max_tokens: int = Field(8, ge=1)
    temperature: float = Field(0.0, ge=0, description="official routemoa.json: 0")
    stop: tuple[str, ...] = ()
    json_schema: dict[str, Any] | None = Field(
        None, description="Constrain every reply to this JSON schema (None: free decoding)."
    )
    max_flops_norm: float | None = Field(
        None, gt=0, description="Hard budget: normalised FLOPs per query."
    )
    max_dollars: float | None = Field(None, gt=0, description="Hard budget: dollars per query.")


def official_rank(
    scores: dict[str, float],
    pool: Pool,
    margin: float = 0.0,
    cost_key: str = "price",
    avg_in: float = 200,
    avg_out: float = 300,
) -> list[str]:
    """Best first; ties (exact, or within ``margin``) by cost: price = (output, input price)
    as officially, then FLOPs, then name."""

    def cost(m: str) -> tuple[float, ...]:
        spec = pool[m]
        fl = node_flops(spec, 0, avg_in, avg_out)
        if cost_key == "price":
            return (spec.price_out, spec.price_in, fl)
        if cost_key == "dollars":
            return (call_dollars(spec, avg_in, avg_out), fl)
        return (fl,)

    remaining = sorted(scores, key=lambda m: (-scores[m], cost(m), m))
    if margin <= 0:
        return remaining
    out: list[str] = []
    while remaining:
        best = scores[remaining[0]]
        pick = min((m for m in remaining if scores[m] >= best - margin), key=lambda m: (cost(m), m))
        out.append(pick)
        remaining.remove(pick)
    return out


@dataclass
class RoundsState:
    """The official combined-score bookkeeping, shared by the live policy and the replay
    simulation (:mod:`moagraph.route.gt_eval`), so both make the same decisions."""

    config: RouteMoAConfig
    prior: dict[str, float]
    order: list[str]  # initial ranking: tie order for later rounds
    mapped: dict[str, float] = field(init=False)
    combined: dict[str, float] = field(init=False)
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mapped = map_scores(self.prior) if self.config.map_prior else dict(self.prior)
        self.combined = dict(self.mapped)

    def top(self) -> list[str]:
        pos = {m: i for i, m in enumerate(self.order)}
        return sorted(self.combined, key=lambda m: (-self.combined[m], pos.get(m, 0)))[
            : self.config.k
        ]

    def after_round1(self, models: list[str], self1: dict[str, float | None]) -> dict[str, float]:
        c = self.config
        w_r, w_s = c.w_round1
        upd = {m: w_r * self.mapped[m] + w_s * (self1.get(m) or c.self_default_r1) for m in models}
        self.combined.update(upd)
        self.history.append({"round": 1, "self": dict(self1), "combined": dict(upd)})
        return upd

    def after_round2(
        self,
        r1: list[str],
        r2: list[str],
        self1: dict[str, float | None],
        self2: dict[str, float | None],
        cross: dict[str, float | None],
    ) -> dict[str, float]:
        c = self.config
        upd: dict[str, float] = {}
        for m in r2:
            s2 = self2.get(m) or c.self_default_r2
            if m in r1:
                s1 = (
                    self1.get(m) if c.self_scores_per_round else self2.get(m)
                ) or c.self_default_r2
                x = cross.get(m)
                if x is None:
                    upd[m] = self.combined[m]  # official: cross unreadable -> not updated
                else:
                    a, b, g, h = c.w_round2
                    upd[m] = a * self.mapped[m] + b * s1 + g * s2 + h * x
            else:
                a2, b2 = c.w_round2_new
                upd[m] = a2 * self.mapped[m] + b2 * s2
        for m in r1:
            if m in r2:
                continue
            x = cross.get(m)
            if x is None:
                continue
            a3, b3, g3 = c.w_round2_dropped
            upd[m] = a3 * self.mapped[m] + b3 * (self1.get(m) or c.self_default_dropped) + g3 * x
        self.combined.update(upd)
        self.history.append(
            {"round": 2, "self": dict(self2), "cross": dict(cross), "combined": dict(upd)}
        )
        return upd

    def after_agreement(
        self,
        rnd: int,
        models: list[str],
        agreement: dict[str, float],
        tokens: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """``assessment="agreement"``: the answered models' combined scores from the
        agreement between this round's answers (and, with ``answer_model``, the answer
        lengths); every other model keeps its score."""
        c = self.config
        upd: dict[str, float] = {}
        for m in models:
            if c.answer_model is not None:
                f = answer_features(self.prior[m], agreement.get(m, 0.0), (tokens or {}).get(m, 0))
                upd[m] = answer_probability(c.answer_model, f)
            else:
                w_m, w_a = c.agreement_weights
                upd[m] = w_m * self.mapped[m] + w_a * agreement.get(m, 0.0)
                if c.agreement_floor:
                    upd[m] = max(upd[m], self.mapped[m])
        self.combined.update(upd)
        self.history.append({"round": rnd, "agreement": dict(agreement), "combined": dict(upd)})
        return upd

    def stops(self, upd: dict[str, float]) -> tuple[bool, str]:
        if not upd:
            return False, "no combined scores"
        best = max(upd, key=lambda m: upd[m])
        stop = upd[best] > self.config.stop_threshold
        return (
            stop,
            f"best combined {upd[best]:.3f} ({best}) {'>' if stop else '<='} {self.config.stop_threshold}",
        )


def replay_rounds(
    config: RouteMoAConfig,
    prior: dict[str, float],
    order: list[str],
    answer_of: Callable[[str], Any] | None = None,
    equivalent: Callable[[Any, Any], bool] | None = None,
    tokens_of: Callable[[str], float] | None = None,
) -> tuple[list[list[str]], str]:
    """The rounds RouteMoA runs on a replay pool. Returns (models per round, why it stopped).

    Without ``answer_of`` (or with an assessment other than ``"agreement"``) no self/peer
    score can be read, so every assessment takes the official fallback and the rounds
    follow from the scorer alone. With ``assessment="agreement"`` and ``answer_of``
    (model -> its recorded extracted answer; a later round reuses it) and ``equivalent``
    (the task's), each round is assessed by agreement between its answers."""
    st = RoundsState(config, prior, order)
    evidence = config.assessment == "agreement" and answer_of is not None
    rounds = [order[: config.k]]
    for rnd in (1, 2):
        if evidence:
            assert answer_of is not None
            cur = rounds[-1]
            agree = agreement_scores({m: answer_of(m) for m in cur}, equivalent or _same)
            toks = {m: tokens_of(m) for m in cur} if tokens_of is not None else None
            upd = st.after_agreement(rnd, cur, agree, toks)
        elif rnd == 1:
            upd = st.after_round1(rounds[0], {})
        else:
            upd = st.after_round2(rounds[0], rounds[1], {}, {}, {})
        stop, why = st.stops(upd)
        if stop or config.rounds == rnd:
            return rounds, (f"early stop after round {rnd}: {why}" if stop else f"rounds={rnd}")
        rounds.append(st.top())
    return rounds, "3 rounds"


def _same(a: Any, b: Any) -> bool:
    return bool(a == b)


def is_replay_pool(pool: Pool) -> bool:
    """Every model of the pool replays recordings (no live model could score itself)."""
    return bool(pool.models) and all(m.backend == "replay" for m in pool.models)


def _extract(task: Task, text: str | None) -> Any:
    try:
        return task.extract(text or "")
    except Exception:
        return None


@dataclass
class _RouteMoAState(LayerState):
    question: str = ""
    st: RoundsState | None = None
    ranked: list[str] = field(default_factory=list)
    selfs: dict[int, dict[str, float | None]] = field(default_factory=dict)
    r1_models: list[str] = field(default_factory=list)

    @property
    def rounds_state(self) -> RoundsState:
        assert self.st is not None
        return self.st


class RouteMoA(LayeredRouter[_RouteMoAState]):
    """The RouteMoA policy (implements :class:`moagraph.route.base.Router`)."""

    kind = "routemoa"
    node_prefix = "R"
    layer_word = "round"

    def __init__(
        self,
        scorer: Scorer,
        runtime: PoolRuntime,
        config: RouteMoAConfig | None = None,
        name: str = "routemoa",
        **overrides: Any,
    ) -> None:
        scorer.check_pool(runtime.pool)
        base = config or RouteMoAConfig()
        named = "assessment" in overrides or "assessment" in base.model_fields_set
        self.assessment_note = "named" if named else "official default"
        if not named and is_replay_pool(runtime.pool):
            # a replay pool records no self/peer score: assess by answer agreement instead
            overrides = {**overrides, "assessment": "agreement"}
            self.assessment_note = "replay-pool default: no self/peer scores are recorded"
        # Validate the merged settings and keep the *validated* model (model_copy skips validation).
        c = RouteMoAConfig.model_validate({**base.model_dump(), **overrides})
        if c.aggregator is not None and c.aggregator not in runtime.pool:
            raise RouterError(
                f"aggregator {c.aggregator!r} is not in pool {runtime.pool.name!r}; "
                f"models: {', '.join(runtime.pool.names)}"
            )
        super().__init__(
            runtime,
            params=SamplingParams(
                temperature=c.temperature,
                max_tokens=c.max_tokens,
                stop=tuple(c.stop),
                json_schema=c.json_schema,
            ),
            budget=Budget(max_flops_norm=c.max_flops_norm, max_dollars=c.max_dollars),
            name=name,
        )
        self.scorer = scorer
        self.config = c

    @property
    def assessment_label(self) -> str:
        """The assessment in use and why, as evaluations print it."""
        extra = " + answer features" if self.config.answer_model is not None else ""
        return f"assessment={self.config.assessment}{extra} ({self.assessment_note})"

    # --- decisions without LLM calls ----------------------------------------
    def score(self, text: str) -> tuple[dict[str, float], dict[str, float]]:
        """Scorer prior per model + timings (encoder ms, head ms)."""
        t0 = time.perf_counter()
        x = self.scorer.encoder.encode([text])
        t1 = time.perf_counter()
        row = self.scorer.predict_embedded(x)[0]
        t2 = time.perf_counter()
        scores = {m: float(v) for m, v in zip(self.scorer.models, row) if m in self.runtime.pool}
        return scores, {"encode_ms": (t1 - t0) * 1e3, "head_ms": (t2 - t1) * 1e3}

    def rank(self, scores: dict[str, float], task: Task | None = None) -> list[str]:
        a, b = (task.avg_input_tokens, task.avg_output_tokens) if task else (200, 300)
        return official_rank(
            scores, self.runtime.pool, self.config.margin, self.config.cost_key, a, b
        )

    def aggregator_model(self) -> str:
        """The fixed aggregator: configured, else the strongest model by training prior."""
        if self.config.aggregator:
            return self.config.aggregator
        prior = {m: v for m, v in self.scorer.prior_scores().items() if m in self.runtime.pool}
        return official_rank(prior, self.runtime.pool, 0.0, "price")[0]

    def plan(self, example: Example, task: Task | None = None) -> RoutePlan:
        scores, timing = self.score(example.question)
        t0 = time.perf_counter()
        ranked = self.rank(scores, task)
        rounds, why = replay_rounds(self.config, scores, ranked)
        timing["policy_ms"] = (time.perf_counter() - t0) * 1e3
        c = self.config
        return RoutePlan(
            layers=rounds,
            aggregator=self.aggregator_model() if c.aggregate else None,
            ranked=ranked[: c.k],
            scores=scores,
            judges_per_layer=c.k if c.assessment == "judge" else 0,
            judge_max_tokens=c.judge_max_tokens,
            meta={
                "timing": timing,
                "stop": why,
                "note": "rounds as decided with no readable self/peer scores (official fallbacks)"
                if c.assessment != "agreement"
                else "rounds before any answer is seen: agreement decides them at answer time",
                "assessment": self.assessment_label,
            },
        )

    # --- the per-round choice (the layer loop is LayeredRouter.answer) -------
    def new_state(self, run: QueryRun, example: Example, task: Task) -> _RouteMoAState:
        c = self.config
        question = task.format_question(example)
        scores, timing = self.score(question)
        t0 = time.perf_counter()
        ranked = self.rank(scores, task)
        timing["policy_ms"] = (time.perf_counter() - t0) * 1e3
        st = RoundsState(c, scores, ranked)
        meta: dict[str, Any] = {
            "router": "routemoa",
            "config": c.model_dump(),
            "prior": scores,
            "mapped_prior": st.mapped,
            "ranking": ranked,
            "timing": timing,
            "assessment": self.assessment_label,
            "rounds": [],
        }
        return _RouteMoAState(
            run, example, task, meta=meta, question=question, st=st, ranked=ranked
        )

    async def choose_layer(self, state: _RouteMoAState) -> LayerChoice | None:
        """Round 1 = the top ``k`` by prior; after a round, its assessment (inline scores
        or judge calls), the combined scores and the stop rule; then the top ``k``."""
        c, st, task, example = self.config, state.rounds_state, state.task, state.example
        rnd = state.layer  # rounds answered so far
        if rnd == 0:
            models = state.ranked[: c.k]
        else:
            got = state.last
            info = state.meta["rounds"][-1]
            if rnd == 1:
                state.r1_models = list(got)
            if rnd == c.rounds or rnd == 3:
                state.stop_reason = f"rounds={c.rounds} reached"
                return None
            peers: dict[str, list[float | None]] = {}
            if c.assessment == "inline":
                parsed = {m: parse_assessment(r.output) for m, r in got.items()}
                state.selfs[rnd] = {m: p[0] for m, p in parsed.items()}
                peers = {m: p[1] for m, p in parsed.items()}
            elif c.assessment == "judge":
                state.selfs[rnd], peers = await self._judge(state, rnd)
            else:
                state.selfs[rnd] = {}
            info["self_scores"] = state.selfs[rnd]
            if c.assessment == "agreement":
                answers = {m: _extract(task, r.output) for m, r in got.items()}
                agree = agreement_scores(answers, task.equivalent)
                toks = {
                    m: float(r.completion_tokens or len(r.output or "") / 4) for m, r in got.items()
                }
                info["answers"] = {m: (None if a is None else str(a)) for m, a in answers.items()}
                info["agreement"] = agree
                upd = st.after_agreement(rnd, list(got), agree, toks)
            elif rnd == 1:
                upd = st.after_round1(list(got), state.selfs[1])
            else:
                cross: dict[str, float | None] = {}
                selfs2 = state.selfs[2]
                readable = {m: s for m, s in selfs2.items() if s is not None and peers.get(m)}
                if readable:
                    best = max(readable, key=lambda m: readable[m] or 0.0)
                    row = peers[best]
                    cross = {
                        m: (row[i] if i < len(row) else None) for i, m in enumerate(state.r1_models)
                    }
                    info["cross_from"] = best
                info["cross_scores"] = cross
                upd = st.after_round2(
                    state.r1_models, list(got), state.selfs.get(1, {}), selfs2, cross
                )
            info["combined"] = upd
            stop, why = st.stops(upd)
            info["stop_check"] = why
            if stop:
                state.stop_reason = f"early stop after round {rnd}: {why}"
                return None
            models = st.top()
        nxt = rnd + 1
        prev = [r.output for r in state.last.values()]
        inline = c.assessment == "inline" and nxt < 3
        if nxt == 1:
            msgs = with_system(task, example, ROUND1_PROMPT) if inline else task.prompt(example)
        elif nxt == 2 and inline:
            msgs = with_system(task, example, round2_prompt(prev))
        else:
            msgs = with_system(task, example, round3_prompt(prev))
        info = {"round": nxt, "models": models}
        state.meta["rounds"].append(info)
        inputs = [r.node_id for r in state.last.values()]
        return LayerChoice(models, msgs, inputs=inputs, info=info)

    def choose_final(self, state: _RouteMoAState) -> FinalChoice:
        """The fixed aggregator over the last round's answers (the top answer by combined
        score when it is off, skipped or fails)."""
        c, st = self.config, state.rounds_state
        last = state.last
        final_models = list(last)
        order = sorted(final_models, key=lambda m: -st.combined.get(m, 0.0))
        state.meta["combined"] = st.combined
        state.meta["stop_reason"] = state.stop_reason
        if not order:
            return FinalChoice("", "none")
        final = FinalChoice(last[order[0]].output, f"top answer ({order[0]})")
        if c.aggregate:
            agg = self.aggregator_model()
            refs = [last[m].output for m in final_models]
            final.aggregator = agg
            final.messages = (
                aggregator_messages(state.task, state.example, refs)
                if c.aggregator_prompt == "moa"
                else with_system(state.task, state.example, AGGREGATOR_PROMPT, refs)
            )
            final.inputs = [last[m].node_id for m in final_models]
            final.aggregated_label = f"aggregator ({agg}) over round {state.layer}: {final_models}"
            state.meta["aggregator"] = agg
        return final

    async def _judge(
        self, state: _RouteMoAState, rnd: int
    ) -> tuple[dict[str, float | None], dict[str, list[float | None]]]:
        """Option ``assessment='judge'``: separate calls, 1-10 scale normalised to [0, 1].

        Each answering model judges its own answer (self); in round 2 the model with the
        best self-score judges every round-1 answer (cross), as the inline peer scores do."""
        c, question = self.config, state.question
        cur = state.layers[rnd - 1]
        calls = [
            Call(
                f"R{rnd}:judge:{m}->{m}",
                "judge",
                m,
                judge_messages(question, r.output),
                inputs=[r.node_id],
                max_tokens=c.judge_max_tokens,
            )
            for m, r in cur.items()
        ]
        res = await state.run.run_calls(calls)
        selfs = {
            m: (normalised(parse_score(r.output)) if r is not None and r.error is None else None)
            for m, r in zip(cur, res)
        }
        peers: dict[str, list[float | None]] = {}
        if rnd == 2:
            ok = {m: s for m, s in selfs.items() if s is not None}
            if ok:
                best = max(ok, key=lambda m: ok[m] or 0.0)
                r1 = state.layers[0]
                calls = [
                    Call(
                        f"R2:judge:{best}->R1:{m}",
                        "judge",
                        best,
                        judge_messages(question, r1[m].output),
                        inputs=[r1[m].node_id],
                        max_tokens=c.judge_max_tokens,
                    )
                    for m in state.r1_models
                ]
                res = await state.run.run_calls(calls)
                peers[best] = [
                    normalised(parse_score(r.output)) if r is not None and r.error is None else None
                    for r in res
                ]
        return selfs, peers
