"""GraphExecutor: topological concurrency, prompts, vote/judge, budgets, failures."""

from __future__ import annotations

import re

import pytest

from moagraph.graph import builders
from moagraph.graph.executor import Budget, BudgetExceeded, GraphExecutor, vote
from moagraph.graph.policy import GraphPolicy
from moagraph.graph.spec import Graph, GraphError, Node, Role
from moagraph.graph.testing import ArithmeticTask, ScriptedBackend, fake_pool
from moagraph.models.base import LLMRequest, SamplingParams
from moagraph.models.runtime import PoolRuntime

TASK = ArithmeticTask()
EX = TASK.load()[3]  # "What is 3 + 4?" -> 7


def runtime(backend: ScriptedBackend, *names: str, conc: int = 8) -> PoolRuntime:
    names = names or ("m1", "m2")
    return PoolRuntime(
        fake_pool(*names, max_concurrency=conc), overrides={n: backend for n in names}
    )


def overlaps(a, b) -> bool:
    return a.start < b.end and b.start < a.end


async def test_parallel_nodes_overlap_and_dependents_never_do() -> None:
    be = ScriptedBackend(latency_s=0.05)
    ex = GraphExecutor(runtime(be), TASK)
    graph = builders.moa([["m1", "m2", "m1"], ["m2"]], "m1")
    trace = await ex.run(graph, EX)
    assert trace.error is None and len(be.calls) == 5
    first = [c for c in be.calls if c.query_id == EX.id]
    later = [c for c in be.calls if c.query_id is None]
    assert len(first) == 3 and len(later) == 2
    assert all(overlaps(a, b) for a in first for b in first if a is not b)
    refine, agg = sorted(later, key=lambda c: c.start)
    for c in first:
        assert c.end <= refine.start  # dependents start only after all inputs end
    assert refine.end <= agg.start
    # critical path ~ 3 sequential calls, while the sum of node latencies is 5 calls
    assert trace.latency_s < sum(n.latency_s for n in trace.nodes)
    assert [n.node_id for n in trace.nodes][-1] == "agg"


async def test_endpoint_concurrency_limit_is_respected() -> None:
    be = ScriptedBackend(latency_s=0.03)
    ex = GraphExecutor(runtime(be, "m1", conc=2), TASK)
    await ex.run(builders.parallel_vote("m1", 6), EX)
    peak = max(sum(1 for o in be.calls if o.start <= c.start < o.end) for c in be.calls)
    assert peak == 2


async def test_first_layer_sample_indices_and_query_id() -> None:
    be = ScriptedBackend()
    ex = GraphExecutor(runtime(be), TASK)
    graph = Graph(
        name="mix",
        nodes=[
            Node(id="x", model="m1"),
            Node(id="y", model="m2"),
            Node(id="z", model="m1"),
            Node(id="w", model="m1", sample_index=9),
            Node(id="v", role=Role.VOTE, inputs=["x", "y", "z", "w"]),
        ],
        sink="v",
    )
    await ex.run(graph, EX)
    got = sorted((c.model, c.sample_index) for c in be.calls)
    assert got == [("m1", 0), ("m1", 1), ("m1", 9), ("m2", 0)]
    assert {c.query_id for c in be.calls} == {EX.id}


async def test_prompts_by_role() -> None:
    answers = iter(["first: 7", "second: 8"])
    be = ScriptedBackend(respond=lambda r: next(answers, "Best response: 2"))
    ex = GraphExecutor(runtime(be), TASK)
    graph = Graph(
        name="roles",
        nodes=[
            Node(id="a", model="m1"),
            Node(id="b", model="m2"),
            Node(id="f", role=Role.FUSER, model="m1", inputs=["a", "b"]),
            Node(id="out", model="m2", inputs=["f"]),
        ],
        sink="out",
    )
    trace = await ex.run(graph, EX)
    by = {n.node_id: n for n in trace.nodes}
    fuser_prompt = by["f"].prompt[-1]["content"]
    assert "What is 3 + 4?" in fuser_prompt and "fusion agent" in fuser_prompt
    assert "Response 1:\nfirst: 7" in fuser_prompt and "Response 2:\nsecond: 8" in fuser_prompt
    refine = by["out"].prompt[-1]["content"]
    assert "Synthesise these responses" in refine and "Response 1:\nBest response: 2" in refine
    assert by["a"].prompt[-1]["content"] == "What is 3 + 4?"


