"""Server contracts that a refactor could silently break: finish_reason "length", a
request's max_tokens as a cap (never a raise), and budgets enforced for routers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from moagraph.graph.spec import Graph, Node
from moagraph.graph.testing import ScriptedBackend, fake_pool
from moagraph.models.base import Completion, LLMRequest, TokenCallback, emit
from moagraph.models.pool import ModelSpec
from moagraph.models.runtime import PoolRuntime
from moagraph.serve import ServeConfig, create_app
from moagraph.serve.runtime import ServeRuntime
from moagraph.testing.route import NAMES, PRIOR, constant_scorer, make_router

LOCAL = "http://127.0.0.1"  # the server answers loopback hosts when it has no API key
ANSWER = "one two three four five six seven eight"  # 8 tokens, one per word


@dataclass
class Words:
    """Answers ANSWER cut at max_tokens, saying "length" when it was cut (as endpoints do)."""

    requests: list[LLMRequest] = field(default_factory=list)
    kind: str = "words"

    def identity(self, model: ModelSpec) -> str:
        return f"words:{model.name}"

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        self.requests.append(request)
        words = ANSWER.split()
        cut = words[: request.params.max_tokens]
        await emit(on_token, " ".join(cut))
        return Completion(
            text=" ".join(cut),
            prompt_tokens=10,
            completion_tokens=len(cut),
            latency_s=0.0,
            model=request.model.name,
            backend=self.kind,
            finish_reason="length" if len(cut) < len(words) else "stop",
        )

    async def aclose(self) -> None:
        return None


def client(served: dict[str, Any], backend: Any, pool: Any, **config: Any) -> TestClient:
    runtime = ServeRuntime(PoolRuntime(pool, overrides={m: backend for m in pool.names}))
    return TestClient(create_app(runtime, served, config=ServeConfig(**config)), base_url=LOCAL)


def ask(c: TestClient, model: str, **body: Any) -> Any:
    return c.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Count."}], **body},
    )


def solo(max_tokens: int | None = None) -> Graph:
    return Graph(name="solo", sink="n", nodes=[Node(id="n", model="m1", max_tokens=max_tokens)])


def test_finish_reason_is_length_when_the_sink_hit_its_token_limit() -> None:
    backend, pool = Words(), fake_pool("m1")
    with client({"solo": solo()}, backend, pool) as c:
        cut = ask(c, "solo", max_tokens=3).json()
        full = ask(c, "solo", max_tokens=100).json()
        streamed = ask(c, "solo", max_tokens=3, stream=True).text
    assert cut["choices"][0]["message"]["content"] == "one two three"
    assert cut["choices"][0]["finish_reason"] == "length"
    assert full["choices"][0]["finish_reason"] == "stop"
    assert '"finish_reason":"length"' in streamed.replace(" ", "")


def test_a_requests_max_tokens_never_raises_a_nodes_limit() -> None:
    backend, pool = Words(), fake_pool("m1")
    with client({"capped": solo(max_tokens=2)}, backend, pool) as c:
        high = ask(c, "capped", max_tokens=50).json()
        low = ask(c, "capped", max_tokens=1).json()
    assert [r.params.max_tokens for r in backend.requests] == [2, 1]
    assert high["choices"][0]["message"]["content"] == "one two"
    assert low["choices"][0]["message"]["content"] == "one"


def _router_app(budget: float | None) -> tuple[TestClient, ScriptedBackend, Any]:
    pool = fake_pool(*NAMES)
    backend = ScriptedBackend(respond=lambda r: f"{r.model.name} says 3")
    runtime = ServeRuntime(PoolRuntime(pool, overrides={m: backend for m in pool.names}))
    router = make_router("routemoa", runtime, constant_scorer(pool, PRIOR), max_tokens=64)
    app = create_app(runtime, routers={"auto": router}, config=ServeConfig(budget_flops=budget))
    return TestClient(app, base_url=LOCAL), backend, router


def test_router_over_the_server_budget_is_refused_before_any_call() -> None:
    c, backend, router = _router_app(budget=1.0)  # one call of the smallest model = 1
    with c:
        r = ask(c, "auto", max_tokens=64)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "budget_exceeded"
    assert backend.calls == []


def test_router_over_a_request_budget_is_refused_before_any_call() -> None:
    c, backend, _ = _router_app(budget=None)
    with c:
        r = ask(c, "auto", max_tokens=64, moagraph={"budget_flops": 1.0})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "moagraph.budget_flops"
    assert backend.calls == []


def test_router_under_the_budget_answers_within_it() -> None:
    c, backend, router = _router_app(budget=None)
    with c:
        free = ask(c, "auto", max_tokens=64).json()
        spent = free["moagraph"]["flops_normalised"]
        n_free = len(backend.calls)
        budget = 1000.0
        r = ask(c, "auto", max_tokens=64, moagraph={"budget_flops": budget})
    assert r.status_code == 200, r.text
    assert n_free > 0 and len(backend.calls) == 2 * n_free
    assert 0 < r.json()["moagraph"]["flops_normalised"] == pytest.approx(spent)


def test_router_run_stops_at_the_budget_when_the_plan_underestimates() -> None:
    """The estimate passes (it assumes the task's average answer length), but the run's
    guard bounds each call by its max_tokens: calls that might pass the budget are skipped."""
    c, backend, router = _router_app(budget=None)
    with c:
        free = ask(c, "auto", max_tokens=64).json()
        n_free = len(backend.calls)
        est = free["moagraph"]["flops_normalised"]
        budget = est * 0.5
        router.estimate_flops = lambda *a, **k: 0.0  # an estimator that lets everything in
        r = ask(c, "auto", max_tokens=64, moagraph={"budget_flops": budget})
    body = r.json()
    assert len(backend.calls) - n_free < n_free  # fewer calls than the unbudgeted run
    if r.status_code == 200:
        assert body["moagraph"]["flops_normalised"] <= budget + 1e-9
    else:  # every call skipped: nothing was spent
        assert r.status_code == 502 and len(backend.calls) == n_free
