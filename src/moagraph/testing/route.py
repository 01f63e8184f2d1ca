"""Router conformance suite: what every registered router must do.

Inherit :class:`RouterConformance` in a pytest module and give it the router's
registry name, either as the class attribute ``router_kind`` or by overriding the
``kind`` fixture (e.g. parametrised over :func:`moagraph.route.router_names`).
Every check runs on a scripted five-model pool (no network) or, for
:meth:`~RouterConformance.test_answers_on_a_replay_pool`, on the bundled replay pool
``zeroeval-math``; no test needs pytest-asyncio.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import numpy as np
import pytest

from moagraph.graph.budget import Budget, budget_scope
from moagraph.graph.run import prompt_token_bound
from moagraph.graph.testing import ArithmeticTask, ScriptedBackend, fake_pool
from moagraph.graph.trace import Trace
from moagraph.models.base import LLMRequest
from moagraph.models.cost import call_flops, unit_flops
from moagraph.models.pool import Pool
from moagraph.models.runtime import PoolRuntime
from moagraph.route import get_router_class
from moagraph.route.encoders import HashingEncoder
from moagraph.route.scorer import Scorer
from moagraph.tasks.base import Example, Task

__all__ = ["NAMES", "RouterConformance", "constant_scorer", "make_router"]

NAMES = ("m1", "m2", "m3", "m4", "m5")
PRIOR = (0.2, 0.9, 0.8, 0.1, 0.7)


def constant_scorer(pool: Pool, scores: tuple[float, ...] | list[float]) -> Scorer:
    """A real :class:`Scorer` whose head ignores the query: every prediction is ``scores``."""
    s = Scorer(HashingEncoder(16), pool.names)
    s.weights = [np.zeros((16, len(scores)), np.float32), np.asarray(scores, np.float32)]
    s.prior = np.asarray(scores)
    return s


def _respond(r: LLMRequest) -> str:
    text = r.messages[-1]["content"]
    if "Score (1-10):" in text:  # a judge call
        return "7"
    return f"{r.model.name} says the answer is 3."


def _long_respond(r: LLMRequest) -> str:
    """A reply exactly ``max_tokens`` words long (the scripted backend counts words)."""
    if "Score (1-10):" in r.messages[-1]["content"]:
        return "7"
    return " ".join(["so"] * (r.params.max_tokens - 1) + ["3"])


def make_router(kind: str, runtime: Any, scorer: Scorer, **settings: Any) -> Any:
    """Router ``kind`` on ``runtime``, dropping settings its constructor does not take
    (``k`` for the fixed baselines, ``seed`` for the deterministic ones). RouteMoA's
    ``layers`` is its ``rounds``."""
    cls = get_router_class(kind)
    if kind == "routemoa" and "layers" in settings:
        settings["rounds"] = settings.pop("layers")
    params = inspect.signature(cls).parameters
    takes_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    own = {n for n in params if n != "self"}
    if kind != "routemoa" and takes_kw:  # baselines pass **kw to the layered base
        own |= {"layers", "aggregate", "max_tokens", "max_flops_norm", "max_dollars", "name"}
        own |= {"n_inputs", "temperature", "stop", "json_schema"}
    if kind == "routemoa":
        from moagraph.route.routemoa import RouteMoAConfig

        own |= set(RouteMoAConfig.model_fields)
    kept = {k: v for k, v in settings.items() if k in own}
    if kind == "routemoa":
        return cls(scorer, runtime, **kept)
    return cls(runtime, scorer, **kept)


class RouterConformance:
    """The checks; subclass with ``router_kind`` (or override the ``kind`` fixture)."""

    router_kind: str = ""

    @pytest.fixture
    def kind(self) -> str:
        """The router under test; override this fixture to parametrise over several."""
        if not self.router_kind:
            pytest.fail("set router_kind on the subclass, or override the `kind` fixture")
        return self.router_kind

    # --- helpers -----------------------------------------------------------
    @staticmethod
    def scripted(kind: str, **settings: Any) -> tuple[Any, ScriptedBackend, Task]:
        pool = fake_pool(*NAMES)
        backend = ScriptedBackend(respond=_respond)
        runtime = PoolRuntime(pool, overrides={m: backend for m in pool.names})
        settings.setdefault("max_tokens", 64)
        router = make_router(kind, runtime, constant_scorer(pool, PRIOR), **settings)
        return router, backend, ArithmeticTask()

    @staticmethod
    def run(router: Any, example: Example, task: Task) -> Trace:
        trace: Trace = asyncio.run(router.answer(example, task))
        return trace

    # --- the checks ----------------------------------------------------------
    def test_plan_is_valid(self, kind: str) -> None:
        router, _, task = self.scripted(kind)
        for ex in task.load(n=3):
            plan = router.plan(ex, task)
            assert plan.layers and plan.layers[0], "a plan has a non-empty first layer"
            for layer in plan.layers:
                assert set(layer) <= set(NAMES), layer
                assert len(set(layer)) == len(layer), f"a model twice in one layer: {layer}"
            assert plan.ranked and set(plan.ranked) <= set(NAMES)
            assert plan.aggregator is None or plan.aggregator in NAMES

    def test_respects_k(self, kind: str) -> None:
        cls = get_router_class(kind)
        if kind != "routemoa" and "k" not in inspect.signature(cls).parameters:
            pytest.skip(f"{kind} has no k setting (its width is fixed by design)")
        router, backend, task = self.scripted(kind, k=2)
        ex = task.load(n=1)[0]
        plan = router.plan(ex, task)
        if kind != "smoa":  # SMoA: every model answers; k is how many the moderator keeps
            assert all(len(layer) <= 2 for layer in plan.layers), plan.layers
            trace = self.run(router, ex, task)
            first = [n for n in trace.nodes if n.node_id.startswith(("L1:", "R1:"))]
            assert 0 < len(first) <= 2, [n.node_id for n in trace.nodes]
        else:
            assert router.k == 2

    def test_calls_only_pool_models_and_traces_every_call(self, kind: str) -> None:
        router, backend, task = self.scripted(kind)
        ex = task.load(n=1)[0]
        trace = self.run(router, ex, task)
        assert trace.ok and trace.output, trace.error
        called = [c.model for c in backend.calls]
        assert called, "the router answered without calling any model"
        assert set(called) <= set(NAMES), called
        traced = [n for n in trace.nodes if n.model]
        assert sorted(str(n.model) for n in traced) == sorted(called)  # one node per call
        assert all(n.completion_tokens > 0 and n.flops > 0 for n in traced)
        assert trace.flops == pytest.approx(sum(n.flops for n in traced))

    def test_budget_too_small_for_any_call_makes_no_call(self, kind: str) -> None:
        router, backend, task = self.scripted(kind, max_flops_norm=0.01)
        trace = self.run(router, task.load(n=1)[0], task)
        assert backend.calls == [], [c.model for c in backend.calls]
        assert trace.flops == 0 and trace.error

    def test_budget_caps_a_run_that_makes_calls(self, kind: str) -> None:
        router, backend, task = self.scripted(kind)
        ex = task.load(n=1)[0]
        pool = router.runtime.pool
        # room for the guard's upper bound of one first-layer call of the largest model
        # (the question plus up to 1,024 tokens of the router's own instructions)
        one_call = call_flops(pool[NAMES[-1]], prompt_token_bound(task.prompt(ex)) + 1024, 64)
        budget = (
            1.05 * one_call / unit_flops(pool.models, task.avg_input_tokens, task.avg_output_tokens)
        )
        with budget_scope(Budget(max_flops_norm=budget)):  # as the server applies it
            trace = self.run(router, ex, task)
        assert backend.calls, "under a budget that allows a call, the router made none"
        assert 0 < trace.meta["flops_norm"] <= budget + 1e-9

    def test_every_call_is_reserved_within_the_budget(self, kind: str) -> None:
        """Under a sweep of budgets below and above an unbudgeted run's cost, the measured
        cost stays within each (every call, concurrent ones too, was reserved before it
        started) and every backend call is in the trace (none bypassed the query run)."""
        router, backend, task = self.scripted(kind, max_tokens=512)
        backend.respond = _long_respond  # replies of max_tokens: measured cost ~ the bound
        ex = task.load(n=1)[0]
        full = self.run(router, ex, task).meta["flops_norm"]
        capped_runs = 0
        for frac in (0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.5):
            budget = full * frac
            router, backend, task = self.scripted(kind, max_tokens=512, max_flops_norm=budget)
            backend.respond = _long_respond
            trace = self.run(router, ex, task)
            assert trace.meta["flops_norm"] <= budget * (1 + 1e-9), (frac, trace.meta)
            assert len(backend.calls) == len([n for n in trace.nodes if n.model])
            capped_runs += bool(trace.meta.get("skipped_calls"))
        assert capped_runs, "no budget of the sweep refused a call: the sweep checked nothing"

    def test_json_schema_reaches_the_backend(self, kind: str) -> None:
        schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
        seen: list[Any] = []

        def respond(r: LLMRequest) -> str:
            seen.append(r.params.json_schema)
            return _respond(r)

        router, backend, task = self.scripted(kind, json_schema=schema)
        backend.respond = respond
        self.run(router, task.load(n=1)[0], task)
        assert seen, "the router made no call"
        assert all(s == schema for s in seen), seen

    def test_estimate_flops_covers_an_unbudgeted_plan(self, kind: str) -> None:
        router, _, task = self.scripted(kind)
        ex = task.load(n=1)[0]
        est = router.estimate_flops(ex, task)
        assert est > 0
        assert router.estimate_flops(ex, task, prompt_tokens=10 * task.avg_input_tokens) > est

    def test_deterministic_with_a_seed(self, kind: str) -> None:
        task = ArithmeticTask()
        exs = task.load(n=3)
        runs = []
        for _ in range(2):
            router, backend, _ = self.scripted(kind, seed=7)
            plans = [router.plan(ex, task).layers for ex in exs]
            outputs = [self.run(router, ex, task).output for ex in exs]
            runs.append((plans, outputs, sorted((c.model, c.prompt) for c in backend.calls)))
        assert runs[0] == runs[1]

    def test_answers_on_a_replay_pool(self, kind: str) -> None:
        """One answer round on the bundled ``zeroeval-math`` replay pool: the recorded text of
        a model of the plan comes back, with no live call (a replay miss fails the run)."""
        import json
        from pathlib import Path

        from moagraph.models.pool import load_pool
        from moagraph.models.replay import ReplayStore
        from moagraph.pools import resolve_pool
        from moagraph.tasks.registry import get_task

        pool_file = resolve_pool("zeroeval-math")
        pool = load_pool(pool_file)
        names = pool.names[:5]
        pool = pool.model_copy(update={"models": [pool[m] for m in names]})
        runtime = PoolRuntime(pool)
        settings: dict[str, Any] = {"layers": 1, "aggregate": False, "max_tokens": 64}
        if kind == "routemoa":
            settings["assessment"] = "none"
        router = make_router(kind, runtime, constant_scorer(pool, PRIOR), **settings)
        first = json.loads(Path(pool_file).with_name("queries.jsonl").open().readline())
        ex = Example(id=first["query_id"], question=first["question"], reference=first["reference"])
        task = get_task("math")
        trace = self.run(router, ex, task)
        assert trace.ok, trace.error
        store = ReplayStore(pool.resolve(pool[names[0]].replay or ""))
        records = [store.get(m, query_id=ex.id, sample=0) for m in names]
        recorded = {r["text"] for r in records if r is not None}
        assert trace.output in recorded
        assert {n.model for n in trace.nodes if n.model} <= set(names)