async def test_judge_passes_chosen_input_on() -> None:
    def respond(r: LLMRequest) -> str:
        text = r.messages[-1]["content"]
        if "candidate responses" in text:
            return "I think the best response is #3 because it adds correctly."
        return f"answer {5 + r.sample_index}"

    be = ScriptedBackend(respond=respond)
    trace = await GraphExecutor(runtime(be), TASK).run(builders.best_of_n("m1", 3, "m2"), EX)
    judge = next(n for n in trace.nodes if n.node_id == "judge")
    assert judge.meta["choice"] == 2 and trace.output == "answer 7" and trace.answer == 7.0
    assert TASK.grade(trace.output, EX) == 1.0


def test_vote_majority_tie_and_none() -> None:
    assert vote(TASK, [3.0, 7.0, 7.0, 3.0, 7.0]) == (1, {"3.0": 2, "7.0": 3})
    assert vote(TASK, [None, 2.0, 5.0])[0] == 1  # tie -> earliest input
    assert vote(TASK, [None, None])[0] == 0


async def test_vote_node_outputs_winning_text() -> None:
    texts = {0: "it is 7", 1: "maybe 9", 2: "7.0 for sure"}
    be = ScriptedBackend(respond=lambda r: texts[r.sample_index])
    trace = await GraphExecutor(runtime(be, "m1"), TASK).run(builders.parallel_vote("m1", 3), EX)
    assert trace.output == "it is 7" and trace.answer == 7.0
    assert trace.nodes[-1].meta["votes"] == {"7.0": 2, "9.0": 1}


async def test_budget_refused_before_any_call() -> None:
    be = ScriptedBackend()
    ex = GraphExecutor(runtime(be), TASK)
    graph = builders.parallel_vote("m2", 4)
    est = ex.estimate(graph)
    assert est.flops_norm > 4  # m2 is bigger than the unit model m1
    with pytest.raises(BudgetExceeded, match="max_flops_norm"):
        await ex.run(graph, EX, budget=Budget(max_flops_norm=est.flops_norm * 0.9))
    with pytest.raises(BudgetExceeded, match="max_dollars"):
        await ex.run(graph, EX, budget=Budget(max_dollars=est.dollars / 2))
    with pytest.raises(BudgetExceeded):
        GraphPolicy(graph, ex, budget=Budget(max_flops_norm=1.0))
    assert be.calls == []
    assert issubclass(BudgetExceeded, ValueError)


async def test_guard_refuses_a_node_whose_bound_no_longer_fits() -> None:
    """A graph that passes the estimate still cannot spend past the budget: each node's
    upper-bound cost (prompt bytes + max_tokens) is reserved before it starts, so the
    node after a long reply is not started (the query run of moagraph.graph.run)."""
    long = " ".join(["word"] * 400)  # far longer than the task's average output
    be = ScriptedBackend(respond=lambda r: long + " 7")
    ex = GraphExecutor(runtime(be, "m1"), TASK)
    graph = builders.chain("m1", 4)
    cap = ex.estimate(graph).flops_norm * 1.01  # passes the estimate
    trace = await ex.run(graph, EX, budget=Budget(max_flops_norm=cap))
    assert trace.error is not None and trace.error.startswith("budget exceeded: node 'c1'")
    assert "not started" in trace.error and "max_flops_norm" in trace.error
    assert [s["node"] for s in trace.meta["skipped_calls"]] == ["c1"]
    assert len(trace.nodes) == 1 and len(be.calls) == 1
    assert trace.output == "" and trace.meta["flops_norm"] <= cap


async def test_measured_overrun_stops_with_partial_trace() -> None:
    """A backend that returns more than max_tokens (a replay of longer recordings) can pass
    the reserved bound; the measured cost then stops the query."""
    long = " ".join(["word"] * 2000)  # ignores max_tokens=8 below, passes the budget alone
    be = ScriptedBackend(respond=lambda r: long + " 7")
    ex = GraphExecutor(runtime(be, "m1"), TASK, default_params=SamplingParams(max_tokens=8))
    graph = builders.chain("m1", 4)
    budget = Budget(max_flops_norm=ex.estimate(graph).flops_norm * 1.01)  # passes the estimate
    trace = await ex.run(graph, EX, budget=budget)
    assert trace.error is not None and trace.error.startswith("budget exceeded: measured")
    assert len(trace.nodes) == 1 and len(be.calls) == 1 and "skipped_calls" not in trace.meta
    assert trace.output == "" and trace.flops == sum(n.flops for n in trace.nodes)


async def test_latency_cap_cancels_running_nodes() -> None:
    be = ScriptedBackend(latency_s=0.2)
    trace = await GraphExecutor(runtime(be, "m1"), TASK).run(
        builders.chain("m1", 3), EX, budget=Budget(max_latency_s=0.05)
    )
    assert trace.error is not None and "max_latency_s" in trace.error
    assert trace.nodes == []  # the first node was still running and got cancelled


