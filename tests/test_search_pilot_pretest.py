"""Agent-REINFORCE's pilot and pretest (issue #12): what is evaluated is what is credited."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from moagraph.search.agent_reinforce import AgentReinforce
from moagraph.search.evaluator import EvalResult, ExactReplayEvaluator
from moagraph.search.space import SearchSpace
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


# --- pilot="coverage" -----------------------------------------------------------------------
class NodeScoring(SyntheticEvaluator):
    """The synthetic reward, plus each node's own accuracy (fixed per model)."""

    acc: ClassVar[dict[str, float]] = {"s": 0.2, "m": 0.4, "l": 0.9}

    async def evaluate(self, g: Any, split: str = "train") -> EvalResult:
        res = await super().evaluate(g, split)
        res.node_scores = {n.id: self.acc[n.model] for n in self.space.workers(g) if n.model}
        return res


def test_coverage_pilot_scores_every_model_from_node_scores() -> None:
    sp = small_space(budget=7.0)  # s + m + l = 6 fits, with 3 nodes
    opt = AgentReinforce(sp, seed=0, agent=None, guided_iterations=1, pilot="coverage")
    st = Study.open(InMemoryStorage(), "c", {})
    asyncio.run(run_study(st, opt, NodeScoring(sp), 100))
    pilots = [t for t in st.trials() if t.phase == "pilot"]
    assert len(pilots) == 1 and sp.mix_of(pilots[0].graph) == (1, 1, 1)
    assert opt._pilot == NodeScoring.acc  # each model's own accuracy, not the graph's reward
    assert pilots[0].state["node_scores"] == {"n0": 0.2, "n1": 0.4, "n2": 0.9}
    assert opt.stats()["pilot"] == "coverage" and opt.stats()["pilot_models"] == ["l", "m", "s"]


