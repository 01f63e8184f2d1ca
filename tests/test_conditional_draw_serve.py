"""Conditional graphs (issue 20) end to end: the executor on real recordings (the
bundled zeroeval-gsm8k replay pool, the real gsm8k grader) against the exact replay
evaluator, and a cascade served over the OpenAI API.

No test here asserts an accuracy: only that the two scorers agree, and which nodes
ran and what they cost.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import openai
import pytest

import moagraph
from moagraph.graph import builders
from moagraph.graph.executor import GraphExecutor
from moagraph.graph.spec import Condition, Graph, Node, Role
from moagraph.graph.testing import ArithmeticTask, ScriptedBackend, fake_pool
from moagraph.graph.trace import Trace
from moagraph.models.base import LLMRequest
from moagraph.models.pool import load_pool
from moagraph.models.runtime import PoolRuntime
from moagraph.pools import resolve_pool

SMALL, CODER, BIG = (
    "Meta-Llama-3.1-8B-Instruct",
    "DeepSeek-Coder-V2-0724",
    "Meta-Llama-3.1-70B-Instruct",
)
N = 60


@pytest.fixture(scope="module")
def gsm() -> dict:
    pool = load_pool(resolve_pool("zeroeval-gsm8k"))
    task = moagraph.get_task("gsm8k")
    exs = task.load("zeroeval", n=N, seed=0)
    graph = builders.cascade([SMALL, CODER], [BIG])
    ex = GraphExecutor(PoolRuntime(pool), task)

    async def go() -> list[Trace]:
        return [await ex.run(graph, e) for e in exs]

    return {"pool": pool, "task": task, "exs": exs, "graph": graph, "traces": asyncio.run(go())}


def test_executor_matches_exact_replay_on_real_recordings(gsm: dict) -> None:
    from moagraph.search.evaluator import ExactReplayEvaluator
    from moagraph.search.space import SearchSpace

    pool, task, exs, graph, traces = (gsm[k] for k in ("pool", "task", "exs", "graph", "traces"))
    assert len(exs) == N and all(t.error is None for t in traces)
    space = SearchSpace.from_pool(
        pool, task, models=[SMALL, CODER, BIG], flat=True, stages=2, max_copies=1
    )
    res = ExactReplayEvaluator.from_pool(pool, space, exs, task=task).evaluate_sync(graph)
    assert res.n == N
    # per question: the executor's sink score (the recorded label of the answer it picked)
    # and the real grader on its text are the replay evaluator's score
    assert [float(t.meta["sink_score"]) for t in traces] == res.scores
    assert [task.grade(t.output, e) for t, e in zip(traces, exs, strict=True)] == res.scores
    # FLOPs pattern: the evaluator's planned per-question cost is the cost of the nodes
    # that ran in the executor (the big model exactly on the escalated questions)
    node_cost = {nid: c for nid, (c, _) in space.node_costs(graph).items()}
    ran = [{n.node_id for n in t.nodes if n.model and not n.skipped} for t in traces]
    assert res.costs == pytest.approx([sum(node_cost[i] for i in r) for r in ran])
    escalated = ["s1_0" in r for r in ran]
    assert res.escalated == pytest.approx(sum(escalated) / N)
    base = min(t.flops for t in traces)
    for t, esc in zip(traces, escalated, strict=True):
        big = next(n for n in t.nodes if n.node_id == "s1_0")
        assert (big.flops > 0) == esc
        assert t.flops == pytest.approx(sum(n.flops for n in t.nodes))
        assert (t.flops > base) or not esc
    assert 0 < sum(escalated) < N  # both branches are exercised on these questions


def test_big_model_skipped_exactly_when_stage0_agrees(gsm: dict) -> None:
    task, traces = gsm["task"], gsm["traces"]
    for t in traces:
        by = {n.node_id: n for n in t.nodes}
        a, b, big = by["s0_0"], by["s0_1"], by["s1_0"]
        assert not a.skipped and not b.skipped
        agree = (
            a.answer is not None and b.answer is not None and task.equivalent(a.answer, b.answer)
        )
        assert big.skipped == agree
        if agree:
            assert big.flops == 0 and big.dollars == 0 and big.prompt_tokens == 0
            assert big.output in ("", None) and "s1_0" in t.meta["skipped_nodes"]
            assert big.meta["skipped"].startswith("condition false")
            assert by["vote"].meta["votes"] and sum(by["vote"].meta["votes"].values()) <= 2
        else:
            assert big.flops > 0 and big.prompt_tokens > 0
            assert "s1_0" not in t.meta.get("skipped_nodes", [])


def test_sink_with_only_skipped_inputs_is_a_clear_trace_error(gsm: dict) -> None:
    pool, task, exs, traces = gsm["pool"], gsm["task"], gsm["exs"], gsm["traces"]
    # a question where the two stage-0 answers agree: the conditional node is skipped
    i = next(j for j, t in enumerate(traces) if "s1_0" in t.meta.get("skipped_nodes", []))
    g = Graph(
        name="only-conditional-into-sink",
        nodes=[
            Node(id="a", model=SMALL),
            Node(id="b", model=CODER),
            # refines a and b, only when they disagree (a and b reach the sink through it:
            # the reach-the-sink rule walks inputs only, not condition edges)
            Node(id="c", model=BIG, inputs=["a", "b"], condition=Condition(among=["a", "b"])),
            Node(id="vote", role=Role.VOTE, inputs=["c"]),
        ],
        sink="vote",
    )
    t = asyncio.run(GraphExecutor(PoolRuntime(pool), task).run(g, exs[i]))
    assert t.error is not None and "skipped" in t.error
    assert t.meta["skipped_nodes"] == ["c"]
    assert not t.output


# --- served (scripted backend: the chat API sends no query id a replay pool knows) ---

Q_AGREE = "What is 2 + 3?"
Q_DISAGREE = "What is 10 + 20?"


def _respond(r: LLMRequest) -> str:
    prompt = r.messages[-1]["content"]
    if r.model.name == "big":
        return "Escalated. The answer is 30."
    if "10 + 20" in prompt:  # the two cheap models disagree on this one
        return "The answer is 30." if r.model.name == "small" else "The answer is 31."
    return "The answer is 5."


def test_served_cascade_reports_only_nodes_that_ran(tmp_path: Path) -> None:
    from moagraph.serve.app import create_app
    from moagraph.serve.config import ServeConfig
    from moagraph.serve.runtime import ServeRuntime
    from moagraph.serve.testing import ServerThread

    pool = fake_pool("small", "mid", "big")
    backend = ScriptedBackend(respond=_respond)
    runtime = ServeRuntime(PoolRuntime(pool, overrides={m: backend for m in pool.names}))
    graph = builders.cascade(["small", "mid"], ["big"])
    app = create_app(
        runtime,
        {"cascade": graph},
        config=ServeConfig(api_key="sk-t", store=tmp_path / "s.sqlite", log_flush_s=0.05),
        task=ArithmeticTask(),
    )
    with ServerThread(app) as srv:
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="sk-t", max_retries=0)
        try:
            r1 = client.chat.completions.create(
                model="cascade", messages=[{"role": "user", "content": Q_AGREE}]
            )
            calls_after_1 = [c.model for c in backend.calls]
            r2 = client.chat.completions.create(
                model="cascade", messages=[{"role": "user", "content": Q_DISAGREE}]
            )
        finally:
            client.close()
    assert sorted(calls_after_1) == ["mid", "small"]  # big never called on agreement
    assert sorted(c.model for c in backend.calls[2:]) == ["big", "mid", "small"]
    e1, e2 = (r.model_extra["moagraph"] for r in (r1, r2))  # type: ignore[index]
    assert re.search(r"\b5\b", r1.choices[0].message.content or "")
    assert "Escalated" in (r2.choices[0].message.content or "")  # the tie goes to stage 1
    n1 = {n["id"]: n for n in e1["nodes"]}
    n2 = {n["id"]: n for n in e2["nodes"]}
    # a skipped node costs nothing; the escalated query costs more
    assert n1.get("s1_0", {"prompt_tokens": 0, "completion_tokens": 0})["prompt_tokens"] == 0
    assert n2["s1_0"]["prompt_tokens"] > 0 and n2["s1_0"]["completion_tokens"] > 0
    assert 0 < e1["flops"] < e2["flops"] and 0 < e1["dollars"] < e2["dollars"]
    assert r1.usage is not None and r2.usage is not None
    assert r1.usage.total_tokens < r2.usage.total_tokens
    assert e2["calls"] == 3


def test_served_usage_lists_only_the_nodes_that_ran(tmp_path: Path) -> None:
    from moagraph.serve.app import create_app
    from moagraph.serve.config import ServeConfig
    from moagraph.serve.runtime import ServeRuntime
    from moagraph.serve.testing import ServerThread

    pool = fake_pool("small", "mid", "big")
    backend = ScriptedBackend(respond=_respond)
    runtime = ServeRuntime(PoolRuntime(pool, overrides={m: backend for m in pool.names}))
    app = create_app(
        runtime,
        {"cascade": builders.cascade(["small", "mid"], ["big"])},
        config=ServeConfig(api_key="sk-t", store=tmp_path / "s.sqlite", log_flush_s=0.05),
        task=ArithmeticTask(),
    )
    with ServerThread(app) as srv:
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="sk-t", max_retries=0)
        try:
            r = client.chat.completions.create(
                model="cascade", messages=[{"role": "user", "content": Q_AGREE}]
            )
        finally:
            client.close()
    ext = r.model_extra["moagraph"]  # type: ignore[index]
    assert len(backend.calls) == 2
    assert ext["calls"] == 2
    assert "s1_0" not in {n["id"] for n in ext["nodes"]}


def test_agreement_below_cascade_matches_exact_replay() -> None:
    """agreement_below on three real stage-0 models: 2 of 3 agreeing (0.67) is below 0.7,
    so the big model is skipped exactly when all three answers are equivalent."""
    from moagraph.search.evaluator import ExactReplayEvaluator
    from moagraph.search.space import SearchSpace

    pool = load_pool(resolve_pool("zeroeval-gsm8k"))
    task = moagraph.get_task("gsm8k")
    exs = task.load("zeroeval", n=40, seed=1)
    first = [SMALL, CODER, "gemma-2-9b-it"]
    graph = builders.cascade(first, [BIG], threshold=0.7)
    ex = GraphExecutor(PoolRuntime(pool), task)

    async def go() -> list[Trace]:
        return [await ex.run(graph, e) for e in exs]

    traces = asyncio.run(go())
    space = SearchSpace.from_pool(
        pool, task, models=[*first, BIG], flat=True, stages=2, max_copies=1
    )
    res = ExactReplayEvaluator.from_pool(pool, space, exs, task=task).evaluate_sync(graph)
    assert [float(t.meta["sink_score"]) for t in traces] == res.scores
    # critical-path latency from the recorded latencies (the executor adds a few µs of vote time)
    assert res.latency_s == pytest.approx(sum(t.latency_s for t in traces) / len(traces), rel=1e-3)
    for t in traces:
        by = {n.node_id: n for n in t.nodes}
        a = [by[f"s0_{j}"].answer for j in range(3)]
        all_agree = all(x is not None for x in a) and all(task.equivalent(a[0], x) for x in a[1:])
        assert by["s1_0"].skipped == all_agree
    assert res.escalated == pytest.approx(
        sum(not {n.node_id: n for n in t.nodes}["s1_0"].skipped for t in traces) / len(traces)
    )
