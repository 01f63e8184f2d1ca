"""Core search logic that a one-line change could break without any other test noticing.

Each test here was written after planting that change (issue #11): the agent's
reward baseline, the held-out slot of the optimiser's final candidate, the
resume-mismatch counter and the ``trim`` tie-break.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from moagraph.graph.spec import Graph, Node, Role
from moagraph.search import agent_reinforce as ar_mod
from moagraph.search import get_optimizer
from moagraph.search.base import Optimizer
from moagraph.search.distribution import GraphDistribution
from moagraph.search.reinforce import reinforce_grads
from moagraph.search.space import finalize_graph, graph_key
from moagraph.search.storage import InMemoryStorage
from moagraph.search.study import Study, run_study
from moagraph.search.textgrad import TextGrad
from moagraph.testing.search import ScriptedAgent, SyntheticEvaluator, small_space


# --- (a) the agent's reward baseline --------------------------------------------------
def test_reinforce_grads_scale_by_reward_minus_the_given_baseline() -> None:
    sp = small_space()
    d = GraphDistribution(sp)
    g = d.sample(np.random.default_rng(0))
    glp = d.grad_log_prob(g)
    zero = reinforce_grads(d, [(g, 0.7)], baseline=0.7)
    assert all(not v.any() for v in zero.values()), "reward == baseline must give no step"
    got = reinforce_grads(d, [(g, 0.7)], baseline=0.2)
    assert any(v.any() for v in glp.values())
    for k, v in glp.items():
        np.testing.assert_allclose(got[k], 0.5 * v)
    # no baseline given: the batch mean
    g2 = d.sample(np.random.default_rng(1))
    got2 = reinforce_grads(d, [(g, 1.0), (g2, 0.0)])
    for k in glp:
        want = (0.5 * d.grad_log_prob(g)[k] - 0.5 * d.grad_log_prob(g2)[k]) / 2
        np.testing.assert_allclose(got2[k], want)


def test_agent_fallback_step_uses_the_moving_average_of_earlier_rewards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The baseline of step t is 0.8/0.2 moving average of rewards 1..t-1 (the first
    step's baseline is its own reward: no step)."""
    seen: list[float | None] = []
    real = ar_mod.reinforce_grads

    def spy(dist: Any, batch: Any, baseline: float | None = None) -> Any:
        seen.append(baseline)
        return real(dist, batch, baseline=baseline)

    monkeypatch.setattr(ar_mod, "reinforce_grads", spy)
    rewards = [0.5, 1.0, 0.75, 0.25]

    async def go() -> TextGrad:
        opt = TextGrad(small_space(), seed=0)  # no agent: every update is a REINFORCE step
        for r in rewards:
            c = await opt.ask()
            await opt.tell(c, r)
        return opt

    opt = asyncio.run(go())
    b1 = 0.5
    b2 = 0.8 * b1 + 0.2 * 1.0
    b3 = 0.8 * b2 + 0.2 * 0.75
    assert seen == pytest.approx([0.5, b1, b2, b3])
    assert opt.counters["fallback_steps"] == 4
    assert opt._baseline == pytest.approx(0.8 * b3 + 0.2 * 0.25)


# --- (b) the held-out slot of the final candidate --------------------------------------
class _Scripted(Optimizer):
    """Proposes the given graphs in turn; its final candidate is ``final``."""

    name = "scripted"

    def __init__(self, space: Any, graphs: list[Graph], final: Graph) -> None:
        super().__init__(space, 0)
        self.graphs, self.final = graphs, final

    async def _propose(self) -> tuple[Graph, str, dict[str, Any]]:
        return self.graphs[self._asked % len(self.graphs)], "search", {}

    def final_candidates(self) -> list[Graph]:
        return [self.final]


def _flat(sp: Any, models: list[str]) -> Graph:
    nodes = [Node(id=f"n{i}", role=Role.ASSISTANT, model=m) for i, m in enumerate(models)]
    return finalize_graph(nodes, [n.id for n in nodes], sink_mode=sp.sink_mode)


def test_final_candidate_replaces_the_lowest_of_the_top_k_not_the_best() -> None:
    sp = small_space()
    graphs = [_flat(sp, ["m", "m", "m"]), _flat(sp, ["m", "m"]), _flat(sp, ["m"]), _flat(sp, ["s"])]
    final = _flat(sp, ["m", "l"])  # never evaluated on train
    ev = SyntheticEvaluator(sp)  # rewards: 3xm 1.0 > 2xm 0.8 > 1xm 0.6 > 1xs 0.5
    st = Study.open(InMemoryStorage(), "f", {})
    res = asyncio.run(run_study(st, _Scripted(sp, graphs, final), ev, 4, heldout_top=3))
    src = {graph_key(Graph.model_validate(r["graph"])): r["source"] for r in st.heldout_rows()}
    assert src == {
        graph_key(graphs[0]): "trial 0",
        graph_key(graphs[1]): "trial 1",
        graph_key(final): "final",
    }
    assert [h["source"] for h in res.heldout] == ["trial 0", "trial 1", "final"]
    assert res.heldout[-1]["train_reward"] is None  # the final graph had no training score
    assert graph_key(res.best_graph) == graph_key(graphs[0])  # best on held-out too


