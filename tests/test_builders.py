"""Builders produce valid, well-named graphs of the advertised shape."""

from __future__ import annotations

import random

import pytest

from moagraph.graph import builders
from moagraph.graph.spec import Graph, GraphError, Node, Role
from moagraph.graph.testing import fake_pool

POOL = fake_pool("m1", "m2", "m3")


def test_single() -> None:
    gr = builders.single("m1").validate_against(POOL)
    assert (gr.width, gr.depth, gr.sink, gr.name) == (1, 1, "a0", "single-m1")


def test_parallel_vote_cycles_models() -> None:
    gr = builders.parallel_vote(["m1", "m2"], 5).validate_against(POOL)
    assert [n.model for n in gr.llm_nodes] == ["m1", "m2", "m1", "m2", "m1"]
    assert gr.node(gr.sink).role is Role.VOTE and len(gr.node(gr.sink).inputs) == 5
    assert (gr.width, gr.depth) == (5, 1)
    assert builders.parallel_vote("m3", 3).name == "vote-3xm3"


def test_best_of_n_has_judge_sink() -> None:
    gr = builders.best_of_n("m1", 4, "m3").validate_against(POOL)
    judge = gr.node(gr.sink)
    assert judge.role is Role.JUDGE and judge.model == "m3" and len(judge.inputs) == 4
    assert gr.depth == 2


def test_chain_depth() -> None:
    gr = builders.chain(["m1", "m2"], 4).validate_against(POOL)
    assert (gr.width, gr.depth) == (1, 4)
    assert [n.inputs for n in gr.nodes] == [[], ["c0"], ["c1"], ["c2"]]


def test_moa_layers_fully_connected() -> None:
    gr = builders.moa([["m1", "m2", "m3"], ["m1", "m2"]], "m3").validate_against(POOL)
    assert gr.width == 3 and gr.depth == 3
    for n in gr.nodes:
        if n.id.startswith("l1_"):
            assert n.inputs == ["l0_0", "l0_1", "l0_2"]
    assert gr.node("agg").inputs == ["l1_0", "l1_1"]
    assert gr.name.startswith("moa-3x2")


@pytest.mark.parametrize("seed", range(40))
def test_random_dag_always_valid(seed: int) -> None:
    r = random.Random(seed)
    gr = builders.random_dag(["m1", "m2", "m3"], r.randint(1, 9), r.random(), r)
    gr.validate_against(POOL)
    assert len(gr.llm_nodes) >= 1


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(GraphError, match="`n`"):
        builders.parallel_vote("m1", 0)
    with pytest.raises(GraphError, match="`edge_p`"):
        builders.random_dag(["m1"], 3, 1.5)


# --- cascade (issue 20) -------------------------------------------------------------


def test_cascade_shape_and_conditions() -> None:
    from moagraph.graph.builders import cascade

    g = cascade(["m1", "m2"], ["m3"])
    assert g.conditional and g.sink == "vote"
    assert [n.id for n in g.nodes] == ["s0_0", "s0_1", "s1_0", "vote"]
    c = g.node("s1_0").condition
    assert c is not None and c.when == "disagree" and c.among == ["s0_0", "s0_1"]
    assert g.node("s0_0").condition is None and g.node("s0_1").condition is None
    assert g.node("vote").inputs == ["s1_0", "s0_0", "s0_1"]  # escalated first
    kinds = {(u, v): k for u, v, k in g.to_networkx().edges(data="kind")}
    assert kinds[("s0_0", "s1_0")] == "condition" and kinds[("s1_0", "vote")] == "input"
    assert g.name == "cascade-m1+m2-then-m3"


def test_cascade_several_stages_threshold() -> None:
    from moagraph.graph.builders import cascade

    g = cascade(["m1"], [["m2", "m2"], ["m3"]], threshold=0.6)
    s1, s2 = g.node("s1_0").condition, g.node("s2_0").condition
    assert s1 is not None and s1.when == "agreement_below" and s1.threshold == 0.6
    assert s1.among == ["s0_0"]
    assert s2 is not None and s2.among == ["s0_0", "s1_0", "s1_1"]
    assert g.node("vote").inputs == ["s2_0", "s1_0", "s1_1", "s0_0"]
    assert g.name.endswith("-t0.6")


def test_cascade_same_shape_as_search_space_cascade() -> None:
    from moagraph.graph.builders import cascade
    from moagraph.search.space import cascade_nodes, finalize_graph

    g = cascade(["m1", "m2"], ["m3"], threshold=0.7)
    raw = [Node(id=n.id, model=n.model) for n in g.nodes if n.model]
    stage = {"s0_0": 0, "s0_1": 0, "s1_0": 1}
    ref = finalize_graph(cascade_nodes(raw, stage, {1: 0.7}), [], name="x")
    assert ref.node(ref.sink).inputs == g.node("vote").inputs
    for n in raw:
        assert ref.node(n.id).condition == g.node(n.id).condition


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"first": [], "then": ["m2"]}, "`first`"),
        ({"first": "m1", "then": ["m2"]}, "`first`"),
        ({"first": ["m1"], "then": []}, "`then`"),
        ({"first": ["m1"], "then": "m2"}, "`then`"),
        ({"first": ["m1"], "then": [["m2"], []]}, "`then`"),
        ({"first": ["m1"], "then": ["m2", ["m3"]]}, "`then`"),
        ({"first": ["m1"], "then": ["m2"], "threshold": 0.0}, "`threshold`"),
        ({"first": ["m1"], "then": ["m2"], "threshold": 1.5}, "`threshold`"),
        ({"first": [""], "then": ["m2"]}, "`first`"),
    ],
)
def test_cascade_bad_arguments_name_the_argument(kw: dict, needle: str) -> None:
    from moagraph.graph.builders import cascade

    with pytest.raises(GraphError, match=needle):
        cascade(**kw)


def test_bundled_cascade3_is_the_builder_shape() -> None:
    from moagraph.graph.builders import cascade
    from moagraph.graphs import bundled_graphs

    g = Graph.load(bundled_graphs()["cascade3"])
    b = cascade(["gemma-270m", "gemma-270m"], ["qwen-coder-1.5b"])
    assert g.name == b.name
    strip = [n.model_dump(exclude_none=True, exclude={"temperature"}) for n in g.nodes]
    assert strip == [n.model_dump(exclude_none=True) for n in b.nodes]