def test_size_pilot_can_miss_the_best_model_and_coverage_does_not() -> None:
    """Five models, the best is the middle one: the size pilot (smallest, largest,
    second-smallest) never runs it; the coverage pilot does, and the mix heuristic
    (no agent) then ranks mixes with it first."""
    from moagraph.graph.testing import fake_pool

    names = ("a", "b", "c", "d", "e")
    sp = SearchSpace.from_pool(
        fake_pool(*names), avg_in=202, avg_out=275, budget=12.0, max_nodes=4, flat=True
    )

    class Acc(NodeScoring):
        acc: ClassVar[dict[str, float]] = {"a": 0.1, "b": 0.2, "c": 0.8, "d": 0.3, "e": 0.4}

        def reward(self, g: Any) -> float:
            ws = [self.acc[n.model] for n in self.space.workers(g) if n.model]
            return sum(ws) / len(ws)

    by_size = sorted(sp.models, key=lambda m: m.n_params)
    assert by_size[len(by_size) // 2].name == "c"
    res = {}
    for mode in ("size", "coverage"):
        opt = AgentReinforce(sp, seed=0, agent=None, guided_iterations=1, pilot=mode)
        st = Study.open(InMemoryStorage(), mode, {})
        asyncio.run(run_study(st, opt, Acc(sp), 100))
        res[mode] = opt
    assert "c" not in res["size"]._pilot
    assert res["coverage"]._pilot == pytest.approx(Acc.acc)
    assert all(mix[2] > 0 for mix in res["coverage"]._candidates)  # every candidate has c
    fixed = res["coverage"].fixed_mix
    assert fixed is not None and fixed[2] > 0


def test_coverage_groups_fit_and_cover_every_model_that_fits_alone() -> None:
    sp = small_space(budget=4.5, max_nodes=2)  # l (3.0) alone or with s; m + s
    opt = AgentReinforce(sp, seed=0, pilot="coverage")
    groups = opt._coverage_groups()
    assert sorted(m for g in groups for m in g) == ["l", "m", "s"]
    for g in groups:
        assert sp.mix_fits([int(m in g) for m in sp.model_names])
    assert len(groups) == 2
    assert opt.planned_prior_evaluations == 2 + 3


def test_unknown_pilot_mode_names_the_choices() -> None:
    with pytest.raises(ValueError, match="coverage"):
        AgentReinforce(small_space(), pilot="best")


def test_exact_replay_node_scores_are_each_models_own_accuracy() -> None:
    from moagraph.graph.testing import ArithmeticTask, fake_pool

    task = ArithmeticTask()
    exs = task.load(n=10)
    sp = SearchSpace.from_pool(
        fake_pool("a", "b"), task, budget=8.0, max_nodes=3, flat=True, max_copies=2
    )
    recs = []
    for m, wrong_every in (("a", 2), ("b", 5)):
        for i, ex in enumerate(exs):
            for s in range(2):
                ans = ex.reference + (1 if (i + s) % wrong_every == 0 else 0)
                recs.append({"model": m, "query_id": ex.id, "sample": s, "text": f"so it is {ans}"})
    ev = ExactReplayEvaluator.from_records(recs, sp, exs, [], mode="vote", task=task)
    g = sp.flat_graph([2, 1])  # n0 = a sample 0, n1 = a sample 1, n2 = b sample 0
    res = ev.evaluate_sync(g)
    singles = {
        "n0": ev.evaluate_sync(sp.flat_graph([1, 0])).reward,
        "n2": ev.evaluate_sync(sp.flat_graph([0, 1])).reward,
    }
    assert res.node_scores["n0"] == pytest.approx(singles["n0"])
    assert res.node_scores["n2"] == pytest.approx(singles["n2"])
    assert set(res.node_scores) == {"n0", "n1", "n2"}
    assert res.node_scores["n0"] != res.node_scores["n2"]


def test_a_resumed_coverage_pilot_gets_its_node_scores_back() -> None:
    sp = small_space(budget=7.0)
    storage = InMemoryStorage()

    def run(n: int) -> AgentReinforce:
        opt = AgentReinforce(sp, seed=0, agent=None, guided_iterations=2, pilot="coverage")
        st = Study.open(storage, "r", {}, resume=True)
        asyncio.run(run_study(st, opt, NodeScoring(sp), n))
        return opt

    run(1)  # interrupted right after the pilot
    resumed = run(100)
    assert resumed._pilot == NodeScoring.acc


def test_prepare_search_passes_pilot_to_agent_reinforce_only() -> None:
    from moagraph.errors import ConfigError
    from moagraph.search import prepare_search

    kw: dict[str, Any] = dict(
        split="zeroeval",
        budget=4,
        flat=True,
        models=["gemma-2-9b-it", "Meta-Llama-3-8B-Instruct"],
        train_n=4,
        heldout_n=2,
        test_n=2,
    )
    setup = prepare_search(
        "zeroeval-math", "math", optimizer="agent-reinforce", agent=ScriptedAgent(),
        pilot="coverage", **kw
    )  # fmt: skip
    assert isinstance(setup.optimizer, AgentReinforce) and setup.optimizer.pilot == "coverage"
    assert setup.config["optimizer_options"]["pilot"] == "coverage"  # a resume key
    assert setup.optimizer.mixes == "all"  # auto: the replay pool's sink is a vote
    mixed = prepare_search(
        "zeroeval-math", "math", optimizer="agent-reinforce", agent=ScriptedAgent(),
        mixes="maximal", **kw
    )  # fmt: skip
    assert isinstance(mixed.optimizer, AgentReinforce) and mixed.optimizer.mixes == "maximal"
    assert mixed.optimizer.pilot == "coverage"  # auto, independently of --mixes
    with pytest.raises(ConfigError, match="--mixes applies to --optimizer agent-reinforce"):
        prepare_search("zeroeval-math", "math", optimizer="random", mixes="all", **kw)
    with pytest.raises(ConfigError, match="--pilot applies to --optimizer agent-reinforce"):
        prepare_search("zeroeval-math", "math", optimizer="random", pilot="coverage", **kw)
    with pytest.raises(ConfigError, match="--pilot 'best'"):
        prepare_search(
            "zeroeval-math", "math", optimizer="agent-reinforce", agent=ScriptedAgent(),
            pilot="best", **kw
        )  # fmt: skip


def test_mixes_all_offers_mixes_that_do_not_fill_the_budget() -> None:
    """With a vote sink one strong model can beat it plus weak voters: mixes="all" can pick it."""
    sp = small_space(budget=7.0, flat=True)  # 1x l (3.0) leaves room: not budget-filling

    class Acc(NodeScoring):
        acc: ClassVar[dict[str, float]] = {"s": 0.1, "m": 0.2, "l": 0.9}

    got = {}
    for mixes in ("maximal", "all"):
        opt = AgentReinforce(
            sp, seed=0, agent=None, guided_iterations=1, pilot="coverage", mixes=mixes
        )
        _ = asyncio.run(run_study(Study.open(InMemoryStorage(), mixes, {}), opt, Acc(sp), 100))
        got[mixes] = opt._candidates
    maximal = set(sp.feasible_mixes(maximal=True))
    assert set(got["maximal"]) <= maximal
    assert got["all"][0] == (0, 0, 1)  # l alone: the best count-weighted pilot accuracy
    assert (0, 0, 1) not in maximal
    with pytest.raises(ValueError, match="mixes='some'"):
        AgentReinforce(sp, mixes="some")


def test_planned_prior_evaluations_count_only_the_mixes_that_exist() -> None:
    """One budget-filling mix (every model once): one pretest, not n_candidates."""
    from moagraph.graph.testing import fake_pool

    sp = SearchSpace.from_pool(  # one copy each: s + m + l (5.98) is the only full mix
        fake_pool("s", "m", "l"), avg_in=202, avg_out=275, budget=6.0, max_nodes=3, flat=True,
        max_copies=1,
    )  # fmt: skip
    assert sp.feasible_mixes(maximal=True) == [(1, 1, 1)]
    opt = AgentReinforce(
        sp, seed=0, agent=None, guided_iterations=2, n_candidates=3, mixes="maximal"
    )
    trials = _run(opt)
    pilots = sum(t.phase == "pilot" for t in trials)
    assert sum(t.phase == "pretest" for t in trials) == 1
    assert opt.planned_prior_evaluations == pilots + 1
    assert len(trials) == opt.planned_prior_evaluations + 2


def test_auto_pilot_and_mixes_follow_the_sink() -> None:
    """Paper's size/maximal with an LLM output node; coverage/all with a free vote sink."""
    from moagraph.graph.testing import fake_pool

    kw: dict[str, Any] = dict(avg_in=202, avg_out=275, budget=6.0, max_nodes=3, flat=True)
    vote = SearchSpace.from_pool(fake_pool("s", "m", "l"), sink_mode="vote", **kw)
    llm = SearchSpace.from_pool(fake_pool("s", "m", "l"), sink_mode="llm", output_model="m", **kw)
    v, m = AgentReinforce(vote, agent=None), AgentReinforce(llm, agent=None)
    assert (v.pilot, v.mixes) == ("coverage", "all")
    assert (m.pilot, m.mixes) == ("size", "maximal")
    explicit = AgentReinforce(vote, agent=None, pilot="size", mixes="maximal")
    assert (explicit.pilot, explicit.mixes) == ("size", "maximal")
