"""The OpenAI-compatible server, run for real (uvicorn on 127.0.0.1) and called
with the official ``openai`` client. The LLM backend is an in-process fake
(zero latency, deterministic, streams word by word): that is the one part
stubbed, since what is under test is the orchestration and the wire format.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import openai
import pytest

from moagraph.graph.cost import task_unit_flops
from moagraph.graph.executor import GraphExecutor
from moagraph.graph.spec import Graph, Node, Role
from moagraph.graph.testing import fake_pool
from moagraph.graph.trace import Trace
from moagraph.models.base import BackendError, Completion, LLMRequest, TokenCallback, emit
from moagraph.models.cost import call_dollars, call_flops
from moagraph.models.pool import ModelSpec
from moagraph.models.runtime import PoolRuntime
from moagraph.serve.app import create_app
from moagraph.serve.config import ServeConfig, ServeConfigError
from moagraph.serve.log import read_rows
from moagraph.serve.runtime import ServeRuntime
from moagraph.serve.testing import ServerThread
from moagraph.store import RunStore
from moagraph.tasks.base import Example, Task

KEY = "sk-test-moagraph"


class OpenChat(Task):
    """Open chat: no reference answer; the output is the answer."""

    name: ClassVar[str] = "chat"
    kind: ClassVar[Any] = "chat"
    avg_input_tokens: ClassVar[int] = 120
    avg_output_tokens: ClassVar[int] = 200

    def load(self, split: str = "test", n: int | None = None, seed: int = 0) -> list[Example]:
        return []

    def extract(self, text: str) -> Any:
        return text.strip() or None

    def grade(self, text: str, example: Example) -> float:
        return 0.0


@dataclass
class WordBackend:
    """Deterministic fake LLM: answers with words derived from the prompt, one token per
    word, streamed word by word; honours max_tokens; records every request."""

    fail: set[str] = field(default_factory=set)
    gate: threading.Event | None = None  # "gated" model: waits for it after its first word
    entered: threading.Event = field(default_factory=threading.Event)
    requests: list[LLMRequest] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)
    kind: str = "words"

    def identity(self, model: ModelSpec) -> str:
        return f"words:{model.name}"

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        self.requests.append(request)
        name = request.model.name
        if name in self.fail:
            raise BackendError(f"endpoint for {name} returned HTTP 503", model=name)
        last = request.messages[-1]["content"]
        words = [name, "answers"] + last.split()[:6] + [f"({len(request.messages)} msgs)"]
        words = words[: request.params.max_tokens]
        for i, w in enumerate(words):
            await emit(on_token, w if i == 0 else " " + w)
            if name == "half" and i == 1:
                raise BackendError("connection reset after 2 tokens", model=name)
            if name == "gated" and i == 0:
                self.entered.set()
                assert self.gate is not None
                for _ in range(2000):  # until the client has seen the first chunk
                    if self.gate.is_set():
                        break
                    await asyncio.sleep(0.005)
                else:
                    raise BackendError("the client never received the first token", model=name)
            await asyncio.sleep(0)
        prompt_tokens = sum(len(m["content"].split()) for m in request.messages)
        c = Completion(
            text=" ".join(words),
            prompt_tokens=prompt_tokens,
            completion_tokens=len(words),
            latency_s=0.001 * len(words),
            model=name,
            backend=self.kind,
        )
        self.completions.append(c)
        return c

    async def aclose(self) -> None:
        return None


def duo() -> Graph:
    return Graph(
        name="duo",
        sink="agg",
        nodes=[
            Node(id="a", model="small"),
            Node(id="b", model="big"),
            Node(id="agg", role=Role.AGGREGATOR, model="big", inputs=["a", "b"]),
        ],
    )


def solo(model: str) -> Graph:
    return Graph(name=model, sink="only", nodes=[Node(id="only", model=model)])


class LengthRouter:
    """A per-query router: short questions to `small`, long ones to `big`."""

    name = "auto"
    description = "length router (test)"

    def __init__(self, runtime: ServeRuntime) -> None:
        self.models = ["small", "big"]
        self.runtime = runtime
        self.executors: dict[int, GraphExecutor] = {}

    async def answer(self, example: Example, task: Task, on_token: Any = None) -> Trace:
        model = "small" if len(example.question) < 40 else "big"
        ex = self.executors.setdefault(id(task), GraphExecutor(self.runtime, task))  # type: ignore[arg-type]
        trace = await ex.run(solo(model), example, on_token=on_token)
        trace.meta["routed_to"] = model
        return trace


@dataclass
class Served:
    srv: ServerThread
    backend: WordBackend
    store: Path
    client: openai.OpenAI

    @property
    def base(self) -> str:
        return self.srv.base_url


def _start(
    tmp_path: Path, *, api_key: str | None = KEY, grace_s: float = 5.0, budget: float | None = None
) -> tuple[ServerThread, WordBackend, Path]:
    pool = fake_pool("small", "big", "bad", "gated", "half")
    backend = WordBackend(fail={"bad"}, gate=threading.Event())
    runtime = ServeRuntime(PoolRuntime(pool, overrides={m: backend for m in pool.names}))
    store = tmp_path / "serve.sqlite"
    served: dict[str, Any] = {
        "duo": duo(),
        "small": solo("small"),
        "bad": solo("bad"),
        "gated": solo("gated"),
        "half": solo("half"),
        "auto": LengthRouter(runtime),
    }
    config = ServeConfig(
        api_key=api_key, store=store, budget_flops=budget, grace_s=grace_s, log_flush_s=0.05
    )
    app = create_app(runtime, served, config=config, task=OpenChat())
    srv = ServerThread(app, grace_s=grace_s).start()
    return srv, backend, store


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    srv, backend, store = _start(tmp_path)
    client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    try:
        yield Served(srv, backend, store, client)
    finally:
        client.close()
        srv.stop()


MSGS = [{"role": "user", "content": "What is the capital of France?"}]


# --- models ------------------------------------------------------------------


def test_list_models_describes_graphs_and_routers(served: Served) -> None:
    models = {m.id: m for m in served.client.models.list().data}
    assert set(models) == {"duo", "small", "bad", "gated", "half", "auto"}
    duo_info = models["duo"].model_extra["moagraph"]  # type: ignore[index]
    assert models["duo"].owned_by == "moagraph" and models["duo"].object == "model"
    assert duo_info["kind"] == "graph"
    assert duo_info["models"] == ["big", "small"]
    assert (duo_info["width"], duo_info["depth"]) == (2, 2)
    assert [n["id"] for n in duo_info["nodes"]] == ["a", "b", "agg"]
    assert (
        duo_info["estimated_flops_normalised"]
        > models["small"].model_extra["moagraph"]["estimated_flops_normalised"]
        == pytest.approx(1.0)
    )
    auto = models["auto"].model_extra["moagraph"]  # type: ignore[index]
    assert auto["kind"] == "router" and auto["models"] == ["small", "big"]
    assert served.client.models.retrieve("duo").id == "duo"


# --- completions -------------------------------------------------------------


def test_completion_runs_graph_and_sums_usage_over_nodes(served: Served) -> None:
    r = served.client.chat.completions.create(model="duo", messages=MSGS)  # type: ignore[arg-type]
    assert r.object == "chat.completion" and r.model == "duo"
    text = r.choices[0].message.content
    assert text is not None and text.startswith("big answers")  # the sink (aggregator) speaks
    calls = served.backend.completions
    assert len(calls) == 3  # a, b, agg
    assert r.usage is not None
    assert r.usage.prompt_tokens == sum(c.prompt_tokens for c in calls)
    assert r.usage.completion_tokens == sum(c.completion_tokens for c in calls)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    ext = r.model_extra["moagraph"]  # type: ignore[index]
    assert ext["trace_id"] == r.id and ext["policy"] == "duo" and ext["kind"] == "graph"
    assert ext["calls"] == 3 and {n["id"] for n in ext["nodes"]} == {"a", "b", "agg"}
    assert sum(n["prompt_tokens"] for n in ext["nodes"]) == r.usage.prompt_tokens
    pool = served.srv.server.config.app.state.runtime.pool
    assert ext["flops"] == pytest.approx(
        sum(call_flops(pool[c.model], c.prompt_tokens, c.completion_tokens) for c in calls)
    )
    assert ext["flops_normalised"] == pytest.approx(
        ext["flops"] / task_unit_flops(pool, OpenChat())
    )
    assert ext["dollars"] == pytest.approx(
        sum(call_dollars(pool[c.model], c.prompt_tokens, c.completion_tokens) for c in calls)
    )
    assert ext["dollars"] > 0
    # critical path: one first-layer node then the aggregator, not the sum of all three
    lat = {n["id"]: n["latency_s"] for n in ext["nodes"]}
    assert ext["latency_s"] == pytest.approx(max(lat["a"], lat["b"]) + lat["agg"])


def test_conversation_history_reaches_every_node(served: Served) -> None:
    msgs = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Remember the word zebra."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Which word?"},
    ]
    served.client.chat.completions.create(model="duo", messages=msgs)  # type: ignore[arg-type]
    assert len(served.backend.requests) == 3  # every node of duo was called (a, b, agg)
    for req in served.backend.requests:
        contents = [m["content"] for m in req.messages]
        assert req.messages[0] == {"role": "system", "content": "Be terse."}
        assert "Remember the word zebra." in contents and "Noted." in contents
        assert req.messages[-1]["content"].startswith("Which word?")


def test_temperature_and_max_tokens_reach_every_call(served: Served) -> None:
    r = served.client.chat.completions.create(
        model="duo",
        messages=MSGS,
        temperature=0.7,
        max_tokens=3,  # type: ignore[arg-type]
        seed=5,
        frequency_penalty=0.1,
        logit_bias={},
        user="someone",  # unknown-to-us fields
    )
    assert len(served.backend.requests) == 3
    for req in served.backend.requests:
        assert req.params.temperature == 0.7 and req.params.max_tokens == 3 and req.params.seed == 5
    assert r.usage is not None and r.usage.completion_tokens == 9
    assert r.choices[0].message.content == "big answers What"  # cut at 3 tokens


def test_router_is_served_like_a_graph(served: Served) -> None:
    short = served.client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Hi"}]
    )
    long = served.client.chat.completions.create(
        model="auto",
        messages=MSGS
        + [
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And the capital of Germany, please, in one word?"},
        ],
    )
    assert short.choices[0].message.content.startswith("small answers")  # type: ignore[union-attr]
    assert long.choices[0].message.content.startswith("big answers")  # type: ignore[union-attr]
    assert short.model_extra["moagraph"]["kind"] == "router"  # type: ignore[index]


def test_streaming_matches_non_streaming(served: Served) -> None:
    full = served.client.chat.completions.create(model="duo", messages=MSGS)  # type: ignore[arg-type]
    chunks = list(served.client.chat.completions.create(model="duo", messages=MSGS, stream=True))  # type: ignore[arg-type]
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 3  # word by word, not one blob
    assert "".join(pieces) == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None and full.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        full.usage.prompt_tokens,
        full.usage.completion_tokens,
    )
    ext = last.model_extra["moagraph"]  # type: ignore[index]
    assert ext["trace_id"] == last.id and ext["calls"] == 3
    assert len({c.id for c in chunks}) == 1


def test_stream_chunks_arrive_while_the_sink_is_still_generating(served: Served) -> None:
    """The gated model blocks after its first word until the client has *received* that
    word: a buffering server would deadlock and the backend would fail the request."""
    stream = served.client.chat.completions.create(model="gated", messages=MSGS, stream=True)  # type: ignore[arg-type]
    got: list[str] = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            got.append(chunk.choices[0].delta.content)
            served.backend.gate.set()  # type: ignore[union-attr]
    assert got[0] == "gated" and len(got) > 2
    assert "".join(got).startswith("gated answers What is")


# --- auth --------------------------------------------------------------------


def test_wrong_or_missing_key_is_401_before_any_work(served: Served) -> None:
    bad = openai.OpenAI(base_url=served.base + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="duo", messages=MSGS)  # type: ignore[arg-type]
    assert e.value.status_code == 401
    assert e.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    # no header at all, and an invalid body: still 401, not 400
    r = httpx.post(served.base + "/v1/chat/completions", content=b"{not json")
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["type"] == "authentication_error" and "Authorization" in err["message"]
    assert set(err) == {"message", "type", "param", "code"}
    assert served.backend.requests == []


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOAGRAPH_API_KEY", "from-env")
    assert ServeConfig.with_env(port=0).api_key == "from-env"
    assert ServeConfig.with_env(api_key="explicit").api_key == "explicit"
    with pytest.raises(ServeConfigError, match="--port"):
        ServeConfig.with_env(port=70000)


# --- errors ------------------------------------------------------------------


def _post(s: Served, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        s.base + "/v1/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "duo"}, "messages"),
        ({"model": "duo", "messages": []}, "messages"),
        ({"model": "duo", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "duo", "messages": MSGS, "temperature": 5}, "temperature"),
        ({"model": "duo", "messages": MSGS, "max_tokens": 0}, "max_tokens"),
        ({"model": "duo", "messages": MSGS, "n": 3}, "n"),
        ({"messages": MSGS}, "model"),
        ({"model": "duo", "messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        (
            {"model": "duo", "messages": MSGS, "moagraph": {"budget_flops": -1}},
            "moagraph.budget_flops",
        ),
    ],
)
def test_bad_bodies_are_400_naming_the_field(served: Served, body: Any, param: str) -> None:
    r = _post(served, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"
    assert f"`{param}`" in err["message"]
    assert served.backend.requests == []


def test_invalid_json_and_openai_client_bad_request(served: Served) -> None:
    r = _post(served, b'{"model": "duo", "messages": [')
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    with pytest.raises(openai.BadRequestError) as e:
        served.client.chat.completions.create(model="duo", messages=MSGS, temperature=3.5)  # type: ignore[arg-type]
    assert e.value.body["param"] == "temperature"  # type: ignore[index]


def test_unknown_model_is_404_listing_served_models(served: Served) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        served.client.chat.completions.create(model="gpt-7", messages=MSGS)  # type: ignore[arg-type]
    body = e.value.body
    assert body["code"] == "model_not_found" and body["param"] == "model"  # type: ignore[index]
    for name in ("duo", "small", "auto"):
        assert name in body["message"]  # type: ignore[index]
    assert served.backend.requests == []


def test_upstream_failure_is_502_naming_the_node(served: Served) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        served.client.chat.completions.create(model="bad", messages=MSGS)  # type: ignore[arg-type]
    assert e.value.status_code == 502
    body = e.value.body
    assert body["param"] == "only" and "'only'" in body["message"] and "'bad'" in body["message"]  # type: ignore[index]
    assert "HTTP 503" in body["message"]  # type: ignore[index]
    # streaming: the failure comes before the first token, so it is still a clean 502
    with pytest.raises(openai.APIStatusError) as e2:
        list(served.client.chat.completions.create(model="bad", messages=MSGS, stream=True))  # type: ignore[arg-type]
    assert e2.value.status_code == 502


@pytest.fixture
def budgeted(tmp_path: Path) -> Iterator[Served]:
    srv, backend, store = _start(tmp_path, budget=2.5)
    client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    try:
        yield Served(srv, backend, store, client)
    finally:
        client.close()
        srv.stop()


def test_failure_after_streaming_began_is_an_error_event(served: Served) -> None:
    """Headers (200) are out once tokens flow: the failure then comes as an OpenAI-style
    error event, which the openai client raises, and no [DONE] pretends it finished."""
    got: list[str] = []
    with pytest.raises(openai.APIError) as e:
        for chunk in served.client.chat.completions.create(
            model="half", messages=MSGS, stream=True
        ):  # type: ignore[arg-type]
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert "".join(got) == "half answers"
    assert "'only'" in str(e.value) and "connection reset" in str(e.value)


def test_over_budget_is_400_with_zero_backend_calls(budgeted: Served) -> None:
    served = budgeted
    with pytest.raises(openai.BadRequestError) as e:  # server budget 2.5 < duo's estimate
        served.client.chat.completions.create(model="duo", messages=MSGS)  # type: ignore[arg-type]
    body = e.value.body
    assert body["code"] == "budget_exceeded" and "2.5" in body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as e2:  # per-request budget, below one small call
        served.client.chat.completions.create(
            model="small", messages=MSGS, extra_body={"moagraph": {"budget_flops": 0.5}}
        )  # type: ignore[arg-type]
    assert e2.value.body["param"] == "moagraph.budget_flops"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        list(served.client.chat.completions.create(model="duo", messages=MSGS, stream=True))  # type: ignore[arg-type]
    assert served.backend.requests == []
    # a small max_tokens shrinks the estimate (B is capped), so the same graph fits
    ok = served.client.chat.completions.create(model="duo", messages=MSGS, max_tokens=20)  # type: ignore[arg-type]
    assert ok.choices[0].message.content


def test_rows_and_traces_land_in_sqlite(tmp_path: Path) -> None:
    srv, backend, store = _start(tmp_path)
    client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key=KEY, max_retries=0)
    try:
        ok = client.chat.completions.create(model="duo", messages=MSGS)  # type: ignore[arg-type]
        list(client.chat.completions.create(model="small", messages=MSGS, stream=True))  # type: ignore[arg-type]
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="bad", messages=MSGS)  # type: ignore[arg-type]
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=MSGS)  # type: ignore[arg-type]
        httpx.get(srv.base_url + "/v1/models", headers={"Authorization": "Bearer wrong"})
        httpx.post(srv.base_url + "/v1/chat/completions", json={"model": "duo"})
    finally:
        client.close()
        srv.stop()  # graceful stop flushes the log
    rows = read_rows(store, "serve")
    by_status = [(r["model"], r["status"], r["http_status"]) for r in rows]
    assert by_status == [
        ("duo", "ok", 200),
        ("small", "ok", 200),
        ("bad", "error", 502),
        ("nope", "rejected", 404),
        (None, "rejected", 401),
    ]
    first = rows[0]
    assert first["id"] == ok.id == first["trace_id"]
    assert first["prompt_tokens"] == ok.usage.prompt_tokens  # type: ignore[union-attr]
    # the body is not stored twice: the request row keeps its parameters, the trace the prompts
    assert first["request"]["model"] == "duo" and first["request"]["n_messages"] == 1
    assert "messages" not in first["request"]
    assert rows[1]["stream"] == 1
    with RunStore(store) as rs:
        trace = rs.trace("serve", ok.id)
        assert any(MSGS[0]["content"] in m["content"] for n in trace.nodes for m in n.prompt)
        assert [n.node_id for n in trace.nodes if n.node_id == "agg"] == ["agg"]
        assert trace.output == ok.choices[0].message.content
        assert {r.example_id for r in rs.results("serve")} == {
            rows[0]["id"],
            rows[1]["id"],
            rows[2]["id"],
        }
        assert rs.results("serve")[2].error is not None


def test_graceful_shutdown_lets_inflight_request_finish(tmp_path: Path) -> None:
    srv, backend, store = _start(tmp_path, grace_s=20)
    client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key=KEY, max_retries=0)
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["r"] = client.chat.completions.create(model="gated", messages=MSGS)  # type: ignore[arg-type]
        except Exception as e:
            result["e"] = e

    t = threading.Thread(target=call)
    t.start()
    assert backend.entered.wait(20)
    stopper = threading.Thread(target=srv.stop)
    stopper.start()  # shutdown begins while the request is in flight
    time.sleep(0.3)
    backend.gate.set()  # type: ignore[union-attr]
    t.join(30)
    stopper.join(30)
    client.close()
    assert "e" not in result, result.get("e")
    assert result["r"].choices[0].message.content.startswith("gated answers")
    assert [r["status"] for r in read_rows(store)] == ["ok"]


def test_shutdown_cancels_cleanly_after_grace_period(tmp_path: Path) -> None:
    srv, backend, store = _start(tmp_path, grace_s=0.3)
    client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key=KEY, max_retries=0)
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["r"] = client.chat.completions.create(model="gated", messages=MSGS)  # type: ignore[arg-type]
        except Exception as e:
            result["e"] = e

    t = threading.Thread(target=call)
    t.start()
    assert backend.entered.wait(20)
    srv.stop()  # gate never opens: the request outlives the grace period
    t.join(30)
    client.close()
    assert "r" not in result  # no partial answer passed off as a full one
    rows = read_rows(store)
    assert [(r["model"], r["status"]) for r in rows] == [("gated", "cancelled")]


# --- the `serve` command ---------------------------------------------------------


def test_cli_rejects_bad_options_without_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from moagraph.cli import _register, app

    _register()
    runner = CliRunner()
    r = runner.invoke(app, ["serve", "--graph", "no-equals-sign"])
    assert r.exit_code == 2 and "Error:" in r.output and "NAME=PATH" in r.output
    r = runner.invoke(app, ["serve", "--graph", f"x={tmp_path / 'missing.yaml'}"])
    assert r.exit_code == 2 and "does not exist" in r.output
    g = tmp_path / "g.yaml"
    solo("not-in-pool").save(g)
    r = runner.invoke(app, ["serve", "--graph", f"x={g}"])
    assert r.exit_code == 2 and "not-in-pool" in r.output and "Traceback" not in r.output


def test_cli_serves_the_local_pool_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`moagraph serve` with no --graph: each pool model is a one-node graph. Real
    process, real signal: SIGTERM takes uvicorn's graceful path (lifespan shutdown runs)."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "moagraph"
    env = {**os.environ, "MOAGRAPH_API_KEY": "k-env"}
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", str(port), "--store", str(tmp_path / "s.sqlite")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(base + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        client = openai.OpenAI(base_url=base + "/v1", api_key="k-env", max_retries=0)
        models = client.models.list().data
        ids = [m.id for m in models]  # one single-node graph per model of the local pool
        assert "gemma-270m" in ids
        info = models[ids.index("gemma-270m")].model_extra["moagraph"]  # type: ignore[index]
        assert info["kind"] == "graph" and info["models"] == ["gemma-270m"]
        assert (info["width"], info["depth"]) == (1, 1)
        assert httpx.get(base + "/v1/models").status_code == 401  # key from the environment
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    # uvicorn re-raises the signal once shut down cleanly, so -SIGTERM is the normal code
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out
    assert "gemma-270m" in out  # the startup table
