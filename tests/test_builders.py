"""Builders produce valid, well-named graphs of the advertised shape."""

from __future__ import annotations

import random

import pytest

from moagraph.graph import builders
from moagraph.graph.spec import GraphError, Role
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
