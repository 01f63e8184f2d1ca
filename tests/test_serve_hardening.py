"""Regression tests for the adversarial probe of the server (issue 10, part 4).

Each test runs the real server on loopback (uvicorn in a thread, see
``moagraph.serve.testing``) and attacks it the way the probe did, at a
bounded scale: oversized and malformed requests, half-sent requests,
browser-style cross-site requests, upstream errors that echo the API key,
a call cache locked by someone else, clients that hang up. The LLM backend
is the in-process fake of ``test_serve.py``; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from test_serve import KEY, MSGS, LengthRouter, OpenChat, WordBackend, duo, solo

from moagraph.graph.testing import fake_pool
from moagraph.models.base import BackendError, LLMRequest, SamplingParams
from moagraph.models.cache import CallCache
from moagraph.models.openai_compat import OpenAICompatBackend
from moagraph.models.pool import ModelSpec, Pool
from moagraph.models.redact import REDACTED, redact
from moagraph.models.runtime import PoolRuntime
from moagraph.serve.app import client_message, create_app
from moagraph.serve.config import ServeConfig
from moagraph.serve.http import raise_fd_limit
from moagraph.serve.log import read_rows
from moagraph.serve.runtime import ServeRuntime
from moagraph.serve.testing import ServerThread
from moagraph.store import RunStore


class Server:
    def __init__(self, srv: ServerThread, backend: WordBackend, store: Path) -> None:
        self.srv, self.backend, self.store = srv, backend, store

    @property
    def base(self) -> str:
        return self.srv.base_url

    def client(self, key: str | None = KEY, host: str | None = None) -> openai.OpenAI:
        base = self.base if host is None else f"http://{host}:{self.srv.port}"
        return openai.OpenAI(
            base_url=base + "/v1", api_key=key or "none", max_retries=0, timeout=10
        )


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """start(**config) -> a running Server with the fake pool; stopped after the test."""
    started: list[ServerThread] = []

    def _start(cache: Path | None = None, **kw: Any) -> Server:
        pool = fake_pool("small", "big", "bad", "gated", "half")
        backend = WordBackend(fail={"bad"}, gate=threading.Event())
        inner = PoolRuntime(
            pool,
            cache=CallCache(cache) if cache else None,
            overrides={m: backend for m in pool.names},
        )
        runtime = ServeRuntime(inner)
        store = tmp_path / f"serve{len(started)}.sqlite"
        served: dict[str, Any] = {
            "duo": duo(),
            "small": solo("small"),
            "gated": solo("gated"),
            "bad": solo("bad"),
            "auto": LengthRouter(runtime),
        }
        kw.setdefault("api_key", KEY)
        config = ServeConfig(store=store, log_flush_s=0.05, grace_s=2, **kw)
        app = create_app(runtime, served, config=config, task=OpenChat())
        srv = ServerThread(app, grace_s=2).start()
        started.append(srv)
        return Server(srv, backend, store)

    yield _start
    for srv in started:
        srv.stop()


def _error(r: httpx.Response) -> dict[str, Any]:
    """The OpenAI-format error body (asserts its shape)."""
    body = r.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "param", "code"} <= set(body["error"]), body
    return body["error"]


# --- budget on the real prompt length -------------------------------------------------


def test_budget_counts_the_real_prompt_not_the_task_average(start: Any) -> None:
    """The probe's 4 MB prompt got 200 under --budget-flops 50 (872x over). A short prompt
    still fits; a long one is refused before any call, naming the budget."""
    s = start(budget_flops=2.0)
    with s.client() as c:
        ok = c.chat.completions.create(model="small", messages=MSGS)  # type: ignore[arg-type]
        assert ok.choices[0].message.content
        calls = len(s.backend.requests)
        long = [{"role": "user", "content": "word " * 100_000}]  # ~125k estimated tokens
        for model in ("small", "duo", "auto"):  # graphs and a router without an estimator
            with pytest.raises(openai.BadRequestError) as e:
                c.chat.completions.create(model=model, messages=long)  # type: ignore[arg-type]
            body = e.value.body
            assert body["code"] == "budget_exceeded", body  # type: ignore[index]
            assert "budget of 2" in body["message"] and "-token prompt" in body["message"]  # type: ignore[index]
        assert len(s.backend.requests) == calls  # nothing was called for them


# --- request-size limits ------------------------------------------------------------------


def test_request_limits_are_413_and_400_in_openai_format(start: Any) -> None:
    s = start(max_body_bytes=20_000, max_messages=4, max_prompt_tokens=1_000, max_tokens_limit=64)
    hdrs = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    url = s.base + "/v1/chat/completions"
    # a body over the limit: 413 (declared length)
    big = json.dumps({"model": "small", "messages": [{"role": "user", "content": "x" * 30_000}]})
    r = httpx.post(url, content=big, headers=hdrs)
    assert r.status_code == 413 and _error(r)["code"] == "request_too_large"

    # chunked (no Content-Length): counted while streaming, refused once past the limit
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "small", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}]}'

    r = httpx.post(url, content=chunks(), headers=hdrs)
    assert r.status_code == 413 and "20,000" in _error(r)["message"]
    with s.client() as c:
        with pytest.raises(openai.APIStatusError) as e:  # the openai client sees a 413 too
            c.chat.completions.create(
                model="small", messages=[{"role": "user", "content": "z" * 30_000}]
            )
        assert e.value.status_code == 413
        many = [{"role": "user", "content": "hi"}] * 5
        with pytest.raises(openai.BadRequestError) as e2:
            c.chat.completions.create(model="small", messages=many)  # type: ignore[arg-type]
        assert e2.value.body["code"] == "too_many_messages"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as e3:  # ~2,500 tokens > 1,000
            c.chat.completions.create(
                model="small", messages=[{"role": "user", "content": "w" * 10_000}]
            )
        assert e3.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as e4:
            c.chat.completions.create(model="small", messages=MSGS, max_tokens=65)  # type: ignore[arg-type]
        assert e4.value.body["param"] == "max_tokens"  # type: ignore[index]
        assert c.chat.completions.create(model="small", messages=MSGS, max_tokens=64)  # type: ignore[arg-type]
    assert len(s.backend.requests) == 1  # only the last, valid request reached the backend


def test_oversized_body_is_refused_before_it_is_sent(start: Any) -> None:
    """A declared 100 MB body is answered 413 from the headers alone: the client never
    has to send it (the probe's 100 MB body was read and stored)."""
    s = start(max_body_bytes=1_000_000)
    with socket.create_connection((s.srv.host, s.srv.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n" + b"{" * 1000
        )
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b"request_too_large" in head or b"request body too large" in head


# --- slow clients -----------------------------------------------------------------------


def test_half_sent_requests_are_closed_and_the_server_keeps_answering(start: Any) -> None:
    """50 connections that never finish their request (silent, half a head, a head and
    half a body) must not hold the server: each is closed after the read timeout, and
    /health answers meanwhile."""
    s = start(read_timeout_s=1.0, api_key=None)
    socks: list[socket.socket] = []
    try:
        for i in range(50):
            sock = socket.create_connection((s.srv.host, s.srv.port), timeout=10)
            if i % 3 == 1:
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
            elif i % 3 == 2:
                sock.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b'Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{"mo'
                )
            socks.append(sock)
        r = httpx.get(s.base + "/health", timeout=10)  # answers at all, within the client's timeout
        assert r.status_code == 200
        closed = 0
        for sock in socks:  # the server closes each one (EOF), it does not wait for us
            data = b""
            try:
                while chunk := sock.recv(4096):
                    data += chunk
            except TimeoutError:
                continue
            closed += 1
        assert closed == len(socks)
        assert httpx.get(s.base + "/health", timeout=10).status_code == 200
    finally:
        for sock in socks:
            sock.close()


def test_fd_limit_is_raised_to_the_hard_limit() -> None:
    resource = pytest.importorskip("resource")
    got = raise_fd_limit()
    assert got is not None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == got[1] >= got[0]
    assert soft == hard or hard == resource.RLIM_INFINITY or soft >= 10240


# --- secrets -----------------------------------------------------------------------------


SECRET = "sk-live-Zq8yTtR2wQ9pL1mN4vB7xC0"


def _echoing_backend(spec: ModelSpec) -> OpenAICompatBackend:
    """An upstream that rejects the key and echoes it back, like some providers do."""

    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["authorization"].removeprefix("Bearer ")
        return httpx.Response(
            401,
            json={
                "error": {
                    "message": f"Incorrect API key provided: {key}. Header was 'Bearer {key}'",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )

    return OpenAICompatBackend(spec, transport=httpx.MockTransport(handler), backoff_s=0)


def test_upstream_error_echoing_the_key_is_redacted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import asyncio

    monkeypatch.setenv("MOAGRAPH_TEST_UPSTREAM_KEY", SECRET)
    spec = ModelSpec(
        name="up",
        backend="openai",
        base_url="http://127.0.0.1:9/v1",
        model="m",
        api_key_env="MOAGRAPH_TEST_UPSTREAM_KEY",
        params_b=1,
        layers=2,
        hidden_size=8,
    )
    backend = _echoing_backend(spec)
    # the backend's own error (what `eval` prints and stores)
    req = LLMRequest(
        model=spec,
        messages=({"role": "user", "content": "hi"},),
        params=SamplingParams(max_tokens=4),
    )
    with pytest.raises(BackendError) as e:
        asyncio.run(backend.complete(req))
    assert SECRET not in str(e.value) and REDACTED in str(e.value) and "HTTP 401" in str(e.value)
    # through the server: the 502 body and the store
    store = tmp_path / "s.sqlite"
    runtime = ServeRuntime(
        PoolRuntime(Pool(name="p", models=[spec]), overrides={"up": _echoing_backend(spec)})
    )
    app = create_app(
        runtime,
        {"up": solo("up")},
        task=OpenChat(),
        config=ServeConfig(api_key=KEY, store=store, log_flush_s=0.05),
    )
    with ServerThread(app, grace_s=2) as srv:
        r = httpx.post(
            srv.base_url + "/v1/chat/completions",
            json={"model": "up", "messages": MSGS},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=10,
        )
    assert r.status_code == 502 and SECRET not in r.text and REDACTED in r.text
    assert _error(r)["type"] == "upstream_error"
    dump = "\n".join(sqlite3.connect(store).iterdump())
    assert "HTTP 401" in dump and SECRET not in dump


def test_redact_patterns_and_client_messages() -> None:
    assert redact("Authorization: Bearer abcdef123456") == f"Authorization: {REDACTED}"
    assert SECRET not in redact(f"key {SECRET} rejected")
    assert (
        redact("GET https://h/v1?api_key=hunter22&x=1")
        == f"GET https://h/v1?api_key={REDACTED}&x=1"
    )
    assert (
        redact("token budget exceeded; basic arithmetic")
        == "token budget exceeded; basic arithmetic"
    )
    msg = client_message(
        "failed: /home/alice/models/private/gemma.gguf not found (http://127.0.0.1:8000/v1)\n"
        'Traceback (most recent call last):\n  File "/usr/lib/x.py", line 1'
    )
    assert "/home/alice" not in msg and ".../gemma.gguf" in msg and "/usr/lib" not in msg
    assert "http://127.0.0.1:8000/v1" in msg  # URLs are not file paths


def test_502_does_not_reveal_server_paths(start: Any) -> None:
    s = start()
    s.backend.fail.add("small")
    original = s.backend.complete

    async def failing(request: LLMRequest, on_token: Any = None) -> Any:
        if request.model.name == "small":
            raise BackendError(
                "cannot load /srv/secret-dir/models/small.gguf: bad magic", model="small"
            )
        return await original(request, on_token)

    s.backend.complete = failing  # type: ignore[method-assign]
    r = httpx.post(
        s.base + "/v1/chat/completions",
        json={"model": "small", "messages": MSGS},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert r.status_code == 502
    err = _error(r)
    assert "/srv/secret-dir" not in err["message"] and "small.gguf" in err["message"]


# --- browser-driven access to the no-key default ----------------------------------------


def test_no_key_server_answers_only_loopback_hosts_and_allowed_origins(start: Any) -> None:
    s = start(api_key=None)
    for host in ("127.0.0.1", "localhost"):  # the official client keeps working
        with s.client(None, host=host) as c:
            assert [m.id for m in c.models.list().data][:1] == ["duo"]
            assert c.chat.completions.create(model="small", messages=MSGS).choices  # type: ignore[arg-type]
    calls = len(s.backend.requests)
    port = s.srv.port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1", "127.0.0.1.nip.io"):
        r = httpx.get(s.base + "/v1/models", headers={"Host": host})  # DNS rebinding
        assert r.status_code in (400, 421) and _error(r)["code"] == "host_not_allowed", host
    r = httpx.post(
        s.base + "/v1/chat/completions",
        json={"model": "small", "messages": MSGS},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 403 and _error(r)["code"] == "origin_not_allowed"
    # a CORS "simple request" (text/plain needs no preflight): refused
    r = httpx.post(
        s.base + "/v1/chat/completions",
        content=json.dumps({"model": "small", "messages": MSGS}),
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 415 and _error(r)["param"] == "Content-Type"
    assert len(s.backend.requests) == calls


def test_allow_host_and_cors_origin_open_what_they_name(start: Any) -> None:
    s = start(api_key=None, allow_hosts=["moa.lan"], cors_origins=["http://ui.example"])
    port = s.srv.port
    assert httpx.get(s.base + "/health", headers={"Host": f"moa.lan:{port}"}).status_code == 200
    assert httpx.get(s.base + "/health", headers={"Host": "other.lan"}).status_code == 421
    pre = httpx.options(
        s.base + "/v1/chat/completions",
        headers={
            "Origin": "http://ui.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert (
        pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://ui.example"
    )
    r = httpx.post(
        s.base + "/v1/chat/completions",
        json={"model": "small", "messages": MSGS},
        headers={"Origin": "http://ui.example"},
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://ui.example"
    r = httpx.get(s.base + "/v1/models", headers={"Origin": "http://other.example"})
    assert r.status_code == 403


# --- SQLite never blocks the event loop ---------------------------------------------------


def test_locked_call_cache_does_not_freeze_the_server(start: Any, tmp_path: Path) -> None:
    """Another connection holds the cache file with BEGIN EXCLUSIVE: the request's cache
    write waits in the writer thread; /health and the request itself still answer."""
    cache = tmp_path / "cache.sqlite"
    s = start(cache=cache)
    with s.client() as c:
        c.chat.completions.create(model="small", messages=MSGS)  # warm: file exists, WAL
    # waits for the warm request's cache write (the writer thread) to land, then holds the file
    locker = sqlite3.connect(cache, timeout=30, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with s.client() as c:
            for q in ("A question nobody asked before?", "And another one?"):
                # the second one reads the cache while the first one's write still waits
                other = [{"role": "user", "content": q}]
                r = c.chat.completions.create(model="small", messages=other)  # type: ignore[arg-type]
                assert r.choices[0].message.content
        for _ in range(3):
            assert httpx.get(s.base + "/health", timeout=10).status_code == 200
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    s.srv.stop()  # the queued write lands once the lock is gone
    with CallCache(cache) as cc:
        assert len(cc) == 3


def test_call_cache_async_api_with_the_file_locked(tmp_path: Path) -> None:
    import asyncio

    from test_cache import completion

    path = tmp_path / "c.sqlite"
    cc = CallCache(path, busy_timeout_s=30)
    cc.put("a", completion("A"))
    locker = sqlite3.connect(path, timeout=0, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")

    async def go() -> tuple[Any, Any]:
        cc.aput("b", completion("B"))  # returns at once, lock or not
        hit = await asyncio.wait_for(cc.aget("a"), 10)
        miss = await asyncio.wait_for(cc.aget("zzz"), 10)
        return hit, miss

    try:
        hit, miss = asyncio.run(go())
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert hit is not None and hit.text == "A" and hit.cached and miss is None
    cc.flush()
    assert cc.get("b") is not None and cc.get("b").text == "B"  # type: ignore[union-attr]
    cc.close()


# --- errors, disconnects, the request log --------------------------------------------------


def test_unknown_routes_and_methods_use_openai_errors(start: Any) -> None:
    s = start()
    r = httpx.get(s.base + "/v1/nothing-here")
    assert r.status_code == 404 and _error(r)["code"] == "not_found"
    r = httpx.delete(s.base + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 405 and _error(r)["code"] == "method_not_allowed"
    with s.client() as c, pytest.raises(openai.NotFoundError):
        c.get("/nothing", cast_to=object)


def test_client_disconnect_cancels_a_non_streaming_run(start: Any) -> None:
    s = start()
    body = json.dumps({"model": "gated", "messages": MSGS}).encode()
    sock = socket.create_connection((s.srv.host, s.srv.port), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    assert s.backend.entered.wait(10)
    sock.close()  # hang up while the (gated) upstream call runs
    rows: list[dict[str, Any]] = []
    for _ in range(100):  # the row is written within one flush (0.05 s) of the cancel
        rows = [r for r in read_rows(s.store) if r["model"] == "gated"]
        if rows:
            break
        time.sleep(0.05)
    assert rows and rows[0]["status"] == "cancelled", rows
    assert "client disconnected" in rows[0]["error"]
    assert not any(c.model == "gated" for c in s.backend.completions)  # the call was stopped


def test_request_log_keeps_at_most_log_max_rows(start: Any) -> None:
    s = start(log_max_rows=10)
    hdrs = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    with httpx.Client(base_url=s.base, headers=hdrs, timeout=10) as h:
        for i in range(30):
            h.post("/v1/chat/completions", json={"model": f"nope-{i}", "messages": MSGS})
            if i % 10 == 9:
                time.sleep(0.15)  # let a flush (and prune) happen between batches
        h.post("/v1/chat/completions", json={"model": "small", "messages": MSGS})
    s.srv.stop()
    rows = read_rows(s.store)
    assert 1 <= len(rows) <= 10
    assert rows[-1]["model"] == "small" and rows[0]["model"] != "nope-0"  # oldest pruned
    with RunStore(s.store) as rs:
        assert {r.example_id for r in rs.results("serve")} <= {r["id"] for r in rows}


def test_rejected_bodies_are_stored_only_with_an_api_key(start: Any) -> None:
    for key, stored in ((None, False), (KEY, True)):
        s = start(api_key=key)
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        httpx.post(
            s.base + "/v1/chat/completions",
            content=b'{"model": "x", "messages": "secret text"',
            headers=headers,
        )
        s.srv.stop()
        rows = read_rows(s.store)
        assert len(rows) == 1 and rows[0]["status"] == "rejected"
        assert ("secret text" in json.dumps(rows[0]["request"])) is stored


# --- `serve --graph NAME=bundled` --------------------------------------------------------


def test_serve_graph_takes_bundled_graph_names() -> None:
    """`eval --graph vote3` and `serve --graph v=vote3` resolve names the same way."""
    from moagraph.serve import create_app

    app = create_app("local", graphs=["v=vote3", "m=moa2x1"], config=ServeConfig(api_key=KEY))
    assert set(app.state.served) == {"v", "m"}
    assert app.state.served["v"].info.width == 3
    with pytest.raises(ValueError, match="bundled"):
        create_app("local", graphs=["v=no-such-graph"], config=ServeConfig(api_key=KEY))
