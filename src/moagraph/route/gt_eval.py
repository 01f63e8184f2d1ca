"""Routing policies measured on ground-truth replay pools (0/1 labels), offline.

What the recordings hold: one answer per (model, question) with its 0/1 grade
and token counts. What they do not hold: refinement-round answers, self/peer
scores, judge/moderator or aggregator outputs. So, stated for every policy:

- **Final answer** without a live aggregator, two clearly labelled models:
  ``vote`` = majority of the extracted answers of the last round's models
  (clustered with the task's ``equivalent``; ties go to the cluster holding the
  higher-ranked answer), graded with the task grader against the pool's
  reference; ``select`` = the recorded label of the answer the policy ranks first.
  A model's answer in a later round is its recorded (round-1) answer.
- **RouteMoA's rounds**: no self/peer score can be read from a recording. With
  ``assessment="agreement"`` (the default on replay pools) each round is assessed by
  the agreement between its models' recorded extracted answers (task ``equivalent``,
  clustered as the graph vote does) and the stop rule sees that evidence; with the
  official ``"inline"`` (or ``"judge"``/``"none"``) every assessment takes the official
  fallback (round 1 self 0.8, round 2 0.5, cross unreadable) and the rounds and early
  stop follow from the scorer's probabilities alone
  (:func:`moagraph.route.routemoa.replay_rounds`).
- **One grader**: every policy, single models included, is graded with the task's
  grader on the extracted answer (``GroundTruth.correct``), not with the recorded label.
- **SMoA's moderator**: picks the ``k`` responses of the models with the best
  training prior and ends the debate when those responses agree (the official
  prompt asks it to judge consistency); a label-free stand-in, stated.
- **Cost** (FLOPs cost model and list prices): every call a policy makes is
  counted, including the aggregator (it always runs), role generation and
  moderator calls for SMoA and judge calls for ``assessment="judge"``. Round 1
  uses recorded lengths; a later round reads the query plus the previous
  round's answers (recorded lengths) plus its template and writes the model's
  recorded length; the aggregator writes its own recorded length for the
  query. Template sizes are the official prompts at ~4 characters a token.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moagraph.models.cost import call_dollars, call_flops, unit_flops
from moagraph.route.base import Router
from moagraph.route.baselines import DenseMoA
from moagraph.route.gt import GroundTruth, _task
from moagraph.route.routemoa import (
    AGGREGATOR_PROMPT,
    ROUND1_PROMPT,
    RouteMoA,
    replay_rounds,
    round2_prompt,
)
from moagraph.tasks.base import Example

ROUND1_TOKENS = len(ROUND1_PROMPT) // 4
ROUND2_TOKENS = len(round2_prompt([])) // 4
AGG_TOKENS = len(AGGREGATOR_PROMPT) // 4
REFINE_TOKENS = 60  # graph/prompts.py refine template, approx.
SELF_SCORE_OUT = 12  # '"self_score": 0.9' + JSON wrapper
PEER_SCORE_OUT = 6  # per peer score
JUDGE_PROMPT_TOKENS = 60  # route/judges.py template
SMOA_MODERATOR_TOKENS = 170
SMOA_ROLE_PROMPT_TOKENS = 60
SMOA_ROLE_OUT_PER_MODEL = 60

FINAL_ANSWER_NOTE = (
    "vote = majority of the extracted answers of the last round's models; select = the answer the "
    "policy ranks first; both graded by the task grader against the reference; later rounds reuse "
    "recorded answers; "
    "aggregator/moderator outputs are costed but not measured"
)


@dataclass
class GTResult:
    policy: str
    n: int
    vote: np.ndarray  # per query 0/1
    select: np.ndarray
    flops: np.ndarray  # per query
    dollars: np.ndarray
    calls: np.ndarray
    rounds: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> dict[str, float]:
        return {
            "vote": float(self.vote.mean()),
            "select": float(self.select.mean()),
            "flops": float(self.flops.mean()),
            "dollars": float(self.dollars.mean()),
            "calls": float(self.calls.mean()),
            "rounds": float(self.rounds.mean()),
        }


class _Cost:
    def __init__(self, gt: GroundTruth, qi: int) -> None:
        self.gt, self.qi = gt, qi
        self.flops = self.dollars = 0.0
        self.calls = 0
        row = (
            gt.table.out_tokens[qi]
            if gt.table.out_tokens is not None
            else np.full(len(gt.models), 300.0)
        )
        mean_out = (
            float(np.nanmean(gt.table.out_tokens)) if gt.table.out_tokens is not None else 300.0
        )
        self.out = {m: (float(v) if np.isfinite(v) else mean_out) for m, v in zip(gt.models, row)}
        pin = gt.prompt_tokens[qi]
        base = float(np.nanmean(pin)) if np.isfinite(pin).any() else 200.0
        self.prompt = {m: (float(v) if np.isfinite(v) else base) for m, v in zip(gt.models, pin)}

    def add(self, model: str, n_in: float, n_out: float) -> None:
        spec = self.gt.pool[model]
        self.flops += call_flops(spec, n_in, n_out)
        self.dollars += call_dollars(spec, n_in, n_out)
        self.calls += 1


def vote_correct(gt: GroundTruth, qi: int, models: list[str]) -> bool:
    """Majority over the models' extracted answers (task ``equivalent``), graded."""
    tk = _task(gt.task_name)
    col = {m: j for j, m in enumerate(gt.models)}
    clusters: list[list[Any]] = []  # [rep, count, first position]
    for pos, m in enumerate(models):
        a = gt.answers[qi][col[m]]
        if a is None:
            continue
        for c in clusters:
            if c[0] == a or _eq(tk, c[0], a):
                c[1] += 1
                break
        else:
            clusters.append([a, 1, pos])
    if not clusters:
        return False
    best = max(clusters, key=lambda c: (c[1], -c[2]))
    return gt.correct(qi, best[0])


