"""Conditional graphs: the spec's rules, agreement with the real grader, exact replay of
cascades on real recordings (cost of skipped nodes is zero), and the search over them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import yaml

from moagraph.graph.agreement import agreement, condition_holds, majority
from moagraph.graph.spec import Condition, Graph, GraphError, Node
from moagraph.search import get_optimizer, run_study
from moagraph.search.agent import parse_update_reply, update_schema
from moagraph.search.distribution import GraphDistribution
from moagraph.search.evaluator import ExactReplayEvaluator
from moagraph.search.space import SearchSpace, cascade_nodes, finalize_graph, graph_key
from moagraph.search.study import Study

CASCADE = """
name: cascade
nodes:
  - {id: a, model: m1}
  - {id: b, model: m2}
  - id: c
    model: m3
    condition: {when: disagree, among: [a, b]}
  - {id: v, role: vote, inputs: [c, a, b]}
sink: v
"""


def _raw() -> dict:
    return yaml.safe_load(CASCADE)


# --- the spec -------------------------------------------------------------------------------
def test_conditional_yaml_round_trips_and_orders_after_its_condition() -> None:
    g = Graph.from_yaml(CASCADE)
    assert g.conditional and g.node("c").condition is not None
    assert g.topological_order().index("c") > max(
        g.topological_order().index("a"), g.topological_order().index("b")
    )
    kinds = {(u, v): d["kind"] for u, v, d in g.to_networkx().edges(data=True)}
    assert kinds[("a", "c")] == "condition" and kinds[("c", "v")] == "input"
    again = Graph.from_yaml(g.to_yaml())
    assert again.node("c").condition == g.node("c").condition
    assert not Graph.from_yaml(
        CASCADE.replace("    condition: {when: disagree, among: [a, b]}\n", "")
    ).conditional


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (
            lambda r: r["nodes"][2]["condition"].update(among=["a", "zz"]),
            ["'c'", "condition.among", "'zz'"],
        ),
        (lambda r: r["nodes"][2]["condition"].update(among=["c"]), ["'c'", "itself"]),
        (lambda r: r["nodes"][2]["condition"].update(among=["a", "a"]), ["'c'", "twice"]),
        (lambda r: r["nodes"][0].update(condition={"among": ["c"]}), ["cycle", "condition"]),
        (lambda r: r["nodes"][2]["condition"].update(when="agreement_below"), ["threshold"]),
        (lambda r: r["nodes"][2]["condition"].update(threshold=0.5), ["disagree", "threshold"]),
        (
            lambda r: r["nodes"][2]["condition"].update(when="agreement_below", threshold=1.5),
            ["threshold"],
        ),
        (lambda r: r["nodes"][3].update(condition={"among": ["a"]}), ["sink", "always runs"]),
        (lambda r: r["nodes"][2]["condition"].update(among=[]), ["among"]),
    ],
)
def test_invalid_conditions_are_refused_naming_node_and_field(edit, words) -> None:
    raw = _raw()
    edit(raw)
    with pytest.raises(GraphError) as e:
        Graph.from_dict(raw, "cascade.yaml")
    msg = str(e.value)
    for w in words:
        assert w in msg, msg


# --- agreement with the real grader -------------------------------------------------------------
def test_agreement_uses_the_task_equivalence(gsm8k_task) -> None:
    eq = gsm8k_task.equivalent
    assert eq("3", "3.0")
    assert agreement(["3", "3.0"], eq) == 1.0
    assert agreement(["3", "4", "3.00"], eq) == pytest.approx(2 / 3)
    assert agreement(["3", None], eq) == 0.5  # an unextractable answer agrees with nothing
    assert agreement([], eq) == 1.0
    dis = Condition(among=["a", "b"])
    assert not condition_holds(dis, ["3", "3.0"], eq)
    assert condition_holds(dis, ["3", "4"], eq)
    assert not condition_holds(dis, [], eq)  # nothing ran: nothing to escalate from
    low = Condition(when="agreement_below", among=["a", "b", "c"], threshold=0.7)
    assert condition_holds(low, ["3", "4", "3"], eq)  # 2/3 < 0.7
    assert not condition_holds(low, ["3", "3", "3.0"], eq)
    half = Condition(when="agreement_below", among=["a", "b"], threshold=0.5)
    assert not condition_holds(half, ["3", "4"], eq)  # 0.5 is not below 0.5
    assert majority(["4", "3", "3.0"], eq) == (1, {"4": 1, "3": 2})


@pytest.fixture(scope="module")
def gsm8k_task():
    from moagraph.tasks.registry import get_task

    return get_task("gsm8k")


# --- exact replay of cascades on real recordings -----------------------------------------------
MODELS = ["Meta-Llama-3.1-8B-Instruct", "DeepSeek-Coder-V2-0724", "Meta-Llama-3.1-70B-Instruct"]


@pytest.fixture(scope="module")
def gsm_setup(gsm8k_task):
    import moagraph

    pool = moagraph.load_pool("zeroeval-gsm8k")
    exs = gsm8k_task.load("zeroeval")[:120]
    space = SearchSpace.from_pool(
        pool, gsm8k_task, models=MODELS, flat=True, stages=2, max_copies=1
    )
    ev = ExactReplayEvaluator.from_pool(pool, space, exs[:80], exs[80:], task=gsm8k_task)
    return pool, space, ev, exs


def _cascade(space: SearchSpace, threshold: float = 1.0) -> Graph:
    nodes = [Node(id=f"n{i}", model=m) for i, m in enumerate(MODELS)]
    nodes = cascade_nodes(nodes, {"n0": 0, "n1": 0, "n2": 1}, {1: threshold})
    return finalize_graph(nodes, ["n0", "n1", "n2"], name="cascade")


def test_replayed_cascade_costs_exactly_the_nodes_that_ran(gsm_setup, gsm8k_task) -> None:
    pool, space, ev, exs = gsm_setup
    g = _cascade(space)
    assert g.node(g.sink).inputs[0] == "n2"  # the escalated answer wins vote ties
    res = ev.evaluate_sync(g)
    base = space.node_cost(MODELS[0], 0) + space.node_cost(MODELS[1], 0)
    big = space.node_cost(MODELS[2], 0)
    # independently: the 70B runs exactly where the two recorded answers are not equivalent
    disagree = []
    for qid in ev.ids["train"]:
        a = ev.samples[(MODELS[0], qid, 0)].answer
        b = ev.samples[(MODELS[1], qid, 0)].answer
        disagree.append(a is None or b is None or not gsm8k_task.equivalent(a, b))
    assert 0 < sum(disagree) < len(disagree)  # both kinds of question occur
    assert res.costs == pytest.approx([base + (big if d else 0.0) for d in disagree])
    assert res.cost == pytest.approx(float(np.mean(res.costs)))
    assert res.worst_cost == pytest.approx(base + big)
    assert res.escalated == pytest.approx(float(np.mean(disagree)))
    # where the first stage agrees, the graph scores what that shared answer scores
    for qid, d, s in zip(ev.ids["train"], disagree, res.scores):
        if not d:
            assert s == ev.samples[(MODELS[0], qid, 0)].score


def test_over_budget_cascades_are_scored_but_never_picked(gsm_setup) -> None:
    pool, space, ev, exs = gsm_setup
    g = _cascade(space)
    full = ev.evaluate_sync(g)
    tight = SearchSpace.from_pool(
        pool,
        ev.task,
        models=MODELS,
        flat=True,
        stages=2,
        max_copies=1,
        budget=full.cost * 0.99,  # the always-run part fits, the expected cost does not
    )
    assert tight.fits(g)
    ev2 = ExactReplayEvaluator(ev.samples, tight, ev.ids["train"], ev.ids["heldout"], task=ev.task)
    r = ev2.evaluate_sync(g)
    assert r.over_budget and "expected cost" in r.over_budget
    assert tight.expected_over_budget(full.cost * 0.98, 0.0) is None

    study = Study.open(None, "over", {})

    async def go():
        opt = get_optimizer("random", tight, seed=0)
        graphs = [g, tight.flat_graph([1, 0, 0])]

        async def propose():
            return graphs.pop(0), "search", {}

        opt._propose = propose  # type: ignore[method-assign]
        return await run_study(study, opt, ev2, 2)

    res = asyncio.run(go())
    rows = study.trials()
    assert rows[0].objective < 0 <= rows[1].objective
    assert rows[0].state["over_budget"]
    assert graph_key(res.best_graph) == graph_key(tight.flat_graph([1, 0, 0]))


# --- the search space ---------------------------------------------------------------------------
def test_distribution_round_trips_stages_and_thresholds(gsm_setup) -> None:
    pool, space3, ev, exs = gsm_setup
    space = SearchSpace.from_pool(
        pool, ev.task, models=MODELS, flat=True, stages=3, max_copies=1, thresholds=(1.0, 0.5)
    )
    d = GraphDistribution(space)
    rng = np.random.default_rng(0)
    seen_conditional = 0
    for _ in range(40):
        ch = d.sample_choices(rng)
        g = d.build(ch)
        g.validate_structure()
        seen_conditional += g.conditional
        back = d.choices_of(g)
        assert graph_key(d.build(back)) == graph_key(g)
        assert np.isfinite(d.log_prob(g))
        grads = d.grad_log_prob(g)
        assert set(grads) >= {"stage", "threshold"}
    assert seen_conditional > 0
    before = d.stage_logits.copy()
    n = d.set_probabilities(
        {"stages": {"n0": {"0": 0.9}}, "escalate_below": {"stage1": {"0.5": 0.8}}}
    )
    assert n == 2 and not np.allclose(before, d.stage_logits)
    assert d.probabilities()["escalate_below"]["stage1"]["0.5"] == pytest.approx(0.8, abs=1e-3)


@pytest.mark.parametrize(
    "name", ["random", "reinforce", "bayesopt", "agent-reinforce", "exhaustive"]
)
def test_every_optimizer_searches_conditional_graphs(gsm_setup, name) -> None:
    pool, space2, ev, exs = gsm_setup
    kw = {"agent": None, "task_kind": "math"} if name == "agent-reinforce" else {}
    opt = get_optimizer(name, space2, seed=1, **kw)
    n = len(opt.graphs) if name == "exhaustive" else 12
    res = asyncio.run(run_study(Study.open(None, name, {}), opt, ev, n))
    res.best_graph.validate_against(pool)
    if name == "exhaustive":
        assert any(g.conditional for g in opt.graphs)


def test_agent_reinforce_without_updates_never_changes_its_distribution(gsm_setup) -> None:
    pool, space, ev, exs = gsm_setup
    opt = get_optimizer(
        "agent-reinforce", space, seed=0, agent=None, updates=False, task_kind="math"
    )
    snapshots = []

    async def go():
        for _ in range(int(opt.planned_prior_evaluations) + 4):
            c = await opt.ask()
            r = await ev.evaluate(c.graph)
            await opt.tell(c, r.reward, {"cost": r.cost})
            if c.phase not in ("pilot", "pretest"):
                snapshots.append(opt.dist.state_dict())

    asyncio.run(go())
    assert len(snapshots) >= 3 and all(s == snapshots[0] for s in snapshots)
    # with updates (the REINFORCE fallback when no agent answers) the distribution moves
    opt2 = get_optimizer("agent-reinforce", space, seed=0, agent=None, task_kind="math")
    after = []

    async def go2():
        for _ in range(int(opt2.planned_prior_evaluations) + 4):
            c = await opt2.ask()
            r = await ev.evaluate(c.graph)
            await opt2.tell(c, r.reward + 0.01 * len(after), {"cost": r.cost})
            if c.phase not in ("pilot", "pretest"):
                after.append(opt2.dist.state_dict())

    asyncio.run(go2())
    assert any(s != after[0] for s in after[1:])


def test_agent_schema_and_reply_carry_stages(gsm_setup) -> None:
    pool, space, ev, exs = gsm_setup
    sch = update_schema(space)
    probs = sch["properties"]["probabilities"]["properties"]
    assert "stages" in probs and "escalate_below" in probs
    node = sch["properties"]["graph"]["properties"]["nodes"]["items"]["properties"]
    assert node["stage"]["enum"] == [0, 1]
    reply = (
        '{"probabilities": {"stages": {"n2": {"1": 0.9}}}, "graph": {"nodes": ['
        f'{{"id": "n0", "model": "{MODELS[0]}", "stage": 0}}, '
        f'{{"id": "n1", "model": "{MODELS[1]}", "stage": 0}}, '
        f'{{"id": "n2", "model": "{MODELS[2]}", "stage": 1}}], '
        '"escalate_below": {"stage1": 0.45}}}'
    )
    r = parse_update_reply(reply, space)
    assert r.ok and r.graph is not None
    c = r.graph.node("n2").condition
    assert c is not None and c.when == "agreement_below" and c.threshold == 0.5
    assert sorted(c.among) == ["n0", "n1"]


def test_search_cli_runs_conditional_graphs(tmp_path) -> None:
    from typer.testing import CliRunner

    from moagraph.cli import _register, app

    _register()
    args = [
        "search", "--pool", "zeroeval-gsm8k", "--optimizer", "random", "--iterations", "4",
        "--stages", "2", "--train-n", "30", "--heldout-n", "10", "--test-n", "30",
        "--models", ",".join(MODELS), "--study", str(tmp_path / "s.sqlite"), "--no-cache",
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "conditional graphs: up to 2 stages" in out
    assert "expected cost" in out
    bad = CliRunner().invoke(
        app,
        [*args[:-3], "--thresholds", "1,x", "--study", str(tmp_path / "t.sqlite"), "--no-cache"],
    )
    assert bad.exit_code != 0 and "--thresholds" in bad.output


# --- executor orchestration (scripted answers: which nodes run, what they read) ---------------
def _scripted_runtime(answers: dict[str, str]):
    from moagraph.graph.testing import ScriptedBackend, fake_pool
    from moagraph.models.runtime import PoolRuntime

    be = ScriptedBackend(respond=lambda r: answers[r.model.name])
    names = list(answers)
    return PoolRuntime(fake_pool(*names), overrides={n: be for n in names}), be


def _run(graph: Graph, answers: dict[str, str]):
    from moagraph.graph.executor import GraphExecutor
    from moagraph.graph.testing import ArithmeticTask

    rt, be = _scripted_runtime(answers)
    task = ArithmeticTask()
    ex = task.load(n=1)[0]
    trace = asyncio.run(GraphExecutor(rt, task).run(graph, ex))
    return trace, be


def _escalation_graph() -> Graph:
    return Graph.from_dict(
        {
            "nodes": [
                {"id": "a", "model": "m1"},
                {"id": "b", "model": "m2"},
                {"id": "c", "model": "m3", "condition": {"among": ["a", "b"]}},
                {"id": "f", "model": "m4", "inputs": ["a", "c"]},  # reads what ran
                {"id": "v", "role": "vote", "inputs": ["c", "a", "b"]},
                {"id": "s", "model": "m4", "inputs": ["f", "v"]},
            ],
            "sink": "s",
        }
    )


def test_executor_skips_a_false_condition_at_zero_cost_and_inputs_shrink() -> None:
    g = _escalation_graph()
    agree = {"m1": "It is 7.", "m2": "7", "m3": "8", "m4": "7"}
    trace, be = _run(g, agree)
    assert trace.error is None
    called = [c.model for c in be.calls]
    assert "m3" not in called  # the condition was false: no call
    c = next(n for n in trace.nodes if n.node_id == "c")
    assert c.skipped and c.flops == 0 and c.dollars == 0 and not c.prompt
    assert "condition false" in c.meta["skipped"]
    assert trace.meta["skipped_nodes"] == ["c"]
    f_prompt = next(x.prompt for x in be.calls if x.model == "m4" and "It is 7." in x.prompt)
    assert f_prompt.count("It is 7.") == 1  # f read a only (c never ran)
    assert trace.flops == pytest.approx(sum(n.flops for n in trace.nodes))

    disagree = {**agree, "m2": "9"}
    trace2, be2 = _run(g, disagree)
    assert "m3" in [x.model for x in be2.calls] and "skipped_nodes" not in trace2.meta
    assert trace2.flops > trace.flops


def test_the_critical_path_waits_for_a_condition() -> None:
    g = _escalation_graph()
    trace, _ = _run(g, {"m1": "7", "m2": "9", "m3": "8", "m4": "7"})
    by = {n.node_id: n for n in trace.nodes}
    assert by["c"].start_s >= max(by["a"].end_s, by["b"].end_s) - 1e-6


def test_a_vote_whose_inputs_were_all_skipped_is_an_error_not_a_crash() -> None:
    g = Graph.from_dict(
        {
            "nodes": [
                {"id": "a", "model": "m1"},
                {"id": "b", "model": "m2"},
                {"id": "c", "model": "m3", "condition": {"among": ["a", "b"]}},
                {
                    "id": "d",
                    "model": "m4",
                    "inputs": ["a", "b"],
                    "condition": {"among": ["a", "b"]},
                },
                {"id": "v", "role": "vote", "inputs": ["c", "d"]},
            ],
            "sink": "v",
        }
    )
    trace, _ = _run(g, {"m1": "7", "m2": "7", "m3": "1", "m4": "2"})
    assert trace.error is not None and "no input ran" in trace.error


def test_search_says_in_one_line_when_the_agent_cannot_run(tmp_path) -> None:
    from typer.testing import CliRunner

    from moagraph.cli import _register, app

    _register()
    agent_pool = tmp_path / "agent.yaml"
    agent_pool.write_text(
        "name: dead\nmodels:\n  - {name: agent, backend: openai, base_url: 'http://127.0.0.1:9/v1', "
        "model: x, params_b: 1, layers: 16, hidden_size: 2048, max_retries: 0, timeout_s: 2}\n",
        encoding="utf-8",
    )
    args = [
        "search", "--pool", "zeroeval-gsm8k", "--iterations", "6", "--stages", "2",
        "--train-n", "20", "--heldout-n", "5", "--test-n", "10", "--models", ",".join(MODELS),
        "--agent-pool", str(agent_pool), "--study", str(tmp_path / "s.sqlite"), "--no-cache",
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "agent: not available" in out and "pilot ranking" in out
