"""Agent-REINFORCE's pilot and pretest (issue #12): what is evaluated is what is credited."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from moagraph.search.agent_reinforce import AgentReinforce
from moagraph.search.storage import InMemoryStorage
from moagraph.search.study import Study, run_study
from moagraph.testing.search import ScriptedAgent, SyntheticEvaluator, small_space


def _run(opt: AgentReinforce, n: int = 100) -> list[Any]:
    sp = opt.space
    st = Study.open(InMemoryStorage(), "p", {})
    asyncio.run(run_study(st, opt, SyntheticEvaluator(sp), n))
    return st.trials()


@pytest.mark.parametrize("seed", range(8))
def test_each_pretest_graph_has_exactly_the_mix_it_is_credited_to(seed: int) -> None:
    sp = small_space(budget=14.0)
    opt = AgentReinforce(sp, seed=seed, agent=None, guided_iterations=1)
    trials = _run(opt)
    pre = [t for t in trials if t.phase == "pretest"]
    assert len(pre) == 3
    for t in pre:
        assert sp.mix_of(t.graph) == tuple(t.state["info"]["mix"]), t.graph
    # the fixed mix is the mix of the best pretest graph (ties: the first)
    best = max(pre, key=lambda t: (t.reward, -t.number))
    assert opt.fixed_mix == sp.mix_of(best.graph)
    guided = [t for t in trials if t.phase in ("search", "proposal")]
    assert guided and all(sp.mix_of(t.graph) == opt.fixed_mix for t in guided)


def test_pretest_rewards_are_keyed_by_the_evaluated_graphs_mix() -> None:
    sp = small_space(budget=14.0)
    agent = ScriptedAgent(['{"mixes": [0, 1, 2]}'])
    opt = AgentReinforce(sp, seed=0, agent=agent, guided_iterations=1)
    trials = _run(opt)
    pre = [t for t in trials if t.phase == "pretest"]
    assert {sp.mix_of(t.graph) for t in pre} == set(opt._pretest)
    assert opt._pretest == {sp.mix_of(t.graph): t.reward for t in pre}