_EQ: dict[tuple[str, str], bool] = {}


def _eq(tk: Any, a: Any, b: Any) -> bool:
    key = (repr(a), repr(b))
    hit = _EQ.get(key)
    if hit is None:
        try:
            hit = bool(tk.equivalent(a, b))
        except Exception:
            hit = False
        _EQ[key] = hit
    return hit


def _label(gt: GroundTruth, qi: int, model: str) -> float:
    """The model's recorded answer on query ``qi`` graded by the task grader (the grader
    every policy is graded with; the recorded label agrees on > 95% of records)."""
    return float(gt.correct(qi, gt.answers[qi][gt.models.index(model)]))


def routemoa_replay_layers(pol: RouteMoA, gt: GroundTruth, qi: int) -> tuple[list[list[str]], str]:
    """RouteMoA's rounds on query ``qi`` of a ground-truth pool, with answer evidence when its
    assessment is ``"agreement"`` (the recorded extracted answers; later rounds reuse them)."""
    scores, _ = pol.score(gt.table.texts[qi])
    ranked = pol.rank(scores)
    if pol.config.assessment != "agreement":
        return replay_rounds(pol.config, scores, ranked)
    tk = _task(gt.task_name)
    col = {m: j for j, m in enumerate(gt.models)}
    out = gt.table.out_tokens
    return replay_rounds(
        pol.config,
        scores,
        ranked,
        answer_of=lambda m: gt.answers[qi][col[m]],
        equivalent=lambda a, b: _eq(tk, a, b),
        tokens_of=lambda m: (
            float(out[qi, col[m]]) if out is not None and np.isfinite(out[qi, col[m]]) else 0.0
        ),
    )


