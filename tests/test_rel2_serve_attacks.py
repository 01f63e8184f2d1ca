"""Regression tests for the server findings of the second adversarial probe (issue 25).

Each test runs the real server on loopback (uvicorn in a thread, see
``moagraph.serve.testing``) and replays the probe's attack at a bounded scale
with raw sockets or httpx, while legitimate traffic goes through the official
``openai`` client: oversized request heads, a body of 285k messages, a client
holding idle keep-alive connections, an unauthenticated 401 flood against the
stored results, upstream URLs in 502 bodies, a queued streaming request whose
client left. The LLM backend is the in-process fake of ``test_serve.py``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from test_serve import KEY, MSGS, OpenChat, WordBackend, solo
from test_serve_hardening import Server, _error

from moagraph.graph.testing import fake_pool
from moagraph.models.runtime import PoolRuntime
from moagraph.serve.app import create_app
from moagraph.serve.config import ServeConfig
from moagraph.serve.log import read_rows
from moagraph.serve.runtime import ServeRuntime
from moagraph.serve.testing import ServerThread
from moagraph.store import RunStore


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """start(**config) -> a running Server; "gated" takes one call at a time."""
    started: list[ServerThread] = []

    def _start(**kw: Any) -> Server:
        pool = fake_pool("small", "big", "gated", max_concurrency=1)
        backend = WordBackend(gate=threading.Event())
        runtime = ServeRuntime(PoolRuntime(pool, overrides={m: backend for m in pool.names}))
        store = tmp_path / f"serve{len(started)}.sqlite"
        kw.setdefault("api_key", KEY)
        config = ServeConfig(store=store, log_flush_s=0.05, grace_s=2, **kw)
        served = {m: solo(m) for m in ("small", "big", "gated")}
        app = create_app(runtime, served, config=config, task=OpenChat())
        srv = ServerThread(app, grace_s=2).start()
        started.append(srv)
        return Server(srv, backend, store)

    yield _start
    for srv in started:
        srv.stop()


class Pinger:
    """Times GET /health every 20 ms from another thread: the event loop's worst stall."""

    def __init__(self, base: str) -> None:
        self.base, self.worst, self.failures = base, 0.0, 0
        self.peak_rss_mb = _rss_mb()  # this process's (server and attacker) memory at its peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as h:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    if h.get("/health").status_code != 200:
                        self.failures += 1
                except httpx.HTTPError:
                    self.failures += 1
                self.worst = max(self.worst, time.perf_counter() - t0)
                self.peak_rss_mb = max(self.peak_rss_mb, _rss_mb())
                time.sleep(0.02)

    def __enter__(self) -> Pinger:
        self._thread.start()
        time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0  # pragma: no cover


def _recv_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _json_body(raw: bytes) -> dict[str, Any]:
    return json.loads(raw.partition(b"\r\n\r\n")[2])  # type: ignore[no-any-return]


# --- 1. request heads ---------------------------------------------------------------------


def test_32mb_header_block_is_cut_off_without_memory_or_stall(start: Any) -> None:
    """The probe's unauthenticated 32 MB header block raised RSS 136 -> 622 MB and stalled
    the loop 2.96 s. The head is now refused at 64 KiB, before the parser buffers it."""
    s = start()
    rss0 = _rss_mb()
    sent = 0
    chunk = b"a" * 65536
    with Pinger(s.base) as ping:
        sock = socket.create_connection((s.srv.host, s.srv.port), timeout=10)
        try:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            while sent < 32 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # reset / broken pipe: the server closed on us
            pass
        finally:
            sock.close()
        with s.client() as c:  # legitimate traffic is served meanwhile
            assert c.chat.completions.create(model="small", messages=MSGS).choices  # type: ignore[arg-type]
    grown = ping.peak_rss_mb - rss0
    print(
        f"header flood: {sent / 2**20:.1f} MiB sent before the server closed, peak RSS "
        f"+{grown:.0f} MB, worst /health {ping.worst * 1000:.0f} ms"
    )
    assert sent < 8 * 1024 * 1024, sent  # cut off (kernel buffers absorb a few MiB)
    assert grown < 100, grown  # was +486 MB
    assert ping.failures == 0 and ping.worst < 1.5, ping.worst  # was a 2.96 s stall


