"""Optimisers on a synthetic reward (their logic), exhaustive optimum, studies: resume + determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moagraph.errors import ConfigError
from moagraph.graph.testing import fake_pool
from moagraph.search import UnknownOptimizerError, get_optimizer, optimizer_names
from moagraph.search.evaluator import EvalResult
from moagraph.search.exhaustive import enumerate_graphs
from moagraph.search.space import SearchSpace, graph_key
from moagraph.search.study import Study, StudyError, run_study


def space(flat: bool = False) -> SearchSpace:
    return SearchSpace.from_pool(
        fake_pool("s", "m", "l"), avg_in=202, avg_out=275, budget=12.0, max_nodes=4, flat=flat
    )


class Synthetic:
    """Deterministic reward: 3 copies of m best; small bonus for one m->m edge."""

    def __init__(self, sp: SearchSpace) -> None:
        self.space = sp
        self.ids = {"train": ["q"], "heldout": ["q"]}
        self.calls = 0

    async def evaluate(self, g, split="train") -> EvalResult:
        self.calls += 1
        mix = self.space.mix_of(g)
        edges = sum(len(n.inputs) for n in g.llm_nodes)
        r = (
            1.0
            - 0.2 * abs(mix[1] - 3)
            - 0.1 * mix[0]
            - 0.1 * mix[2]
            + (0.05 if edges == 1 else 0.0)
        )
        return EvalResult(r, self.space.graph_cost(g), 0.0, float(len(g.llm_nodes)), 1)


async def _run(tmp_path, name: str, seed: int, n: int, study_name: str = "s", flat: bool = False):
    sp = space(flat)
    # textgrad: the agent-chosen mix variant (the default fixes one random mix, tested below)
    opt = get_optimizer(name, sp, seed=seed, **({"mix": "free"} if name == "textgrad" else {}))
    st = Study.open(
        tmp_path / "st.sqlite", study_name, {"optimizer": name, "seed": seed}, resume=True
    )
    res = await run_study(st, opt, Synthetic(sp), n)
    trials = st.trials()
    st.close()
    return res, trials


@pytest.mark.parametrize("name", ["random", "reinforce", "bayesopt", "agent-reinforce", "textgrad"])
async def test_optimiser_improves_over_its_first_proposals(tmp_path, name: str) -> None:
    gains = []
    for seed in range(3):
        res, trials = await _run(tmp_path, name, seed, 40, study_name=f"{name}-{seed}")
        first = np.mean([t.reward for t in trials[:5]])
        gains.append(res.train_reward - first)
        assert res.train_reward >= max(t.reward for t in trials[:5])
    assert np.mean(gains) > 0.1


async def test_reinforce_concentrates_probability_on_good_models(tmp_path) -> None:
    sp = space(flat=True)
    opt = get_optimizer("reinforce", sp, seed=0, batch=4)
    st = Study.open(tmp_path / "r.sqlite", "r", {})
    await run_study(st, opt, Synthetic(sp), 80)
    p = opt.dist.probabilities()["models"]
    mean_m = np.mean([p[f"n{i}"]["m"] for i in range(4)])
    assert mean_m > 1 / 4 + 0.1  # started uniform-ish over s, m, l, off


async def test_exhaustive_finds_the_known_optimum(tmp_path) -> None:
    sp = space(flat=True)
    graphs = enumerate_graphs(sp)
    assert (
        len({graph_key(g) for g in graphs}) == len(graphs) == len(sp.feasible_mixes(maximal=False))
    )
    res, trials = await _run(tmp_path, "exhaustive", 0, 10_000, flat=True)
    assert len(trials) == len(graphs)
    assert sp.mix_of(res.best_graph) == (0, 3, 0)
    assert res.train_reward == pytest.approx(1.0)


def test_exhaustive_refuses_huge_spaces() -> None:
    with pytest.raises(ValueError, match="exceed"):
        enumerate_graphs(space(), limit=1000)


async def test_same_seed_same_study(tmp_path) -> None:
    for name in ("random", "reinforce", "bayesopt", "agent-reinforce"):
        a, ta = await _run(tmp_path, name, 7, 15, study_name=f"{name}-a")
        b, tb = await _run(tmp_path, name, 7, 15, study_name=f"{name}-b")
        c, tc = await _run(tmp_path, name, 8, 15, study_name=f"{name}-c")
        assert [graph_key(t.graph) for t in ta] == [graph_key(t.graph) for t in tb]
        assert [graph_key(t.graph) for t in ta] != [graph_key(t.graph) for t in tc]


@pytest.mark.parametrize("name", ["random", "reinforce", "bayesopt", "agent-reinforce"])
async def test_resume_continues_exactly(tmp_path, name: str) -> None:
    full, tfull = await _run(tmp_path, name, 3, 16, study_name="full")
    await _run(tmp_path, name, 3, 7, study_name="part")  # "interrupted" after 7
    res, tpart = await _run(tmp_path, name, 3, 16, study_name="part")  # --resume
    assert [graph_key(t.graph) for t in tpart] == [graph_key(t.graph) for t in tfull]
    assert res.stats["resume_mismatches"] == 0
    assert res.train_reward == full.train_reward


async def test_resume_skips_evaluations(tmp_path) -> None:
    sp = space()
    ev = Synthetic(sp)
    st = Study.open(tmp_path / "x.sqlite", "x", {"optimizer": "random"})
    await run_study(st, get_optimizer("random", sp, seed=0), ev, 5)
    calls = ev.calls
    await run_study(st, get_optimizer("random", sp, seed=0), ev, 8)
    assert ev.calls - calls <= 3 + 3  # 3 new trials (+ held-out re-evaluations)
    assert len(st.trials()) == 8


def test_study_exists_without_resume_and_config_mismatch(tmp_path) -> None:
    Study.open(tmp_path / "s.sqlite", "a", {"optimizer": "random", "seed": 0}).close()
    with pytest.raises(StudyError, match="--resume"):
        Study.open(tmp_path / "s.sqlite", "a", {"optimizer": "random", "seed": 0})
    with pytest.raises(StudyError, match="seed"):
        Study.open(tmp_path / "s.sqlite", "a", {"optimizer": "random", "seed": 1}, resume=True)


async def test_multi_objective_pareto_front(tmp_path) -> None:
    sp = space()
    st = Study.open(tmp_path / "m.sqlite", "m", {})
    res = await run_study(
        st, get_optimizer("random", sp, seed=0), Synthetic(sp), 20, multi_objective=True
    )
    assert res.pareto
    for p in res.pareto:  # nobody dominates a front member
        for t in st.trials():
            assert not (t.reward > p.reward and t.cost < p.cost and t.latency < p.latency)
    assert json.loads(json.dumps(st.result()))["pareto"]


def test_unknown_optimizer_lists_known() -> None:
    with pytest.raises(UnknownOptimizerError, match="agent-reinforce"):
        get_optimizer("sgd", space())
    assert set(optimizer_names()) == {
        "agent-reinforce",
        "reinforce",
        "random",
        "bayesopt",
        "textgrad",
        "exhaustive",
        "maao",
    }


async def test_textgrad_fixes_one_seeded_random_mix_as_the_official_baseline(tmp_path) -> None:
    """model_initialize_textgrad (FairyFali/AgentRE): one random mix, fixed for the whole run."""
    sp = space(flat=True)
    offered = set(sp.feasible_mixes(maximal=False))  # vote sink: auto offers every feasible mix
    picks = {}
    for seed in range(6):
        opt = get_optimizer("textgrad", sp, seed=seed)
        st = Study.open(tmp_path / "tg.sqlite", f"tg-{seed}", {}, resume=True)
        await run_study(st, opt, Synthetic(sp), 6)
        mixes = {sp.mix_of(t.graph) for t in st.trials()}
        st.close()
        assert mixes == {opt.fixed_mix} and opt.fixed_mix in offered
        assert opt.stats()["mix"] == "random"
        picks[seed] = opt.fixed_mix
    assert get_optimizer("textgrad", sp, seed=3).fixed_mix == picks[3]  # same seed, same mix
    assert len(set(picks.values())) > 1  # a random draw, not a fixed choice
    with pytest.raises(ConfigError, match="mix='some'"):
        get_optimizer("textgrad", sp, mix="some")
