"""Optimiser conformance suite: what every registered optimiser must do.

Inherit :class:`OptimizerConformance` in a pytest module and give it the
optimiser's registry name, as the class attribute ``optimizer_name`` or by
overriding the ``name`` fixture (e.g. parametrised over
:data:`moagraph.search.OPTIMIZERS`). Agent optimisers (agent-reinforce, textgrad)
get a :class:`ScriptedAgent` (canned replies, no LLM). Every check runs on a
scripted three-model pool and a deterministic synthetic reward; no test needs
pytest-asyncio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from moagraph.graph.spec import Graph
from moagraph.graph.testing import fake_pool
from moagraph.search import AGENT_OPTIMIZERS, get_optimizer
from moagraph.search.base import Optimizer, SearchExhaustedError, UnknownCandidateError
from moagraph.search.evaluator import EvalResult
from moagraph.search.space import SearchSpace, graph_key
from moagraph.search.storage import FAILED, InMemoryStorage
from moagraph.search.study import Study, StudyResult, TrialRow, run_study

__all__ = ["OptimizerConformance", "ScriptedAgent", "SyntheticEvaluator", "small_space"]


class ScriptedAgent:
    """An ``AgentLLM`` that answers from a list of canned replies, in turn."""

    def __init__(self, replies: Sequence[str] = ("no useful suggestion",)) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []

    async def __call__(self, prompt: str, attempt: int = 0) -> str:
        self.prompts.append(prompt)
        return self.replies[(len(self.prompts) - 1) % len(self.replies)]


def small_space(flat: bool = False, budget: float = 12.0, max_nodes: int = 4) -> SearchSpace:
    """Three scripted models s < m < l, MATH-like lengths."""
    return SearchSpace.from_pool(
        fake_pool("s", "m", "l"),
        avg_in=202,
        avg_out=275,
        budget=budget,
        max_nodes=max_nodes,
        flat=flat,
    )


class SyntheticEvaluator:
    """Deterministic reward (3 copies of m best); raises on the trial numbers in ``fail_on``."""

    def __init__(self, space: SearchSpace, fail_on: Sequence[int] = ()) -> None:
        self.space = space
        self.ids = {"train": ["q"], "heldout": ["q"]}
        self.fail_on = set(fail_on)
        self.calls = 0

    def reward(self, g: Graph) -> float:
        mix = self.space.mix_of(g)
        edges = sum(len(n.inputs) for n in g.llm_nodes)
        return 1.0 - 0.2 * abs(mix[1] - 3) - 0.1 * mix[0] - 0.1 * mix[2] + 0.05 * (edges == 1)

    async def evaluate(self, g: Graph, split: str = "train") -> EvalResult:
        n = self.calls
        self.calls += 1
        if split == "train" and n in self.fail_on:
            raise RuntimeError(f"scripted failure of evaluation {n}")
        return EvalResult(self.reward(g), self.space.graph_cost(g), 0.0, 0.0, 1)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


class OptimizerConformance:
    """The checks; subclass with ``optimizer_name`` (or override the ``name`` fixture)."""

    optimizer_name: str = ""
    trials: int = 8

    @pytest.fixture
    def name(self) -> str:
        """The optimiser under test; override this fixture to parametrise over several."""
        if not self.optimizer_name:
            pytest.fail("set optimizer_name on the subclass, or override the `name` fixture")
        return self.optimizer_name

    # --- helpers -----------------------------------------------------------
    needs_flat: frozenset[str] = frozenset({"exhaustive"})
    """Optimisers that enumerate their space: tested on flat graphs (a small space)."""

    def space(self, name: str, **kw: Any) -> SearchSpace:
        kw.setdefault("flat", name in self.needs_flat)
        return small_space(**kw)

    @staticmethod
    def make(name: str, space: SearchSpace, seed: int = 0, **options: Any) -> Optimizer:
        if name in AGENT_OPTIMIZERS:
            options.setdefault("agent", ScriptedAgent())
        return get_optimizer(name, space, seed=seed, **options)

    @staticmethod
    async def drive(opt: Optimizer, ev: SyntheticEvaluator, n: int) -> list[str]:
        """Ask/tell ``n`` times (or until finished); the proposed graphs' keys."""
        keys = []
        for _ in range(n):
            if opt.finished:
                break
            c = await opt.ask()
            keys.append(graph_key(c.graph))
            await opt.tell(c, (await ev.evaluate(c.graph)).reward)
        return keys

    def study(
        self,
        name: str,
        storage: InMemoryStorage,
        study: str,
        n: int,
        seed: int = 3,
        fail_on: Sequence[int] = (),
    ) -> tuple[StudyResult, list[TrialRow]]:
        sp = self.space(name)
        st = Study.open(storage, study, {"optimizer": name, "seed": seed}, resume=True)
        res = _run(run_study(st, self.make(name, sp, seed), SyntheticEvaluator(sp, fail_on), n))
        return res, st.trials()

    # --- the checks ----------------------------------------------------------
    def test_ask_tell_contract(self, name: str) -> None:
        async def go() -> None:
            sp = self.space(name)
            opt = self.make(name, sp)
            ev = SyntheticEvaluator(sp)
            for i in range(self.trials):
                if opt.finished:
                    break
                c = await opt.ask()
                assert c.number == i, "candidates are numbered 0, 1, 2, ... in ask order"
                assert isinstance(c.graph, Graph) and c.phase
                await opt.tell(c, (await ev.evaluate(c.graph)).reward, {"cost": 1.0})
                assert len(opt.history) == i + 1 and opt.history[-1].candidate is c
            best = opt.best()
            assert best is not None and best.reward == max(t.reward for t in opt.history)
            await opt.aclose()

        _run(go())

    def test_proposals_fit_the_space_and_budget(self, name: str) -> None:
        async def go() -> None:
            sp = self.space(name, budget=6.0, max_nodes=3)
            opt = self.make(name, sp, seed=1)
            ev = SyntheticEvaluator(sp)
            checked = 0
            for _ in range(self.trials):
                if opt.finished:
                    break
                c = await opt.ask()
                checked += 1
                assert sp.fits(c.graph), f"proposal does not fit the space: {c.graph.to_dict()}"
                assert sp.graph_cost(c.graph) <= 6.0 + 1e-9
                assert len(c.graph.llm_nodes) <= 3
                assert {n.model for n in c.graph.llm_nodes} <= {"s", "m", "l"}
                c.graph.validate_against(fake_pool("s", "m", "l"))
                await opt.tell(c, (await ev.evaluate(c.graph)).reward)
            assert checked > 1, f"{name} proposed {checked} graph(s): nothing to check"

        _run(go())

    def test_same_seed_same_proposals(self, name: str) -> None:
        async def keys(seed: int) -> list[str]:
            sp = self.space(name)
            return await self.drive(self.make(name, sp, seed), SyntheticEvaluator(sp), self.trials)

        a, b = _run(keys(5)), _run(keys(5))
        assert a == b and len(a) > 1

    def test_tell_of_an_unknown_candidate_errors(self, name: str) -> None:
        async def go() -> None:
            opt = self.make(name, self.space(name))
            with pytest.raises(UnknownCandidateError, match="never asked"):
                await opt.tell(0, 1.0)
            c = await opt.ask()
            await opt.tell(c, 0.5)
            with pytest.raises(UnknownCandidateError, match="already told"):
                await opt.tell(c, 0.5)
            with pytest.raises(UnknownCandidateError):
                await opt.fail(c.number, "again")
            assert len(opt.history) == 1

        _run(go())

    def test_finished_optimizer_raises_search_exhausted(self, name: str) -> None:
        async def go() -> None:
            sp = small_space(flat=True, budget=3.0, max_nodes=2)
            options: dict[str, Any] = {}
            if name == "agent-reinforce":
                options["guided_iterations"] = 2
            opt = self.make(name, sp, **options)
            await self.drive(opt, SyntheticEvaluator(sp), 60)
            if not opt.finished:
                pytest.skip(f"{name} never runs out of proposals (it samples with replacement)")
            with pytest.raises(SearchExhaustedError):
                await opt.ask()

        _run(go())

    def test_resume_continues_like_an_uninterrupted_study(self, name: str) -> None:
        storage = InMemoryStorage()
        full, tfull = self.study(name, storage, "full", 10)
        self.study(name, storage, "part", 4)  # "interrupted" after 4 trials
        res, tpart = self.study(name, storage, "part", 10)  # resumed
        assert [graph_key(t.graph) for t in tpart] == [graph_key(t.graph) for t in tfull]
        assert [t.reward for t in tpart] == [t.reward for t in tfull]
        assert res.stats["resume_mismatches"] == 0
        assert res.train_reward == full.train_reward
        assert graph_key(res.best_graph) == graph_key(full.best_graph)

    def test_failed_trials_are_stored_and_never_best(self, name: str) -> None:
        storage = InMemoryStorage()
        res, trials = self.study(name, storage, "f", 8, fail_on=(0, 2))
        failed = [t for t in trials if t.status == FAILED]
        assert [t.number for t in failed] == [0, 2]
        assert all(t.error and "scripted failure" in t.error for t in failed)
        assert len(trials) == 8 and res.n_failed == 2 and res.n_trials == 8
        ok = [t for t in trials if t.status != FAILED]
        only_failed = {graph_key(t.graph) for t in failed} - {graph_key(t.graph) for t in ok}
        assert graph_key(res.best_graph) not in only_failed, "a failed trial was picked as best"
        assert res.phases.get("failed") == 2
        # resuming replays the failed trials too (no re-evaluation, same proposals)
        res2, again = self.study(name, storage, "f", 8, fail_on=(0, 2))
        assert [graph_key(t.graph) for t in again] == [graph_key(t.graph) for t in trials]
        assert res2.stats["resume_mismatches"] == 0