async def test_node_failure_fails_only_that_query() -> None:
    be = ScriptedBackend(latency_s=0.01, fail_models={"m2"})
    ex = GraphExecutor(runtime(be), TASK)
    trace = await ex.run(builders.moa([["m1", "m2"]], "m1"), EX)
    assert trace.error is not None
    assert "'l0_1'" in trace.error and "m2" in trace.error and "refused the call" in trace.error
    assert not any(c.model == "m1" and c.query_id is None for c in be.calls)  # sink never ran
    ok = await ex.run(builders.single("m1"), EX)  # the executor still works
    assert ok.error is None


async def test_measured_costs_and_streaming() -> None:
    be = ScriptedBackend(respond=lambda r: "the sum is 7")
    pool_rt = runtime(be)
    ex = GraphExecutor(pool_rt, TASK, default_params=SamplingParams(max_tokens=64))
    pieces: list[str] = []
    trace = await ex.run(builders.chain(["m1", "m2"], 2), EX, on_token=pieces.append)
    assert pieces == ["the sum is 7"]  # only the sink streams
    from moagraph.models.cost import call_dollars, call_flops

    for n in trace.nodes:
        spec = pool_rt.spec(n.model)
        assert n.flops == call_flops(spec, n.prompt_tokens, n.completion_tokens)
        assert n.dollars == call_dollars(spec, n.prompt_tokens, n.completion_tokens)
    assert trace.flops == pytest.approx(sum(n.flops for n in trace.nodes))
    assert trace.meta["flops_norm"] == pytest.approx(trace.flops / ex.unit_flops)
    assert trace.answer == 7.0 and trace.wall_s >= trace.latency_s * 0.5


async def test_unknown_model_is_refused() -> None:
    ex = GraphExecutor(runtime(ScriptedBackend()), TASK)
    with pytest.raises(GraphError, match="'gpt-x'"):
        await ex.run(builders.single("gpt-x"), EX)


async def test_policy_protocol() -> None:
    be = ScriptedBackend(respond=lambda r: re.sub(r"\D+", " ", r.messages[-1]["content"]))
    pol = GraphPolicy(builders.single("m1"), GraphExecutor(runtime(be), TASK))
    trace = await pol.answer(EX, TASK)
    assert pol.name == "single-m1" and trace.policy == "single-m1" and trace.query_id == EX.id


async def test_vote_clusters_equivalent_math_answers() -> None:
    """Real MATH extraction + equivalence: 1/2, 0.5 and \\frac{1}{2} are one answer."""
    math_mod = pytest.importorskip("moagraph.tasks.math")
    task = math_mod.MathTask()
    texts = [
        "so \\boxed{3}",
        "thus \\boxed{1/2}",
        "we get \\boxed{0.5}",
        "answer \\boxed{\\frac{1}{2}}",
        "so \\boxed{3}",
    ]
    be = ScriptedBackend(respond=lambda r: texts[r.sample_index])
    ex = GraphExecutor(runtime(be, "m1"), task)
    from moagraph.tasks.base import Example

    example = Example(id="half", question="What is 2 divided by 4?", reference="\\frac{1}{2}")
    trace = await ex.run(builders.parallel_vote("m1", 5), example)
    assert trace.error is None
    assert trace.output == "thus \\boxed{1/2}"  # earliest member of the 3-strong cluster
    assert sorted(trace.nodes[-1].meta["votes"].values()) == [2, 3]
    assert task.grade(trace.output, example) == 1.0


async def test_every_node_call_gets_the_full_sampling_params() -> None:
    """The graph's calls go through the shared query run with their own SamplingParams:
    json_schema and seed reach the backend, and a node's max_tokens overrides the default."""
    schema = {"type": "object", "properties": {"answer": {"type": "number"}}}
    seen: list[tuple[object, object, int]] = []

    def respond(r: LLMRequest) -> str:
        seen.append((r.params.json_schema, r.params.seed, r.params.max_tokens))
        return "7"

    be = ScriptedBackend(respond=respond)
    params = SamplingParams(max_tokens=64, seed=5, json_schema=schema)
    graph = Graph(
        name="two",
        nodes=[Node(id="a", model="m1"), Node(id="b", model="m1", inputs=["a"], max_tokens=9)],
        sink="b",
    )
    trace = await GraphExecutor(runtime(be, "m1"), TASK, default_params=params).run(graph, EX)
    assert trace.ok, trace.error
    assert seen == [(schema, 5, 64), (schema, 5, 9)]