@pytest.fixture(params=["httptools", "h11"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with uvicorn's httptools parser (the default) and with h11 (its
    fallback when httptools is missing)."""
    from moagraph.serve import http

    if request.param == "h11":
        classes = http._protocol_classes()
        monkeypatch.setattr(http, "_protocol_classes", lambda: {"h11": classes["h11"]})
    return str(request.param)


def test_oversized_head_and_too_many_headers_get_431_in_openai_format(
    start: Any, parser: str
) -> None:
    s = start()
    assert parser.lower() in s.srv.server.config.http.__name__.lower()
    for head, needle in (
        (b"X-Big: " + b"b" * 100_000 + b"\r\n", b"--max-header-bytes"),  # one big header
        (b"".join(b"X-H%d: v\r\n" % i for i in range(150)), b"--max-headers"),  # many small
        (b"", b""),  # a long URL instead
    ):
        path = b"/v1/models" if head else b"/v1/models?" + b"q" * 100_000
        sock = socket.create_connection((s.srv.host, s.srv.port), timeout=10)
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head + b"\r\n")
        raw = _recv_all(sock)
        sock.close()
        assert raw.startswith(b"HTTP/1.1 431"), raw[:100]
        err = _json_body(raw)["error"]
        assert (
            err["code"] == "request_header_fields_too_large" and needle.decode() in err["message"]
        )
    # a normal head with a few KB of headers still passes
    r = httpx.get(
        s.base + "/v1/models",
        headers={"Authorization": f"Bearer {KEY}", "X-Pad": "p" * 8000},
    )
    assert r.status_code == 200


def test_malformed_request_gets_400_in_openai_format(start: Any, parser: str) -> None:
    s = start()
    sock = socket.create_connection((s.srv.host, s.srv.port), timeout=10)
    sock.sendall(b"GARBAGE\x01 /\r\n\r\n")
    raw = _recv_all(sock)
    sock.close()
    assert raw.startswith(b"HTTP/1.1 400"), raw[:100]
    assert _json_body(raw)["error"]["code"] == "invalid_http_request"


# --- 2. request bodies --------------------------------------------------------------------


def test_285k_messages_refused_before_validation(start: Any) -> None:
    """A body just under 8 MiB with 285k messages blocked the loop 2.4 s (four in
    parallel: 12.5 s). Now a 400 naming `messages` and the limit, in a few ms of work."""
    s = start()
    body = json.dumps(
        {"model": "small", "messages": [{"role": "user", "content": ""}] * 285_000},
        separators=(",", ":"),
    ).encode()
    assert len(body) < 8 * 1024 * 1024
    hdrs = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    answers: list[httpx.Response] = []

    def attack() -> None:
        answers.append(
            httpx.post(s.base + "/v1/chat/completions", content=body, headers=hdrs, timeout=60)
        )

    with Pinger(s.base) as ping:
        t0 = time.perf_counter()
        threads = [threading.Thread(target=attack) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        took = time.perf_counter() - t0
    print(
        f"4 x 285k messages ({len(body) / 2**20:.2f} MiB): {took:.2f} s, worst /health "
        f"{ping.worst * 1000:.0f} ms"
    )
    assert len(answers) == 4
    for r in answers:
        assert r.status_code == 400
        err = _error(r)
        assert err["param"] == "messages" and err["code"] == "too_many_messages"
        assert "285,000" in err["message"] and "1,000" in err["message"]
    assert ping.failures == 0 and ping.worst < 1.5, ping.worst  # was 2.4 s per request
    assert not s.backend.requests


def test_other_value_floods_are_refused_and_normal_bodies_pass(start: Any) -> None:
    s = start()
    hdrs = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    one = [{"role": "user", "content": "a"}]
    for extra, code in (
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 5000}]},
            "too_many_messages",
        ),
        ({"messages": one, "stop": ["x"] * 200_000}, "request_too_complex"),
        ({"messages": one, "junk": [{}] * 200_000}, "request_too_complex"),
    ):
        r = httpx.post(
            s.base + "/v1/chat/completions",
            headers=hdrs,
            timeout=30,
            content=json.dumps({"model": "small", **extra}),
        )
        assert r.status_code == 400 and _error(r)["code"] == code, r.text[:300]
    # braces and commas inside strings are text: a long code prompt is fine
    code_prompt = [{"role": "user", "content": "{[(x, y)], " * 20_000}]
    with s.client() as c:
        r2 = c.chat.completions.create(model="small", messages=code_prompt)  # type: ignore[arg-type]
        assert r2.choices[0].message.content
        many = [{"role": "user", "content": f"q{i}, {{a}}"} for i in range(1000)]
        assert c.chat.completions.create(model="small", messages=many).choices  # type: ignore[arg-type]


# --- 3. idle connections ------------------------------------------------------------------


def _idle_connection(host: str, port: int) -> socket.socket | None:
    """One keep-alive connection that has made a request and now sits idle."""
    try:
        sock = socket.create_connection((host, port), timeout=5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.recv(65536)
        return sock
    except OSError:
        return None


def test_client_holding_idle_connections_cannot_lock_others_out(start: Any, parser: str) -> None:
    """One client re-opening 1,100 idle keep-alive connections (server limit 1,000) made
    8 of 12 legitimate requests fail with plain-text 503s. Scaled down: limit 60, the
    attacker keeps 100 idle connections open (re-opening the ones the server closes)
    while 12 legitimate requests are made, from the attacker's address and another."""
    s = start(limit_concurrency=60, max_connections_per_client=40)
    host, port = s.srv.host, s.srv.port
    stop = threading.Event()
    held: list[socket.socket] = []
    opened = [0]

    def attacker() -> None:
        while not stop.is_set():
            for sock in list(held):  # re-open what the server closed
                try:
                    sock.setblocking(False)
                    if sock.recv(1) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    held.remove(sock)
                    sock.close()
            while len(held) < 100 and not stop.is_set():
                sock = _idle_connection(host, port)
                opened[0] += 1
                if sock is not None:
                    held.append(sock)
            time.sleep(0.05)

    t = threading.Thread(target=attacker, daemon=True)
    t.start()
    try:
        time.sleep(1.0)
        ok = 0
        for local in ("127.0.0.1", "127.0.0.2") * 6:
            http_client = httpx.Client(transport=httpx.HTTPTransport(local_address=local))
            with openai.OpenAI(
                base_url=s.base + "/v1",
                api_key=KEY,
                max_retries=0,
                timeout=10,
                http_client=http_client,
            ) as c:
                r = c.chat.completions.create(model="small", messages=MSGS)  # type: ignore[arg-type]
                ok += bool(r.choices[0].message.content)
    finally:
        stop.set()
        t.join(30)
        for sock in held:
            sock.close()
    print(f"12 legitimate requests: {ok} answered; the attacker opened {opened[0]} connections")
    assert ok == 12
    assert opened[0] > 100  # the server did close idle attacker connections


def test_request_concurrency_limit_answers_503_in_openai_format(start: Any) -> None:
    s = start(limit_concurrency=2)
    results: list[int] = []

    def slow() -> None:
        r = httpx.post(
            s.base + "/v1/chat/completions",
            timeout=30,
            json={"model": "gated", "messages": MSGS},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        results.append(r.status_code)

    first = threading.Thread(target=slow)
    first.start()
    assert s.backend.entered.wait(10)
    second = threading.Thread(target=slow)  # waits for the one "gated" slot
    second.start()
    time.sleep(0.3)
    try:
        r = httpx.get(s.base + "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        err = _error(r)
        assert err["code"] == "server_busy" and "--limit-concurrency" in err["message"]
    finally:
        s.backend.gate.set()  # type: ignore[union-attr]
        first.join(30)
        second.join(30)
    assert results == [200, 200]
    assert httpx.get(s.base + "/health").status_code == 200


# --- 4. the request log -------------------------------------------------------------------


def test_401_flood_does_not_evict_stored_results(start: Any) -> None:
    """9,074 wrong-key requests pruned all 4,500 stored results (rejected requests shared
    the log's row cap). Scaled down: 40 results under a 50-row cap, then 600 wrong-key
    requests: every result and its row are still there."""
    s = start(log_max_rows=50)
    with s.client() as c:
        ids = [
            c.chat.completions.create(
                model="small", messages=[{"role": "user", "content": f"question {i}?"}]
            ).id
            for i in range(40)
        ]
    with httpx.Client(base_url=s.base, timeout=10) as h:
        for i in range(600):
            key = "wrong" if i % 2 else None
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            r = h.post(
                "/v1/chat/completions", json={"model": "small", "messages": MSGS}, headers=headers
            )
            assert r.status_code == 401
            if i % 100 == 99:
                time.sleep(0.1)  # let flushes (and pruning) happen during the flood
    s.srv.stop()
    rows = read_rows(s.store)
    assert len(rows) <= 50
    assert {r["id"] for r in rows if r["status"] == "ok"} == set(ids)
    with RunStore(s.store) as rs:
        assert {r.example_id for r in rs.results("serve")} == set(ids)
    assert any(r["status"] == "rejected" for r in rows)  # the newest refusals are kept


# --- 5. upstream URLs in 502 bodies -----------------------------------------------------------


def test_502_hides_upstream_urls_and_hosts(tmp_path: Path) -> None:
    from moagraph.models.openai_compat import OpenAICompatBackend
    from moagraph.models.pool import ModelSpec, Pool

    spec = ModelSpec(
        name="up",
        backend="openai",
        base_url="http://llm-7.corp.internal:8081/v1",
        model="m",
        params_b=1,
        layers=2,
        hidden_size=8,
        max_retries=0,
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            500, text="upstream llm-7.corp.internal:8081 failed; see http://10.1.2.3:9000/status"
        )

    backend = OpenAICompatBackend(spec, transport=httpx.MockTransport(handler), backoff_s=0)
    runtime = ServeRuntime(PoolRuntime(Pool(name="p", models=[spec]), overrides={"up": backend}))
    app = create_app(
        runtime,
        {"up": solo("up")},
        task=OpenChat(),
        config=ServeConfig(api_key=KEY, store=tmp_path / "s.sqlite"),
    )
    with (
        ServerThread(app, grace_s=2) as srv,
        openai.OpenAI(base_url=srv.base_url + "/v1", api_key=KEY, max_retries=0) as c,
    ):
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model="up", messages=MSGS)  # type: ignore[arg-type]
        for stream in (False, True):
            r = httpx.post(
                srv.base_url + "/v1/chat/completions",
                timeout=10,
                json={"model": "up", "messages": MSGS, "stream": stream},
                headers={"Authorization": f"Bearer {KEY}"},
            )
            assert r.status_code == 502
            for secret in ("llm-7", "corp.internal", "8081", "10.1.2.3", "http://"):
                assert secret not in r.text, (secret, r.text)
    assert e.value.status_code == 502
    msg = e.value.body["message"]  # type: ignore[index]
    assert "[upstream URL]" in msg and "HTTP 500" in msg and "'up'" in msg, msg


# --- 6. a queued streaming request whose client left -------------------------------------------


def test_queued_streaming_request_whose_client_left_makes_no_call(start: Any) -> None:
    """ "gated" takes one call at a time. A streaming request queued behind a running one
    is abandoned by its client: its call is skipped (it used to run once the slot freed)."""
    s = start()
    first: list[int] = []
    t = threading.Thread(
        target=lambda: first.append(
            httpx.post(
                s.base + "/v1/chat/completions",
                timeout=30,
                json={"model": "gated", "messages": MSGS},
                headers={"Authorization": f"Bearer {KEY}"},
            ).status_code
        )
    )
    t.start()
    assert s.backend.entered.wait(10)
    body = json.dumps(
        {"model": "gated", "messages": [{"role": "user", "content": "later?"}], "stream": True}
    ).encode()
    sock = socket.create_connection((s.srv.host, s.srv.port), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    time.sleep(0.5)  # queued behind the first call
    sock.close()
    rows: list[dict[str, Any]] = []
    for _ in range(100):
        rows = [r for r in read_rows(s.store) if r["stream"]]
        if rows:
            break
        time.sleep(0.05)
    s.backend.gate.set()  # type: ignore[union-attr]
    t.join(30)
    time.sleep(0.3)  # had the queued call been left running, it would start now
    assert first == [200]
    assert rows and rows[0]["status"] == "cancelled", rows
    assert "disconnected" in rows[0]["error"]
    prompts = [r.messages[-1]["content"] for r in s.backend.requests]
    assert not any("later?" in p for p in prompts), prompts


def test_rows_without_a_result_are_pruned_before_results(tmp_path: Path) -> None:
    """The request log itself: past its cap, refused and cancelled rows (no trace) go
    first, whatever their age; rows with a stored result only when they alone pass it."""
    import asyncio

    from moagraph.graph.trace import Trace
    from moagraph.serve.log import RequestLog, RequestRow

    path = tmp_path / "log.sqlite"

    def ran(i: int) -> RequestRow:
        trace = Trace(query_id=f"ok{i}", policy="m", output="x")
        return RequestRow(id=f"ok{i}", model="m", status="ok", http_status=200, trace=trace)

    async def go() -> None:
        log = RequestLog(path, max_rows=10, flush_s=10)
        for i in range(8):
            log.add(ran(i))
        await log.flush()
        for i in range(300):  # refused and cancelled requests, newer than every result
            status = "rejected" if i % 2 else "cancelled"
            log.add(RequestRow(id=f"no{i}", model="m", status=status, http_status=499))
            if i % 50 == 49:
                await log.flush()
        for i in range(8, 14):  # now the results alone pass the cap: the oldest go
            log.add(ran(i))
        await log.flush()
        await log.aclose()

    asyncio.run(go())
    ids = [r["id"] for r in read_rows(path)]
    assert len(ids) <= 10
    with RunStore(path) as rs:
        kept = {r.example_id for r in rs.results("serve")}
    assert kept == {i for i in ids if i.startswith("ok")}
    assert "ok13" in kept and "ok0" not in kept and len(kept) >= 9
