"""RouteMoA and baselines on a fake pool with a scripted LLM (orchestration logic only)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from moagraph.graph.testing import ArithmeticTask, ScriptedBackend, fake_pool
from moagraph.models.base import LLMRequest
from moagraph.models.pool import Pool
from moagraph.models.runtime import PoolRuntime
from moagraph.route.base import get_router_class, load_router, router_names
from moagraph.route.encoders import HashingEncoder
from moagraph.route.routemoa import RouteMoA
from moagraph.route.runner import rank_models
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
    order = rank_models({"m1": 0.1, "m2": 0.79, "m3": 0.5, "m4": 0.3, "m5": 0.8}, pool, 0.02, 100, 50)
    assert order == ["m2", "m5", "m3", "m4", "m1"]
    assert rank_models({"m1": 0.1, "m2": 0.79, "m5": 0.8, "m3": 0, "m4": 0}, pool, 0.0, 100, 50)[:2] == ["m5", "m2"]
    # equal cost: latency decides (a spec may carry a measured per-token latency)
    a = pool["m3"]
    twin = Pool(name="t", models=[a.model_copy(update={"name": "slow", "extra": {"latency_s_per_token": 0.05}}),
                                  a.model_copy(update={"name": "fast", "extra": {"latency_s_per_token": 0.01}})])
    assert rank_models({"slow": 0.5, "fast": 0.5}, twin, 0.01, 100, 50) == ["fast", "slow"]
    assert rank_models({"slow": 0.6, "fast": 0.5}, twin, 0.01, 100, 50) == ["slow", "fast"]


async def test_early_stop_when_judges_agree() -> None:
    pool = fake_pool(*NAMES)
    be = scripted(lambda r: "9")
    rt = runtime_for(pool, be)
    router = RouteMoA(const_scorer(pool, [0.2, 0.9, 0.8, 0.1, 0.7]), rt, k=3, max_layers=3, margin=0.0)
    task = ArithmeticTask()
    ex = task.load(n=1)[0]
    trace = await router.answer(ex, task)
    assert trace.ok, trace.error
    meta = trace.meta
    assert meta["stop_reason"].startswith("early stop after layer 1")
    assert [lay["models"] for lay in meta["layers"]] == [["m2", "m3", "m5"]]
    assert meta["layers"][0]["judge_scores"]["m2"] == {"m2": 9.0, "m3": 9.0, "m5": 9.0}
    # 3 answers + 9 judge calls, no second layer, no aggregator
    assert len(trace.nodes) == 12 and {n.role for n in trace.nodes} == {"assistant", "judge"}
    assert trace.output.startswith("m2 says")
    assert trace.latency_s >= 0 and trace.meta["flops_norm"] > 0


async def test_disagreeing_judges_run_next_layer_and_aggregate() -> None:
    pool = fake_pool(*NAMES)
    # judges love m3's answers and hate the rest; garbage from m5 as a judge
    def judge(r: LLMRequest) -> str:
        if r.model.name == "m5":
            return "I cannot rate this."
        if r.model.name == "m3" and "m3 says" in r.messages[-1]["content"]:
            return "Score: 6"  # m3 is modest about itself: judges disagree, no early stop
        return "10" if "m3 says" in r.messages[-1]["content"] else "2"
    rt = runtime_for(pool, scripted(judge))
    router = RouteMoA(const_scorer(pool, [0.2, 0.9, 0.8, 0.1, 0.7]), rt, k=2, max_layers=2,
                      margin=0.0, stop_threshold=10.0, prior_weight=0.3)
    task = ArithmeticTask()
    trace = await router.answer(task.load(n=1)[0], task)
    m = trace.meta
    assert m["layers"][0]["models"] == ["m2", "m3"]
    assert m["layers"][0]["combined"]["m3"] > m["layers"][0]["combined"]["m2"]  # judges re-ranked
    assert m["stop_reason"] == "max_layers=2 reached"
    assert m["aggregator"] == "m3"
    assert trace.nodes[-1].role == "aggregator"
    refine = [n for n in trace.nodes if n.node_id.startswith("L2:") and n.role == "assistant"]
    assert refine and "m3 says" in refine[0].prompt[-1]["content"]


@pytest.mark.parametrize("budget", [1.0, 3.0, 8.0, 20.0, 60.0])
async def test_budget_cap_never_exceeded(budget: float) -> None:
    pool = fake_pool(*NAMES)
    rt = runtime_for(pool, scripted(lambda r: "5"))
    router = RouteMoA(const_scorer(pool, [0.5, 0.9, 0.8, 0.1, 0.7]), rt, k=3, max_layers=3,
                      max_tokens=64, max_flops_norm=budget)
    task = ArithmeticTask()
    for ex in task.load(n=3):
        trace = await router.answer(ex, task)
        assert trace.meta["flops_norm"] <= budget + 1e-9
        if budget < 3.0:
            assert trace.meta.get("skipped_calls")


async def test_dollar_cap_never_exceeded() -> None:
    pool = fake_pool(*NAMES)
    rt = runtime_for(pool, scripted(lambda r: "5"))
    router = RouteMoA(const_scorer(pool, [0.5, 0.9, 0.8, 0.1, 0.7]), rt, k=3, max_layers=2,
                      max_tokens=64, max_dollars=2e-4)
    task = ArithmeticTask()
    trace = await router.answer(task.load(n=1)[0], task)
    assert trace.dollars <= 2e-4


@pytest.mark.parametrize("kind", ["dense", "sparse", "single", "random", "threshold"])
async def test_baselines_run_on_fake_pool(kind: str) -> None:
    pool = fake_pool(*NAMES)
    be = scripted(lambda r: "5")
    rt = runtime_for(pool, be)
    scorer = const_scorer(pool, [0.2, 0.9, 0.8, 0.1, 0.7])
    pol = get_router_class(kind)(rt, scorer)
    task = ArithmeticTask()
    ex = task.load(n=1)[0]
    trace = await pol.answer(ex, task)
    assert trace.ok and trace.output, trace.error
    plan = pol.plan(ex)
    first = [n.model for n in trace.nodes if n.node_id.startswith("L1:")]
    assert sorted(first) == sorted(plan.ranked)
    expected_calls = {
        "dense": 5 * 2 + 1, "sparse": 3 * 2 + 1, "single": 1, "random": 3 * 2 + 1, "threshold": 1,
    }[kind]
    assert len(be.calls) == expected_calls
    if kind == "dense":
        assert plan.aggregator == "m2" and trace.nodes[-1].model == "m2"
    if kind == "single":
        assert plan.ranked == ["m2"]
    if kind == "sparse":
        assert plan.ranked == ["m2", "m3", "m5"]
    if kind == "threshold":  # weak = best of the cheaper half (m1, m2) != strong m2 -> m1; 0.2 < 0.5
        assert plan.ranked == ["m2"]
        assert get_router_class(kind)(rt, scorer, cutoff=0.1).plan(ex).ranked == ["m1"]


def test_random_k_is_seeded_per_query() -> None:
    pool = fake_pool(*NAMES)
    rt = PoolRuntime(pool)
    from moagraph.tasks.base import Example

    pol = get_router_class("random")(rt, None, k=2, seed=3)
    picks = {pol.plan(Example(id=f"q{i}", question="x")).ranked[0] for i in range(30)}
    assert len(picks) > 1
    assert pol.plan(Example(id="q1", question="x")).ranked == pol.plan(Example(id="q1", question="y")).ranked


def test_registry_and_load_router(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert {"routemoa", "dense", "sparse", "single", "random", "threshold"} <= set(router_names())
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
