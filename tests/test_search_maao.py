"""MaAO (moagraph's model-aware baseline): profile every model, then a learnt per-model surrogate."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from moagraph.search import get_optimizer
from moagraph.search.maao import MaAO
from moagraph.search.storage import InMemoryStorage
from moagraph.search.study import Study, run_study
from moagraph.testing.search import ScriptedAgent, SyntheticEvaluator, small_space


class NodeScoring(SyntheticEvaluator):
    """The synthetic reward (3 copies of m best) plus each node's own accuracy."""

    def __init__(self, space: Any, acc: dict[str, float]) -> None:
        super().__init__(space)
        self.acc = acc

    async def evaluate(self, g: Any, split: str = "train") -> Any:
        res = await super().evaluate(g, split)
        res.node_scores = {n.id: self.acc[n.model] for n in self.space.workers(g) if n.model}
        return res


def _study(opt: MaAO, ev: Any, n: int) -> list[Any]:
    st = Study.open(InMemoryStorage(), "m", {})
    asyncio.run(run_study(st, opt, ev, n))
    return st.trials()


def test_profile_scores_every_model_then_searches_mixes_by_the_surrogate() -> None:
    sp = small_space(flat=True)
    acc = {"s": 0.1, "m": 0.6, "l": 0.3}
    opt = MaAO(sp, seed=0)
    trials = _study(opt, NodeScoring(sp, acc), 6)
    prof = [t for t in trials if t.phase == "pilot"]
    assert len(prof) == opt.planned_prior_evaluations >= 1
    assert opt.profile == acc
    first = trials[len(prof)]
    # the first searched mix is the one the profile predicts best: as many m as fit
    mixes = sp.feasible_mixes(maximal=False)  # not only the budget-filling ones
    assert first.state["info"]["mix"] == list(max(mixes, key=opt_predict(acc, sp, mixes)))
    assert sp.mix_of(first.graph) == tuple(first.state["info"]["mix"])
    searched = [tuple(t.state["info"]["mix"]) for t in trials[len(prof) :]]
    assert len(set(searched)) == len(searched)  # each mix once


def opt_predict(acc: dict[str, float], sp: Any, mixes: list[Any]) -> Any:
    names = sp.model_names
    return lambda mix: (
        sum(c * acc[names[i]] for i, c in enumerate(mix)) / sum(mix),
        -mixes.index(mix),
    )


def test_surrogate_moves_each_models_value_by_its_share_of_the_error() -> None:
    sp = small_space(flat=True)
    opt = MaAO(sp, lr=0.5)
    opt.value = {"s": 0.2, "m": 0.6, "l": 0.4}
    mix = (1, 3, 0)  # predicted (0.2 + 1.8) / 4 = 0.5
    assert opt.predict(mix) == pytest.approx(0.5)
    opt._learn(mix, 0.9)  # error +0.4
    assert opt.value["s"] == pytest.approx(0.2 + 0.5 * 0.4 * 1 / 4)
    assert opt.value["m"] == pytest.approx(0.6 + 0.5 * 0.4 * 3 / 4)
    assert opt.value["l"] == pytest.approx(0.4)  # not in the mix


def test_maao_finds_the_best_mix_of_the_synthetic_reward() -> None:
    sp = small_space(flat=True)
    opt = MaAO(sp, seed=0)
    ev = NodeScoring(sp, {"s": 0.3, "m": 0.5, "l": 0.4})
    trials = _study(opt, ev, 8)
    best = max(ev.reward(sp.flat_graph(m)) for m in sp.feasible_mixes(maximal=False))
    assert best == pytest.approx(1.0)  # 3x m alone: not budget-filling (a 4th node fits)
    assert max(t.reward for t in trials) == pytest.approx(best)


def test_the_agents_pick_is_used_and_a_useless_reply_falls_back() -> None:
    sp = small_space(flat=True)
    acc = {"s": 0.1, "m": 0.6, "l": 0.3}
    agent = ScriptedAgent(['{"mixes": [2]}', "no idea"])
    opt = get_optimizer("maao", sp, seed=0, agent=agent)
    assert isinstance(opt, MaAO)

    async def go() -> list[tuple[int, ...]]:
        ev = NodeScoring(sp, acc)
        out = []
        for _ in range(opt.planned_prior_evaluations + 2):
            ranked = opt.ranked()
            c = await opt.ask()
            if c.phase == "search":
                out.append((sp.mix_of(c.graph), ranked))
            r = await ev.evaluate(c.graph)
            await opt.tell(c, r.reward, {"node_scores": r.node_scores})
        return out

    (m1, r1), (m2, r2) = asyncio.run(go())
    assert m1 == r1[2]  # the agent named mix 2 of the ranked list
    assert m2 == r2[0]  # no mix named: the surrogate's best
    assert opt.counters == {"agent_calls": 2, "agent_picks": 1, "agent_errors": 0}
    assert any("predicted" in p and "tried" in p for p in agent.prompts[1:])


def test_maao_on_a_non_flat_space_samples_graphs_with_exactly_the_mix() -> None:
    sp = small_space()
    opt = MaAO(sp, seed=0)
    trials = _study(opt, SyntheticEvaluator(sp), 6)
    for t in trials:
        if t.phase == "search":
            assert sp.mix_of(t.graph) == tuple(t.state["info"]["mix"])