def simulate(pol: Router, gt: GroundTruth, qi: int) -> tuple[list[str], str, _Cost, int]:
    """(last-round models, selected model, cost, rounds) of one policy on query ``qi``."""
    ex = Example(id=gt.table.query_ids[qi], question=gt.table.texts[qi])
    cost = _Cost(gt, qi)
    kind = getattr(pol, "kind", pol.name)
    if kind == "smoa":
        return _simulate_smoa(pol, gt, qi, cost)
    plan = pol.plan(ex)
    layers = plan.layers
    if isinstance(pol, RouteMoA) and pol.config.assessment == "agreement":
        layers = routemoa_replay_layers(pol, gt, qi)[0]
    jmax = pol.config.judge_max_tokens if isinstance(pol, RouteMoA) else 8
    inline = isinstance(pol, RouteMoA) and pol.config.assessment == "inline"
    judge = isinstance(pol, RouteMoA) and pol.config.assessment == "judge"
    prev: list[str] = []
    for r, models in enumerate(layers, 1):
        refs = sum(cost.out[m] for m in prev)
        for m in models:
            if r == 1:
                n_in = cost.prompt[m] + (ROUND1_TOKENS if inline else 0)
                n_out = cost.out[m] + (SELF_SCORE_OUT if inline else 0)
            else:
                tmpl = ROUND2_TOKENS if (inline and r == 2) else REFINE_TOKENS
                n_in = cost.prompt[m] + tmpl + refs
                n_out = cost.out[m] + (
                    (SELF_SCORE_OUT + PEER_SCORE_OUT * len(prev)) if inline and r == 2 else 0
                )
            cost.add(m, n_in, n_out)
        if judge and r < 3:
            for m in models:  # self-judgement calls
                cost.add(m, cost.prompt[m] + cost.out[m] + JUDGE_PROMPT_TOKENS, jmax)
            if r == 2:  # best model judges every round-1 answer
                for a in layers[0]:
                    cost.add(
                        models[0], cost.prompt[models[0]] + cost.out[a] + JUDGE_PROMPT_TOKENS, jmax
                    )
        prev = list(models)
    if plan.aggregator is not None and (len(prev) > 1 or isinstance(pol, RouteMoA)):
        agg = plan.aggregator
        cost.add(agg, cost.prompt[agg] + AGG_TOKENS + sum(cost.out[m] for m in prev), cost.out[agg])
    return prev, prev[0], cost, len(layers)


def _simulate_smoa(
    pol: Any, gt: GroundTruth, qi: int, cost: _Cost
) -> tuple[list[str], str, _Cost, int]:
    models = list(gt.models)
    prior = pol.by_prior()
    agg = pol.agg
    tk = _task(gt.task_name)
    col = {m: j for j, m in enumerate(gt.models)}
    if pol.roles:
        cost.add(
            agg, cost.prompt[agg] + SMOA_ROLE_PROMPT_TOKENS, SMOA_ROLE_OUT_PER_MODEL * len(models)
        )
    chosen: list[str] = []
    rounds = 0
    for r in range(1, pol.layers + 1):
        rounds = r
        refs = sum(cost.out[m] for m in chosen)
        for m in models:
            role = SMOA_ROLE_OUT_PER_MODEL if pol.roles else 0
            cost.add(m, cost.prompt[m] + role + (REFINE_TOKENS + refs if r > 1 else 0), cost.out[m])
        cost.add(
            agg, SMOA_MODERATOR_TOKENS + cost.prompt[agg] + sum(cost.out[m] for m in models), 30
        )
        chosen = [m for m in prior if m in models][: pol.k]
        ans = [gt.answers[qi][col[m]] for m in chosen]
        agree = all(a is not None for a in ans) and all(
            _eq(tk, ans[0], a) or ans[0] == a for a in ans[1:]
        )
        if agree:
            break
    if pol.aggregate:
        cost.add(
            agg, cost.prompt[agg] + AGG_TOKENS + sum(cost.out[m] for m in chosen), cost.out[agg]
        )
    return chosen, chosen[0], cost, rounds


