"""Issue #25: the local worker under attack, with real worker processes and real pipes.

A small engine stands in for llama.cpp inside the worker (the worker imports it from
this file through PYTHONPATH, as ``test_local_isolation`` does): the process, the pipes,
the protocol and the signals are the real ones.

- one unsolicited frame on the worker's pipe must fail one call, not shift every later
  answer by one (requests and replies carry ids);
- a frame that is not a JSON object, in either direction, is a protocol error that names
  itself; the worker does not keep running after one;
- a model that streams forever times out (one deadline per call);
- a SIGSTOPped worker does not outlive its killed parent, and a busy one exits within
  a second of its parent's death.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moagraph.models.base import BackendError, LLMRequest, SamplingParams
from moagraph.models.llamacpp import LlamaCppBackend
from moagraph.models.local_worker import LocalWorkerProcess, check_reply, check_request
from moagraph.models.pool import ModelSpec

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux process semantics")

HERE = Path(__file__).resolve().parent
ENGINE = "test_rel2_local_worker:WordEngine"


class WordEngine:
    """Inside the worker: answers the prompt's words; 'forever' streams without end."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def load(self) -> None:
        pass

    def close(self) -> None:
        pass

    def handle(self, op: str, payload: dict[str, Any], push: Any) -> dict[str, Any]:
        text = payload["messages"][-1]["content"]
        if text == "forever":
            while True:
                if push is not None:
                    push("la ")
                time.sleep(0.01)
        if text == "sleep":
            time.sleep(60)
        words = text.split()
        for w in words:
            if push is not None:
                push(w + " ")
        return {
            "text": " ".join(words),
            "prompt_tokens": len(words),
            "completion_tokens": len(words),
            "latency_s": 0.0,
            "finish_reason": "stop",
            "ttft_s": None,
            "prompt_format": "completion",
        }


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def wait_gone(pid: int, limit_s: float) -> float | None:
    """Seconds until ``pid`` is gone (or a zombie); None if it outlives ``limit_s``."""
    t0 = time.monotonic()
    while alive(pid):
        if time.monotonic() - t0 > limit_s:
            return None
        time.sleep(0.005)
    return time.monotonic() - t0


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelSpec:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    return ModelSpec(
        name="fake-local",
        backend="llamacpp",
        model=str(gguf),
        params_b=0.1,
        layers=2,
        hidden_size=8,
        timeout_s=20,
    )


@pytest.fixture
def backend(spec: ModelSpec) -> Iterator[LlamaCppBackend]:
    import asyncio

    b = LlamaCppBackend(spec, engine=ENGINE)
    try:
        yield b
    finally:
        asyncio.run(b.aclose())


def req(spec: ModelSpec, text: str) -> LLMRequest:
    return LLMRequest(
        model=spec,
        messages=({"role": "user", "content": text},),
        params=SamplingParams(max_tokens=8),
    )


def ask(b: LlamaCppBackend, text: str, on_token: Any = None) -> str:
    import asyncio

    return asyncio.run(b.complete(req(b.spec, text), on_token)).text


def runner(b: LlamaCppBackend) -> LocalWorkerProcess:
    r = b._runner
    assert isinstance(r, LocalWorkerProcess) and r.proc is not None
    return r


def raw_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def inject_reply(b: LlamaCppBackend, body: bytes) -> None:
    """Write a frame into the pipe the parent reads the worker's replies from, as any
    process with access to it could (here through /proc/self/fd: a second write end)."""
    r = runner(b)
    assert r.proc is not None and r.proc.stdout is not None
    fd = os.open(f"/proc/self/fd/{r.proc.stdout.fileno()}", os.O_WRONLY)
    try:
        os.write(fd, raw_frame(body))
    finally:
        os.close(fd)


STRAY = {
    "no id": {"type": "result", "result": {"text": "INJECTED"}},
    "stale id": {"id": 1, "type": "result", "result": {"text": "INJECTED"}},
    "future id": {"id": 99, "type": "token", "text": "INJECTED"},
}


@pytest.mark.parametrize("kind", list(STRAY))
def test_an_unsolicited_frame_fails_one_call_and_never_shifts_answers(
    backend: LlamaCppBackend, kind: str
) -> None:
    """Before: after one stray frame every later call returned the previous prompt's
    answer until restart. Now the call that meets it fails naming the protocol error, the
    process is replaced, and every later call gets its own answer."""
    assert ask(backend, "one two") == "one two"
    pid = runner(backend).pid
    assert pid is not None
    inject_reply(backend, json.dumps(STRAY[kind]).encode())
    with pytest.raises(BackendError, match=r"model 'fake-local': local worker protocol error"):
        ask(backend, "three four")
    assert wait_gone(pid, 10) is not None  # the out-of-step process was stopped
    for text in ("five", "six seven", "eight nine ten"):
        assert ask(backend, text) == text
    assert runner(backend).pid != pid


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"17", b"null", b"not json"])
def test_a_non_object_reply_is_a_named_protocol_error(
    backend: LlamaCppBackend, body: bytes
) -> None:
    assert ask(backend, "warm up") == "warm up"
    inject_reply(backend, body)
    with pytest.raises(BackendError, match=r"protocol error: its pipe carried a frame that is not"):
        ask(backend, "next")
    assert ask(backend, "after that") == "after that"


