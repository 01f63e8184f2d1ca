"""Search space, distribution sampling, trimming: every sample is valid and within budget."""

from __future__ import annotations

import numpy as np
import pytest

from moagraph.graph.spec import Node, Role
from moagraph.graph.testing import fake_pool
from moagraph.search.distribution import GraphDistribution
from moagraph.search.space import SearchSpace, SearchSpaceError, finalize_graph, graph_text


def space(budget: float = 12.0, max_nodes: int = 5, **kw) -> SearchSpace:
    return SearchSpace.from_pool(
        fake_pool("s", "m", "l"), avg_in=202, avg_out=275, budget=budget, max_nodes=max_nodes, **kw
    )


def check_valid(sp: SearchSpace, g) -> int:
    """Asserts the graph is valid; returns its number of fusers (so callers can tell
    whether the fuser rules were exercised at all)."""
    g.validate_structure()  # the graph package's own rules (DAG, sink reached, roles)
    assert sp.fits(g), graph_text(g)
    ids = {n.id: n for n in g.nodes}
    for n in g.llm_nodes:
        roles = [ids[i].role for i in n.inputs]
        if n.role is Role.FUSER:
            assert Role.ASSISTANT in roles
        if Role.FUSER in roles:
            assert n.role is Role.ASSISTANT
    assert g.node(g.sink).role is Role.VOTE
    return sum(n.role is Role.FUSER for n in g.llm_nodes)


@pytest.mark.parametrize("budget", [1.0, 3.5, 12.0, 40.0])
def test_samples_are_valid_and_within_budget(budget: float) -> None:
    sp = space(budget)
    d = GraphDistribution(sp)
    d.edge_logits[:] = 1.5  # dense graphs: in-degree raises cost, trimming must cope
    d.role_logits[:, 1] = 1.0  # many fusers
    fusers = 0
    for seed in range(150):
        g = d.sample(np.random.default_rng(seed))
        fusers += check_valid(sp, g)
        assert sp.graph_cost(g) <= budget + 1e-9
    if budget >= 12.0:  # room for several nodes: the fuser rules were really checked
        assert fusers > 0


def test_untrimmed_dense_samples_break_budget_and_trim_fixes_them() -> None:
    sp = space(6.0)
    d = GraphDistribution(sp)
    d.edge_logits[:] = 3.0
    d.model_logits[:, -1] = -5.0  # all slots on
    over = 0
    for seed in range(30):
        raw = d.sample(np.random.default_rng(seed), trim=False)
        if not sp.fits(raw):
            over += 1
            t = sp.trim(raw)
            check_valid(sp, t)
            assert len(t.llm_nodes) < len(raw.llm_nodes)
    assert over > 0


def test_trim_drops_cheapest_first() -> None:
    sp = space(5.0)
    nodes = [
        Node(id="n0", model="l"),
        Node(id="n1", model="s"),
        Node(id="n2", model="s"),
        Node(id="n3", model="m"),
    ]
    g = finalize_graph(nodes, [])
    assert sp.graph_cost(g) > 5.0
    t = sp.trim(g)
    assert sp.graph_cost(t) <= 5.0
    assert "l" in [n.model for n in t.llm_nodes]  # the large model survives


def test_feasible_mixes_are_maximal() -> None:
    sp = space(12.0, max_nodes=4)
    mixes = sp.feasible_mixes()
    assert mixes
    for mix in mixes:
        assert sp.mix_fits(mix)
        for i in range(len(mix)):
            bigger = list(mix)
            bigger[i] += 1
            assert not sp.mix_fits(bigger)
    assert len(sp.feasible_mixes(maximal=False)) > len(mixes)


def test_role_rules_in_finalize() -> None:
    nodes = [
        Node(id="n0", role=Role.FUSER, model="s"),  # no inputs -> assistant
        Node(id="n1", role=Role.FUSER, model="s", inputs=["n0"]),
        Node(id="n2", role=Role.FUSER, model="m", inputs=["n1"]),  # fed by fuser -> assistant
    ]
    g = finalize_graph(nodes, [])
    assert [g.node(i).role for i in ("n0", "n1", "n2")] == [
        Role.ASSISTANT,
        Role.FUSER,
        Role.ASSISTANT,
    ]
    assert g.node("sink").inputs == ["n2"]
    g.validate_structure()


def test_budget_too_small_names_the_option() -> None:
    with pytest.raises(SearchSpaceError, match="--budget"):
        space(0.5)


def test_probabilities_round_trip_and_partial_update() -> None:
    sp = space()
    d = GraphDistribution(sp)
    n = d.set_probabilities(
        {
            "edges": {"n0->n1": 1.7, "n3->n1": 0.9, "bogus": 0.2},
            "models": {"n0": {"l": 0.9, "zzz": 1}},
            "sink": {"n2": "80%"},
        }
    )
    p = d.probabilities()
    assert n == 3
    assert p["edges"]["n0->n1"] == 0.99  # clipped
    assert p["models"]["n0"]["l"] > 0.8
    assert p["sink"]["n2"] == pytest.approx(0.8, abs=1e-3)
    assert abs(sum(p["models"]["n0"].values()) - 1) < 0.01
    g = d.argmax_graph()
    assert g.node("n0").model == "l"
    assert "n0" in g.node("n1").inputs  # p = .99 > .55


def test_log_prob_is_highest_for_the_mode() -> None:
    sp = space()
    d = GraphDistribution(sp)
    d.set_probabilities(
        {"models": {f"n{i}": {"m": 0.9} for i in range(5)}, "edges": {"n0->n1": 0.95}}
    )
    rng = np.random.default_rng(0)
    mode = d.argmax_graph()
    assert all(d.log_prob(mode) >= d.log_prob(d.sample(rng)) - 1e-9 for _ in range(20))


def test_max_copies_is_respected() -> None:
    sp = space(40.0, max_copies=1)
    d = GraphDistribution(sp)
    for seed in range(50):
        g = d.sample(np.random.default_rng(seed))
        models = [n.model for n in g.llm_nodes]
        assert len(models) == len(set(models))