def evaluate_gt(
    policies: list[Router], gt: GroundTruth, rows: np.ndarray, progress: Any = None
) -> list[GTResult]:
    """Every policy on every query of ``rows`` (see the module doc for what is modelled)."""
    out = []
    for pol in policies:
        v, s, f, d, c, r = [], [], [], [], [], []
        for qi in rows:
            last, sel, cost, n_rounds = simulate(pol, gt, int(qi))
            v.append(float(vote_correct(gt, int(qi), last)))
            s.append(_label(gt, int(qi), sel))
            f.append(cost.flops)
            d.append(cost.dollars)
            c.append(cost.calls)
            r.append(n_rounds)
            if progress is not None:
                progress()
        out.append(
            GTResult(
                pol.name,
                len(rows),
                np.asarray(v),
                np.asarray(s),
                np.asarray(f),
                np.asarray(d),
                np.asarray(c, float),
                np.asarray(r, float),
            )
        )
    return out


def single_model_results(gt: GroundTruth, rows: np.ndarray) -> list[GTResult]:
    """Every model alone (one recorded call): accuracy (task grader) and cost per query."""
    res = []
    for j, m in enumerate(gt.models):
        lab = np.asarray([float(gt.correct(int(qi), gt.answers[int(qi)][j])) for qi in rows])
        fl, dl = [], []
        for qi in rows:
            cst = _Cost(gt, int(qi))
            cst.add(m, cst.prompt[m], cst.out[m])
            fl.append(cst.flops)
            dl.append(cst.dollars)
        res.append(
            GTResult(
                m,
                len(rows),
                lab,
                lab,
                np.asarray(fl),
                np.asarray(dl),
                np.ones(len(rows)),
                np.ones(len(rows)),
            )
        )
    return res


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of a - b over queries with a paired-bootstrap 95% CI."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_boot, len(diff)))
    means = diff[idx].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def bootstrap_ci(a: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    a = np.asarray(a, float)
    means = a[rng.integers(0, len(a), size=(n_boot, len(a)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def unit(gt: GroundTruth) -> float:
    a = float(np.nanmean(gt.prompt_tokens))
    b = float(np.nanmean(gt.table.out_tokens)) if gt.table.out_tokens is not None else 300.0
    return unit_flops(gt.pool.models, a, b)


def random_seed_for(qid: str, seed: int) -> int:
    return int(hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()[:8], 16)


def _live_setup(
    pool_name: str,
    aggregator: str,
    seed: int,
    cache: str | None,
    overrides: dict[str, Any] | None,
    models: list[str] | None = None,
    threads: int | None = None,
) -> tuple[GroundTruth, dict[str, Any], Any, Any]:
    """What every live-aggregator run shares: the ground truth (restricted to ``models``),
    its split, a hashing/logistic scorer fitted on the train ids, and a runtime over the
    recorded models plus the local aggregator (``threads`` CPU threads when given)."""
    from moagraph.models.cache import CallCache
    from moagraph.models.runtime import PoolRuntime
    from moagraph.pools.combine import extend_pool
    from moagraph.route.encoders import make_encoder
    from moagraph.route.gt import load_ground_truth
    from moagraph.route.scorer import Scorer

    gt = load_ground_truth(pool_name)
    if models is not None:
        gt = gt.subset_models(models)
    sp = gt.split(seed)
    tr = gt.table.subset(gt.rows(sp["train"]))
    scorer = Scorer(make_encoder("hashing"), gt.models, head="logistic", alpha=10.0, seed=seed)
    scorer.fit(tr.texts, tr.labels)  # no pool fingerprint: the hybrid pool adds the aggregator
    pool = extend_pool(pool_name, ["local"])
    if aggregator not in pool:
        raise ValueError(
            f"aggregator {aggregator!r} is not in the hybrid pool; models: {', '.join(pool.names)}"
        )
    keep = [
        m.model_copy(update={"n_threads": threads}) if m.name == aggregator and threads else m
        for m in pool.models
        if m.name in set(gt.models) or m.name == aggregator
    ]
    pool = pool.model_copy(update={"models": keep})
    runtime = PoolRuntime(pool, cache=CallCache(cache) if cache else None, overrides=overrides)
    return gt, sp, scorer, runtime


async def live_routemoa(
    n: int,
    seed: int = 0,
    cache: str | None = None,
    pool_name: str = "zeroeval-math",
    aggregator: str = "qwen-coder-1.5b",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """RouteMoA with a **live** aggregator on ``n`` test queries of a ground-truth pool.

    The pool's recorded models answer round 1 from their recordings (query-bound calls);
    later rounds would need live refinements of recorded models, so this runs one round
    (``rounds=1``); the aggregator (the local pool's ``qwen-coder-1.5b`` by default, or
    ``overrides[aggregator]``, e.g. a scripted backend in tests) fuses the answers live.
    Every call goes through the SQLite call cache ``cache``, so a rerun makes no call.
    Returns per-query graded accuracy of the aggregated answer next to the vote/select
    proxies on the same queries.
    """
    gt, sp, scorer, runtime = _live_setup(pool_name, aggregator, seed, cache, overrides)
    router = RouteMoA(
        scorer,
        runtime,
        name="routemoa (live aggregator)",
        rounds=1,
        aggregator=aggregator,
        max_tokens=512,
    )
    task = _task(gt.task_name)
    rows = gt.rows(sp["test"])[:n]
    out: list[dict[str, Any]] = []
    for qi in rows:
        qi = int(qi)
        ex = gt.example(qi)
        trace = await router.answer(ex, task)
        last = trace.meta["rounds"][-1]["answered"] if trace.meta.get("rounds") else []
        out.append(
            {
                "query_id": ex.id,
                "aggregated": float(task.grade(trace.output, ex)) if trace.output else 0.0,
                "vote": float(vote_correct(gt, qi, last)) if last else 0.0,
                "select": _label(gt, qi, last[0]) if last else 0.0,
                "flops": trace.flops,
                "dollars": trace.dollars,
                "final": trace.meta.get("final"),
                "cached_calls": sum(1 for nd in trace.nodes if nd.cached),
            }
        )
    agg = {
        k: float(np.mean([r[k] for r in out])) if out else float("nan")
        for k in ("aggregated", "vote", "select", "flops", "dollars")
    }
    return {
        "n": len(out),
        "pool": pool_name,
        "aggregator": aggregator,
        "mean": agg,
        "per_query": out,
    }


class _RecordedDense(DenseMoA):
    """Dense MoA over the recorded models only (the hybrid pool also holds the aggregator)."""

    recorded: list[str] | None = None

    def choose(self, example: Example) -> tuple[list[str], str | None]:
        ranked, agg = super().choose(example)
        if self.recorded is not None:
            ranked = [m for m in ranked if m in set(self.recorded)]
        return ranked, agg


def _agg_node(trace: Any) -> Any:
    return next((nd for nd in trace.nodes if nd.role == "aggregator"), None)


async def live_compare(
    n: int,
    seed: int = 0,
    cache: str | None = None,
    pool_name: str = "zeroeval-math",
    aggregator: str = "qwen-coder-1.5b",
    overrides: dict[str, Any] | None = None,
    models: list[str] | None = None,
    max_tokens: int = 512,
    dense_inputs: int | None = 6,
    policies: tuple[str, ...] = ("routemoa", "routemoa-moa", "dense"),
    progress: Any = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """RouteMoA and dense MoA with a **live** aggregator on the first ``n`` test queries.

    Both read the pool's recorded round-1 answers (query-bound replay calls, shared
    through the cache) and run one round (later rounds would need live refinements of
    recorded models); the aggregator (``qwen-coder-1.5b`` of the bundled ``local``
    pool by default, or ``overrides[aggregator]``) fuses them live with ``max_tokens``.

    - ``routemoa``: the scorer's top 3, the official aggregator prompt (as
      :func:`live_routemoa`, same cache keys).
    - ``routemoa-moa``: the same answers, dense MoA's aggregator prompt (so the two
      differ only in which answers the aggregator reads).
    - ``dense``: every pool model answers (all counted in the cost); the aggregator
      reads the ``dense_inputs`` answers ranked first by training prior (the MoA
      prompt); ``None`` = all of them, which for 40 MATH answers is ~6.7k prompt
      tokens (median) and overflows the 8k context on ~10% of queries.

    Per query and policy: the graded aggregated answer, the vote / select proxies over
    the same answers, FLOPs and dollars of every call (recorded tokens for replayed
    calls, counted tokens for the aggregator) and the aggregator's measured latency
    and token counts (a cached call keeps the latency it was measured with). Also the
    recorded label of the best single model by training prior. ``models`` restricts
    the pool (e.g. ``small_open_models``); ``threads`` sets the local aggregator's CPU
    threads (not part of the cache key).
    """
    gt, sp, scorer, runtime = _live_setup(
        pool_name, aggregator, seed, cache, overrides, models=models, threads=threads
    )
    routers: dict[str, Any] = {}
    if "routemoa" in policies:
        routers["routemoa"] = RouteMoA(
            scorer,
            runtime,
            name="routemoa (live aggregator)",
            rounds=1,
            aggregator=aggregator,
            max_tokens=max_tokens,
        )
    if "routemoa-moa" in policies:
        routers["routemoa-moa"] = RouteMoA(
            scorer,
            runtime,
            name="routemoa (live aggregator, MoA prompt)",
            rounds=1,
            aggregator=aggregator,
            max_tokens=max_tokens,
            aggregator_prompt="moa",
        )
    if "dense" in policies:
        dense = _RecordedDense(
            runtime,
            scorer,
            layers=1,
            n_inputs=dense_inputs,
            max_tokens=max_tokens,
            aggregator=aggregator,
            name="dense (live aggregator)",
        )
        dense.recorded = list(gt.models)  # the pool holds the aggregator too
        routers["dense"] = dense
    prior = scorer.prior_scores()
    best_single = max(gt.models, key=lambda m: (prior.get(m, 0.0), m))
    task = _task(gt.task_name)
    rows = gt.rows(sp["test"])[:n]
    out: list[dict[str, Any]] = []
    for qi in rows:
        qi = int(qi)
        ex = gt.example(qi)
        single = _Cost(gt, qi)
        single.add(best_single, single.prompt[best_single], single.out[best_single])
        rec: dict[str, Any] = {
            "query_id": ex.id,
            "single": {
                "label": _label(gt, qi, best_single),
                "flops": single.flops,
                "dollars": single.dollars,
            },
        }
        for key, router in routers.items():
            trace = await router.answer(ex, task)
            if key.startswith("routemoa"):
                answered = trace.meta["rounds"][-1]["answered"] if trace.meta.get("rounds") else []
            else:
                answered = [m for m in trace.meta.get("plan", []) if m in gt.models]
                answered = [
                    m
                    for m in answered
                    if any(nd.node_id == f"L1:{m}" and nd.error is None for nd in trace.nodes)
                ]
            ag = _agg_node(trace)
            rec[key] = {
                "aggregated": float(task.grade(trace.output, ex)) if trace.output else 0.0,
                "vote": float(vote_correct(gt, qi, answered)) if answered else 0.0,
                "select": _label(gt, qi, answered[0]) if answered else 0.0,
                "n_answers": len(answered),
                "flops": trace.flops,
                "dollars": trace.dollars,
                "final": trace.meta.get("final"),
                "agg_ok": ag is not None and ag.error is None,
                "agg_error": ag.error if ag is not None else "not run",
                "agg_latency_s": ag.latency_s if ag is not None else float("nan"),
                "agg_prompt_tokens": ag.prompt_tokens if ag is not None else 0,
                "agg_completion_tokens": ag.completion_tokens if ag is not None else 0,
                "agg_finish": (ag.meta.get("finish_reason", "stop") if ag is not None else None),
                "agg_cached": bool(ag.cached) if ag is not None else False,
            }
        out.append(rec)
        if progress is not None:
            progress(rec)
    return {
        "n": len(out),
        "pool": pool_name,
        "models": list(gt.models),
        "aggregator": aggregator,
        "max_tokens": max_tokens,
        "dense_inputs": dense_inputs,
        "best_single": best_single,
        "per_query": out,
    }