@pytest.mark.parametrize(
    "body", [b"[1, 2]", b'"text"', b"null", b'{"op": "generate"}', b'{"id": 5, "op": "init"}']
)
def test_a_malformed_request_makes_the_worker_exit_with_a_named_error(
    backend: LlamaCppBackend, body: bytes
) -> None:
    """Before: a non-object frame left the worker running and leaked a bare KeyError. Now
    the worker answers with a protocol error, says it in its log, and exits; the next call
    starts a fresh process."""
    assert ask(backend, "warm up") == "warm up"
    r = runner(backend)
    pid = r.pid
    assert pid is not None and r.proc is not None and r.proc.stdin is not None
    r.proc.stdin.write(raw_frame(body))
    r.proc.stdin.flush()
    assert wait_gone(pid, 10) is not None, "the worker kept running after a malformed frame"
    assert r.proc.wait(timeout=5) == 2
    assert "local worker protocol error" in r.log_tail(), r.log_tail()
    assert "KeyError" not in r.log_tail()
    assert ask(backend, "still fine") == "still fine"


def test_protocol_checks_name_the_problem() -> None:
    assert check_request([1]) == "a frame that is not a JSON object (list)"
    assert check_request({"op": "generate"}) == "a request without an integer 'id'"
    assert check_request({"id": 1, "op": "init"}) is not None
    assert check_request({"id": 1, "op": "generate", "payload": {}}) is None
    assert check_reply({"id": 3, "type": "result", "result": {}}, 3) is None
    assert "request 2 while request 3" in str(check_reply({"id": 2, "type": "token"}, 3))


def test_an_endless_token_stream_times_out(spec: ModelSpec) -> None:
    """Before: every token extended the deadline, so an endless stream never ended."""
    import asyncio

    b = LlamaCppBackend(spec.model_copy(update={"timeout_s": 2.0}), engine=ENGINE)
    try:
        assert ask(b, "load first") == "load first"  # later calls get timeout_s
        pid = runner(b).pid
        pieces: list[str] = []
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=r"streamed \d+ pieces but did not finish in 2 s"):
            ask(b, "forever", pieces.append)
        took = time.monotonic() - t0
        assert 1.9 < took < 8, took
        assert len(pieces) > 10  # it was streaming the whole time
        assert pid is not None and wait_gone(pid, 10) is not None
        assert ask(b, "then this") == "then this"
    finally:
        asyncio.run(b.aclose())


PARENT = textwrap.dedent(
    """
    import asyncio, sys, time
    from moagraph.models.base import LLMRequest
    from moagraph.models.llamacpp import LlamaCppBackend
    from moagraph.models.pool import ModelSpec
    spec = ModelSpec(name="fake-local", backend="llamacpp", model=sys.argv[1], params_b=0.1,
                     layers=2, hidden_size=8)
    b = LlamaCppBackend(spec, engine="test_rel2_local_worker:WordEngine")
    asyncio.run(b.complete(LLMRequest(model=spec, messages=({"role": "user", "content": "x"},))))
    print(b.worker_pid, flush=True)
    if sys.argv[2] == "busy":
        async def busy():
            call = asyncio.ensure_future(b.complete(LLMRequest(
                model=spec, messages=({"role": "user", "content": "sleep"},))))
            await asyncio.sleep(0.5)
            print("busy", flush=True)
            await call
        asyncio.run(busy())
    time.sleep(120)
    """
)


def _parent_with_worker(spec: ModelSpec, mode: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT, spec.model, mode], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    worker = int(proc.stdout.readline())
    assert alive(worker)
    if mode == "busy":
        assert proc.stdout.readline().strip() == "busy"
    return proc, worker


def test_a_stopped_worker_does_not_outlive_its_killed_parent(spec: ModelSpec) -> None:
    """Before: a SIGSTOPped worker (its watcher thread cannot run) stayed forever."""
    proc, worker = _parent_with_worker(spec, "idle")
    os.kill(worker, signal.SIGSTOP)
    try:
        proc.kill()
        proc.wait(timeout=30)
        assert wait_gone(worker, 5) is not None, "the stopped worker outlived its parent"
    finally:
        if alive(worker):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.parametrize("mode", ["idle", "busy"])
def test_the_worker_exits_within_a_second_of_its_parents_death(spec: ModelSpec, mode: str) -> None:
    """The docstring says at once (PR_SET_PDEATHSIG); the probe measured 1.6-2.6 s with the
    old polling watcher. Measured here from the parent's SIGKILL to the worker gone."""
    proc, worker = _parent_with_worker(spec, mode)
    proc.kill()
    took = wait_gone(worker, 10)
    proc.wait(timeout=30)
    assert took is not None, "the worker outlived its parent"
    print(f"worker gone {took * 1000:.0f} ms after its parent's SIGKILL ({mode})")
    assert took < 1.0, took
