"""RouteMoA and baselines on a fake pool with a scripted LLM (orchestration logic only)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from moagraph.graph.testing import ArithmeticTask, ScriptedBackend, fake_pool
from moagraph.models.base import LLMRequest
from moagraph.models.pool import Pool
from moagraph.models.runtime import PoolRuntime
from moagraph.route import RouterError, get_router_class, load_router, router_names
from moagraph.route.baselines import parse_moderator
from moagraph.route.encoders import HashingEncoder
from moagraph.route.judges import normalised
from moagraph.route.ranking import rank_models
from moagraph.route.routemoa import (
    RoundsState,
    RouteMoA,
    RouteMoAConfig,
    map_scores,
    official_rank,
    parse_assessment,
    replay_rounds,
)
from moagraph.route.scorer import Scorer

NAMES = ("m1", "m2", "m3", "m4", "m5")


def const_scorer(pool: Pool, scores: list[float]) -> Scorer:
    """A real scorer whose head ignores the query: predictions = ``scores``."""
    s = Scorer(HashingEncoder(16), pool.names)
    s.weights = [np.zeros((16, len(scores)), np.float32), np.asarray(scores, np.float32)]
    s.prior = np.asarray(scores)
    return s


def scripted(judge: Callable[[LLMRequest], str]) -> ScriptedBackend:
    def respond(r: LLMRequest) -> str:
        text = r.messages[-1]["content"]
        if "Score (1-10):" in text:
            return judge(r)
        return f"{r.model.name} says the answer is 3."

    return ScriptedBackend(respond=respond)


def runtime_for(pool: Pool, backend: ScriptedBackend) -> PoolRuntime:
    return PoolRuntime(pool, overrides={m: backend for m in pool.names})


def test_tie_break_by_cost_then_latency() -> None:
    pool = fake_pool(*NAMES)  # m1 smallest ... m5 largest
    # m5 best but m2 within margin -> cheaper m2 first; m4 and m3 far below.
    order = rank_models(
        {"m1": 0.1, "m2": 0.79, "m3": 0.5, "m4": 0.3, "m5": 0.8}, pool, 0.02, 100, 50
    )
    assert order == ["m2", "m5", "m3", "m4", "m1"]
    assert rank_models({"m1": 0.1, "m2": 0.79, "m5": 0.8, "m3": 0, "m4": 0}, pool, 0.0, 100, 50)[
        :2
    ] == ["m5", "m2"]
    # equal cost: latency decides (a spec may carry a measured per-token latency)
    a = pool["m3"]
    twin = Pool(
        name="t",
        models=[
            a.model_copy(update={"name": "slow", "extra": {"latency_s_per_token": 0.05}}),
            a.model_copy(update={"name": "fast", "extra": {"latency_s_per_token": 0.01}}),
        ],
    )
    assert rank_models({"slow": 0.5, "fast": 0.5}, twin, 0.01, 100, 50) == ["fast", "slow"]
    assert rank_models({"slow": 0.6, "fast": 0.5}, twin, 0.01, 100, 50) == ["slow", "fast"]


def json_reply(answer: str, self_score: float, peers: list[float] | None = None) -> str:
    import json

    obj: dict[str, object] = {"answer": answer, "self_score": self_score}
    if peers is not None:
        obj["peer_scores"] = peers
    return "```json\n" + json.dumps(obj) + "\n```"


def official(self_r1: float, self_r2: dict[str, float], peers: list[float]) -> ScriptedBackend:
    """Round 1: JSON with a self-score; round 2: JSON with self and peer scores; else plain."""

    def respond(r: LLMRequest) -> str:
        sys_text = r.messages[0]["content"] if r.messages[0]["role"] == "system" else ""
        if "Here are several answers from other LLMs" in sys_text:
            return json_reply("the answer is 3", self_r2.get(r.model.name, 0.5), peers)
        if '"self_score"' in sys_text:
            return json_reply("the answer is 3", self_r1)
        return f"{r.model.name} says the answer is 3."

    return ScriptedBackend(respond=respond)


def test_map_scores_and_parse_assessment() -> None:
    m = map_scores({"a": 0.0, "b": 0.25, "c": 0.5, "d": 0.9, "e": 1.0})
    assert m["a"] == 0.0 and m["e"] == 1.0
    assert m["b"] == pytest.approx(0.8 * 0.25**1.5) and m["c"] == pytest.approx(1 - 0.8 * 0.5**1.5)
    assert m["d"] == pytest.approx(1 - 0.8 * 0.1**1.5)
    assert parse_assessment(json_reply("x", 0.7, [0.1, 0.9])) == (0.7, [0.1, 0.9])
    assert parse_assessment("{'answer': 'x', 'self_score': 0.4,}") == (
        0.4,
        [],
    )  # quotes, trailing comma
    assert parse_assessment('blah "self_score": 0.3 blah') == (0.3, [])
    assert parse_assessment("no json at all") == (None, [])
    assert (
        parse_assessment('{"answer": "x", "self_score": 7}')[0] is None
    )  # out of [0, 1]: unreadable


def test_official_rank_exact_ties_by_price() -> None:
    pool = fake_pool(*NAMES)
    specs = [
        pool[m].model_copy(update={"price_out": p, "price_in": 0.0})
        for m, p in zip(NAMES, [5, 1, 3, 2, 4])
    ]
    priced = Pool(name="p", models=specs)
    scores = {"m1": 0.5, "m2": 0.5, "m3": 0.9, "m4": 0.49, "m5": 0.5}
    assert official_rank(scores, priced) == [
        "m3",
        "m2",
        "m5",
        "m1",
        "m4",
    ]  # exact ties: cheaper output price
    assert official_rank(scores, priced, margin=0.02)[:4] == [
        "m3",
        "m2",
        "m4",
        "m5",
    ]  # near-tie option


async def test_inline_assessment_early_stop_one_call_per_model() -> None:
    pool = fake_pool(*NAMES)
    be = official(0.95, {}, [])
    rt = runtime_for(pool, be)
    router = RouteMoA(const_scorer(pool, [0.2, 0.9, 0.8, 0.1, 0.7]), rt)
    task = ArithmeticTask()
    trace = await router.answer(task.load(n=1)[0], task)
    m = trace.meta
    # 3 answer calls (assessment inside them) + the fixed aggregator; no judge calls at all
    assert [n.role for n in trace.nodes].count("judge") == 0
    assert len(be.calls) == 4
    assert m["rounds"][0]["models"] == ["m2", "m3", "m5"]
    assert m["rounds"][0]["self_scores"] == {"m2": 0.95, "m3": 0.95, "m5": 0.95}
    mapped = map_scores({"m2": 0.9})["m2"]
    assert m["rounds"][0]["combined"]["m2"] == pytest.approx(0.9 * mapped + 0.1 * 0.95)
    assert m["stop_reason"].startswith("early stop after round 1")
    assert (
        m["aggregator"] == "m2" and trace.nodes[-1].role == "aggregator"
    )  # strongest by prior, always runs


async def test_three_rounds_cross_from_best_model_and_official_weights() -> None:
    pool = fake_pool(*NAMES)
    be = official(0.5, {"m1": 0.9, "m2": 0.6, "m3": 0.4}, [0.2, 0.9, 0.6])
    rt = runtime_for(pool, be)
    prior = [0.30, 0.40, 0.35, 0.10, 0.20]
    router = RouteMoA(const_scorer(pool, prior), rt, aggregator="m5")
    task = ArithmeticTask()
    trace = await router.answer(task.load(n=1)[0], task)
    m = trace.meta
    assert [r["round"] for r in m["rounds"]] == [1, 2, 3]
    r1, r2 = m["rounds"][0], m["rounds"][1]
    assert r1["models"] == ["m2", "m3", "m1"]
    mp = map_scores(dict(zip(NAMES, prior)))
    assert r1["combined"]["m2"] == pytest.approx(0.9 * mp["m2"] + 0.1 * 0.5)
    assert r2["cross_from"] == "m1"  # the round-2 model with the best self-score
    assert r2["cross_scores"] == {"m2": 0.2, "m3": 0.9, "m1": 0.6}
    c = r2["combined"]
    assert c["m3"] == pytest.approx(0.25 * mp["m3"] + 0.15 * 0.5 + 0.15 * 0.4 + 0.45 * 0.9)
    assert c["m1"] == pytest.approx(0.25 * mp["m1"] + 0.15 * 0.5 + 0.15 * 0.9 + 0.45 * 0.6)
    assert len(be.calls) == 3 + 3 + 3 + 1
    assert m["aggregator"] == "m5" and m["stop_reason"] == "rounds=3 reached"


async def test_judge_option_makes_separate_calls() -> None:
    pool = fake_pool(*NAMES)

    def respond(r: LLMRequest) -> str:
        return "9" if "Score (1-10):" in r.messages[-1]["content"] else "the answer is 3"

    be = ScriptedBackend(respond=respond)
    router = RouteMoA(
        const_scorer(pool, [0.2, 0.9, 0.8, 0.1, 0.7]), runtime_for(pool, be), assessment="judge"
    )
    task = ArithmeticTask()
    trace = await router.answer(task.load(n=1)[0], task)
    assert [n.role for n in trace.nodes].count("judge") == 3  # self-judgements of round 1
    assert trace.meta["rounds"][0]["self_scores"]["m2"] == pytest.approx(normalised(9.0))


def test_replay_rounds_follow_the_prior() -> None:
    cfg = RouteMoAConfig()
    order = list(NAMES)
    assert replay_rounds(cfg, dict(zip(NAMES, [0.9, 0.8, 0.7, 0.1, 0.1])), order)[0] == [
        ["m1", "m2", "m3"]
    ]
    rounds, why = replay_rounds(cfg, dict(zip(NAMES, [0.4, 0.3, 0.2, 0.1, 0.1])), order)
    assert len(rounds) == 3 and why == "3 rounds"


@pytest.mark.parametrize("budget", [1.0, 3.0, 8.0, 20.0, 60.0])
async def test_budget_cap_never_exceeded(budget: float) -> None:
    pool = fake_pool(*NAMES)
    rt = runtime_for(pool, scripted(lambda r: "5"))
    router = RouteMoA(
        const_scorer(pool, [0.5, 0.9, 0.8, 0.1, 0.7]),
        rt,
        k=3,
        rounds=3,
        max_tokens=64,
        max_flops_norm=budget,
    )
    task = ArithmeticTask()
    for ex in task.load(n=3):
        trace = await router.answer(ex, task)
        assert trace.meta["flops_norm"] <= budget + 1e-9
        if budget < 3.0:
            assert trace.meta.get("skipped_calls")
        if budget >= 8.0:  # room for several calls: met by spending, not by refusing all
            assert trace.ok and trace.meta["flops_norm"] > 0


async def test_dollar_cap_never_exceeded() -> None:
    pool = fake_pool(*NAMES)
    rt = runtime_for(pool, scripted(lambda r: "5"))
    router = RouteMoA(
        const_scorer(pool, [0.5, 0.9, 0.8, 0.1, 0.7]),
        rt,
        k=3,
        rounds=2,
        max_tokens=64,
        max_dollars=2e-4,
    )
    task = ArithmeticTask()
    trace = await router.answer(task.load(n=1)[0], task)
    assert trace.dollars <= 2e-4
    # the cap was met by spending, not by refusing everything: some calls ran, some were skipped
    assert trace.ok and trace.dollars > 0 and [n for n in trace.nodes if n.model]
    assert trace.meta.get("skipped_calls")


@pytest.mark.parametrize("cap", ["max_flops_norm", "max_dollars"])
def test_a_non_positive_router_budget_is_refused_naming_it(cap: str) -> None:
    pool = fake_pool(*NAMES)
    rt = runtime_for(pool, scripted(lambda r: "5"))
    scorer = const_scorer(pool, [0.5, 0.9, 0.8, 0.1, 0.7])
    for kind in router_names():
        settings = {cap: 0.0}
        if kind == "routemoa":
            with pytest.raises(ValueError, match=cap):
                RouteMoA(scorer, rt, **settings)
            continue
        with pytest.raises(RouterError, match=f"{cap}=0.0: must be > 0"):
            get_router_class(kind)(rt, scorer, **settings)


@pytest.mark.parametrize("kind", ["dense", "sparse", "single", "random", "threshold", "oracle"])
async def test_baselines_run_on_fake_pool(kind: str) -> None:
    pool = fake_pool(*NAMES)
    be = scripted(lambda r: "5")
    rt = runtime_for(pool, be)
    scorer = const_scorer(pool, [0.2, 0.9, 0.8, 0.1, 0.7])
    task = ArithmeticTask()
    ex = task.load(n=1)[0]
    extra = {"labels": {ex.id: {"m4": 1.0, "m5": 1.0, "m2": 0.0}}} if kind == "oracle" else {}
    pol = get_router_class(kind)(rt, scorer, **extra)
    trace = await pol.answer(ex, task)
    assert trace.ok and trace.output, trace.error
    plan = pol.plan(ex)
    first = [n.model for n in trace.nodes if n.node_id.startswith("L1:")]
    assert sorted(first) == sorted(plan.ranked)
    expected_calls = {
        "dense": 5 * 3 + 1,
        "sparse": 3 * 3 + 1,
        "single": 1,
        "random": 3 * 3 + 1,
        "threshold": 1,
        "oracle": 1,
    }[kind]
    assert len(be.calls) == expected_calls
    if kind == "dense":
        assert plan.aggregator == "m2" and trace.nodes[-1].model == "m2"
    if kind == "single":
        assert plan.ranked == ["m2"]
    if kind == "oracle":  # the cheapest right model (m4 < m5)
        assert plan.ranked == ["m4"]
    if kind == "sparse":
        assert plan.ranked == ["m2", "m3", "m5"]
    if (
        kind == "threshold"
    ):  # weak = best of the cheaper half (m1, m2) != strong m2 -> m1; 0.2 < 0.5
        assert plan.ranked == ["m2"]
        assert get_router_class(kind)(rt, scorer, cutoff=0.1).plan(ex).ranked == ["m1"]


def test_random_k_is_seeded_per_query() -> None:
    pool = fake_pool(*NAMES)
    rt = PoolRuntime(pool)
    from moagraph.tasks.base import Example

    pol = get_router_class("random")(rt, None, k=2, seed=3)
    picks = {pol.plan(Example(id=f"q{i}", question="x")).ranked[0] for i in range(30)}
    assert len(picks) > 1
    assert (
        pol.plan(Example(id="q1", question="x")).ranked
        == pol.plan(Example(id="q1", question="y")).ranked
    )


def test_registry_and_load_router(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert {
        "routemoa",
        "dense",
        "smoa",
        "sparse",
        "single",
        "random",
        "threshold",
        "oracle",
    } <= set(router_names())
    pool = fake_pool(*NAMES)
    s = const_scorer(pool, [0.2, 0.9, 0.8, 0.1, 0.7])
    from moagraph.route.scorer import pool_fingerprint

    s.fingerprint = pool_fingerprint(pool)
    path = s.save(tmp_path / "r.pt")
    r = load_router(path, PoolRuntime(pool), k=2)
    assert r.name == "routemoa"
    from moagraph.tasks.base import Example

    assert r.plan(Example(id="1", question="hi")).ranked == ["m2", "m3"]
    with pytest.raises(ValueError, match="different pool"):
        load_router(path, PoolRuntime(fake_pool("x", "y")))
    with pytest.raises(ValueError, match="unknown"):
        load_router(path, PoolRuntime(pool), kind="nope")


async def test_smoa_moderator_selects_and_ends_debate() -> None:
    pool = fake_pool(*NAMES)

    def respond(r: LLMRequest) -> str:
        text = r.messages[-1]["content"]
        if "You are a moderator" in text:
            return '{"chosen responses": [4, 0, 2], "end debate": true}'
        if "role descriptions" in text:
            return "[Generated Role Description] a\n[Generated Role Description] b"
        return f"{r.model.name} says the answer is 3."

    be = ScriptedBackend(respond=respond)
    pol = get_router_class("smoa")(
        runtime_for(pool, be), const_scorer(pool, [0.2, 0.9, 0.8, 0.1, 0.7])
    )
    task = ArithmeticTask()
    trace = await pol.answer(task.load(n=1)[0], task)
    # roles + 5 answers + moderator (ends the debate) + aggregator
    assert len(be.calls) == 1 + 5 + 1 + 1
    assert (
        trace.meta["rounds"][0]["chosen"] == ["m5", "m1", "m3"]
        and trace.meta["rounds"][0]["end_debate"]
    )
    assert trace.meta["aggregator"] == "m2"
    assert parse_moderator("garbage", 5, 3) == ([0, 1, 2], False)


def test_combined_score_uses_the_official_weights() -> None:
    """Official emoa_v2 weights: round 1 ``0.9 * mapped + 0.1 * self``; round 2, a model
    answering in both rounds ``0.25 * mapped + 0.15 * self1 + 0.15 * self2 + 0.45 * cross``.
    Figures worked by hand: prior 0.8 maps to 1 - 0.8 * 0.2**1.5 = 0.9284458."""
    st = RoundsState(RouteMoAConfig(k=2), {"a": 0.8, "b": 0.3}, ["a", "b"])
    assert st.mapped["a"] == pytest.approx(0.9284458, abs=1e-6)
    assert st.mapped["b"] == pytest.approx(0.8 * 0.3**1.5, abs=1e-9)  # 0.1314534
    r1 = st.after_round1(["a", "b"], {"a": 0.6, "b": 0.4})
    assert r1["a"] == pytest.approx(0.9 * 0.9284458 + 0.1 * 0.6, abs=1e-6)  # 0.8956012
    assert r1["b"] == pytest.approx(0.9 * 0.1314534 + 0.1 * 0.4, abs=1e-6)  # 0.1583081
    r2 = st.after_round2(
        ["a", "b"], ["a", "b"], {"a": 0.6, "b": 0.4}, {"a": 0.4, "b": 0.2}, {"a": 0.9, "b": 0.5}
    )
    assert r2["a"] == pytest.approx(
        0.25 * 0.9284458 + 0.15 * 0.6 + 0.15 * 0.4 + 0.45 * 0.9, abs=1e-6
    )
    assert r2["a"] == pytest.approx(0.7871115, abs=1e-6)
    assert r2["b"] == pytest.approx(0.3478634, abs=1e-6)
    stop, _ = st.stops(r2)
    assert stop  # 0.787 > 0.76, the official threshold