def test_final_candidate_that_wins_on_heldout_is_returned_with_its_train_score() -> None:
    sp = small_space()
    graphs = [_flat(sp, ["s"]), _flat(sp, ["l"])]
    final = _flat(sp, ["m", "m", "m"])  # best by the synthetic reward, never a trial
    st = Study.open(InMemoryStorage(), "w", {})
    res = asyncio.run(run_study(st, _Scripted(sp, graphs, final), SyntheticEvaluator(sp), 2))
    assert graph_key(res.best_graph) == graph_key(final)
    assert res.train_reward == pytest.approx(1.0)  # evaluated on train once it was picked
    assert res.heldout_reward == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["agent-reinforce", "reinforce"])
def test_the_optimisers_argmax_graph_gets_a_heldout_look(name: str) -> None:
    """The distribution's argmax graph (edges with p > threshold) is one of the held-out picks."""
    sp = small_space()
    kw: dict[str, Any] = {"agent": ScriptedAgent()} if name == "agent-reinforce" else {}
    opt = get_optimizer(name, sp, seed=1, **kw)
    st = Study.open(InMemoryStorage(), name, {})
    res = asyncio.run(run_study(st, opt, SyntheticEvaluator(sp), 6, heldout_top=2))
    argmax = opt.final_candidates()
    assert len(argmax) == 1
    keys = {graph_key(Graph.model_validate(r["graph"])) for r in st.heldout_rows()}
    assert graph_key(argmax[0]) in keys
    assert len(res.heldout) == 2


# --- (c) the resume-mismatch counter ----------------------------------------------------
def _proposal_reply(models: list[str]) -> str:
    nodes = ", ".join(f'{{"id": "n{i}", "model": "{m}"}}' for i, m in enumerate(models))
    return f'{{"graph": {{"nodes": [{nodes}]}}}}'


def test_resume_counts_proposals_that_differ_from_the_stored_trials() -> None:
    """An agent that answers differently on resume (uncached, sampling) proposes other
    graphs: each such trial is counted and the stored graph is told instead."""
    sp = small_space()
    storage = InMemoryStorage()

    def run(agent: ScriptedAgent, n: int) -> tuple[Any, TextGrad]:
        opt = TextGrad(sp, seed=0, agent=agent, mix="free")  # proposals choose models
        st = Study.open(storage, "r", {"optimizer": "textgrad"}, resume=True)
        return asyncio.run(run_study(st, opt, SyntheticEvaluator(sp), n)), opt

    first, _ = run(ScriptedAgent([_proposal_reply(["l"])]), 4)
    stored = Study(storage, "r").trials()
    proposals = [t for t in stored if t.phase == "proposal"]
    assert proposals and all(sp.mix_of(t.graph) == (0, 0, 1) for t in proposals)
    assert first.stats["resume_mismatches"] == 0

    res, opt = run(ScriptedAgent([_proposal_reply(["s", "s"])]), 6)
    # every stored trial after the first followed an agent reply; the new agent's 2x s
    # proposal is in no stored trial, so each of them differs
    assert res.stats["resume_mismatches"] == len(stored) - 1 == 3
    # the optimiser learnt from what was stored, not from what it proposed this time
    told = [graph_key(t.candidate.graph) for t in opt.history[: len(stored)]]
    assert told == [graph_key(t.graph) for t in stored]
    again = Study(storage, "r").trials()
    assert [graph_key(t.graph) for t in again[: len(stored)]] == [
        graph_key(t.graph) for t in stored
    ]
    assert any(sp.mix_of(t.graph) == (2, 0, 0) for t in again[len(stored) :])


# --- (d) the trim tie-break --------------------------------------------------------------
def test_trim_drops_the_latest_slot_among_equally_cheap_nodes() -> None:
    sp = small_space(flat=True, budget=2.0)
    g = _flat(sp, ["s", "s", "s", "s"])
    out = sp.trim(g)
    assert [n.id for n in sp.workers(out)] == ["n0", "n1"]
    # listed in another order: the same nodes survive (the slot decides, not the list order)
    rev = finalize_graph(
        list(reversed(g.model_copy(deep=True).llm_nodes)), ["n3", "n2", "n1", "n0"]
    )
    assert sorted(n.id for n in sp.workers(sp.trim(rev))) == ["n0", "n1"]


def test_trim_drops_the_cheapest_node_first() -> None:
    sp = small_space(flat=True, budget=sum(small_space().node_cost(m, 0) for m in ("l", "m")))
    g = _flat(sp, ["s", "l", "m"])
    out = sp.trim(g)
    assert [n.model for n in sp.workers(out)] == ["l", "m"]


def test_trim_keeping_nodes_drops_edges_of_the_widest_node_first() -> None:
    sp = small_space(budget=4.5)  # s costs 1 + 0.59 per input: 4.78 as given
    nodes = [
        Node(id="n0", role=Role.ASSISTANT, model="s"),
        Node(id="n1", role=Role.ASSISTANT, model="s", inputs=["n0"]),
        Node(id="n2", role=Role.ASSISTANT, model="s", inputs=["n0", "n1"]),
    ]
    g = finalize_graph(nodes, ["n2"])
    assert not sp.fits(g)
    out = sp.trim(g, keep_nodes=True)
    assert [n.id for n in sp.workers(out)] == ["n0", "n1", "n2"]
    assert sp.fits(out)
    assert out.node("n1").inputs == ["n0"]  # n2 (in-degree 2) lost its last input
    assert out.node("n2").inputs == ["n0"]
