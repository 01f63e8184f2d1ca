"""The child process that runs one local model, and its parent-side handle.

``isolation: process`` (the default for ``backend: llamacpp``) puts each
local model in its own process, ``python -m moagraph.models.local_worker``.
A native crash in llama.cpp (a segfault, an out-of-memory SIGKILL) then
kills only that process: the call in flight fails with a
:class:`~moagraph.models.base.BackendError` that names the model, the signal
and the likely fix, the next call starts a fresh process, and the run goes
on (a failing node fails its query, not the run).

Protocol: length-prefixed JSON (4-byte big-endian length, UTF-8 JSON) over
the child's stdin/stdout. The child moves its real stdout aside first and
points fd 1 at stderr, so text printed by native code can never corrupt the
stream; its stderr goes to a temporary file whose tail is quoted on a crash.

Every frame is a JSON object and carries the request's ``id`` (an int, one
per request, increasing):
parent → child: ``{"id": 0, "op": "init", "settings": {...}}`` once, then
``{"id": n, "op": "generate" | "metadata" | "load", "payload": {...}, "stream": bool}``
or ``{"id": n, "op": "shutdown"}``.
child → parent: ``{"id": n, "type": "token", "text": ...}`` while streaming, then one
``{"id": n, "type": "result", "result": {...}}`` or
``{"id": n, "type": "error", "config": bool, "message": ...}``.
A frame that breaks this (not an object, no or another ``id``, an unknown
``op`` or ``type``, a field of the wrong type) is an error on either side,
never an answer: the parent stops the process and fails the call (the next
call starts a fresh process), so one stray frame on the pipe cannot shift
every later answer by one; the child answers a malformed request with a
protocol error and exits.

A call has one deadline, ``timeout_s`` (the first call, which loads the model,
at least ``LOAD_TIMEOUT_S``), streaming or not: a model that streams tokens
forever is stopped like one that never answers.

The child cannot outlive its parent: on Linux it asks the kernel for SIGKILL
when the parent dies (``PR_SET_PDEATHSIG``: at once, even while it is stopped
with SIGSTOP or busy in native code); elsewhere it exits when its stdin closes
or, mid-call, when a watcher thread sees its parent's pid change (within
0.2 s). The parent also stops every child on ``aclose()`` and at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from typing import IO, Any

from moagraph.models.base import BackendConfigError, BackendError

PARENT_ENV = "MOAGRAPH_LOCAL_WORKER_PARENT"
"""The parent's pid, so the child can tell that its parent died before it asked for a
parent-death signal."""

TEST_CRASH_ENV = "MOAGRAPH_TEST_LOCAL_WORKER_CRASH"
"""Test-only hook: ``SIGSEGV@2`` makes the first worker process of each model kill
itself with that signal at the start of its 2nd ``generate`` call (after the model
loaded). Used by the crash-isolation tests; restarted workers never get it."""

LOAD_TIMEOUT_S = 600.0
"""Longest wait for the process to start and answer a call that must load the model."""

_HEADER = struct.Struct(">I")
_MAX_MESSAGE = 256 << 20


def encode(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    return _HEADER.pack(len(data)) + data


def signal_name(returncode: int) -> str:
    """``-11`` → ``'SIGSEGV'``; a positive code → ``'exit status N'``."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


# --- child side ------------------------------------------------------------------------------
def _read_exact(f: IO[bytes], n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class ProtocolError(ValueError):
    """A frame on the worker's pipe that breaks the protocol."""


EOF = object()
"""What the readers return at the end of the stream (a JSON ``null`` frame is None)."""


def _read_message(f: IO[bytes]) -> Any:
    """The next frame's JSON value (any type: the caller checks it); EOF at the end."""
    head = _read_exact(f, _HEADER.size)
    if head is None:
        return EOF
    (size,) = _HEADER.unpack(head)
    if size > _MAX_MESSAGE:
        raise ProtocolError(f"a {size}-byte frame (the limit is {_MAX_MESSAGE})")
    body = _read_exact(f, size)
    if body is None:
        return EOF
    try:
        return json.loads(body)
    except ValueError as e:
        raise ProtocolError(f"a frame that is not JSON ({e})") from None


_OPS = ("init", "generate", "metadata", "load", "shutdown")


def check_request(msg: Any) -> str | None:
    """What is wrong with a parent → child frame, or None."""
    if not isinstance(msg, dict):
        return f"a frame that is not a JSON object ({type(msg).__name__})"
    rid = msg.get("id")
    if type(rid) is not int:
        return "a request without an integer 'id'"
    op = msg.get("op")
    if op not in _OPS:
        return f"unknown op {op!r} (expected one of {', '.join(_OPS)})"
    if op == "init":
        settings = msg.get("settings")
        if not isinstance(settings, dict) or not isinstance(settings.get("name"), str):
            return "an 'init' without a 'settings' object naming the model"
    elif "payload" in msg and not isinstance(msg["payload"], (dict, type(None))):
        return "a 'payload' that is not a JSON object"
    return None


def check_reply(msg: Any, rid: int) -> str | None:
    """What is wrong with a child → parent frame answering request ``rid``, or None."""
    if not isinstance(msg, dict):
        return f"a frame that is not a JSON object ({type(msg).__name__})"
    if msg.get("id") != rid:
        return (
            f"a frame for request {msg.get('id')!r} while request {rid} was waiting (a stray or "
            "stale frame on the worker's pipe; answers would be out of step)"
        )
    kind = msg.get("type")
    if kind == "token" and isinstance(msg.get("text"), str):
        return None
    if kind == "result" and isinstance(msg.get("result"), dict):
        return None
    if kind == "error" and isinstance(msg.get("message"), str):
        return None
    return f"a malformed {kind!r} frame"


def _test_crash_hook(spec: str | None) -> tuple[int, signal.Signals] | None:
    if not spec:
        return None
    sig, _, call = spec.partition("@")
    return int(call or 1), signal.Signals[sig.strip().upper()]


def _exit_with_parent(period_s: float = 0.2) -> None:
    """Exit as soon as the parent is gone, even mid-call, even stopped.

    Stdin's EOF is seen only between calls, and one generation can take minutes on a
    CPU: without this, a killed search leaves its worker computing for nobody. On Linux
    the kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG), which also ends a
    SIGSTOPped worker (nothing in the worker can run then). The watcher thread is the
    fallback elsewhere (llama.cpp releases the GIL while it computes, so it runs during
    a generation).
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(
                ctypes.c_ulong(1),  # PR_SET_PDEATHSIG
                ctypes.c_ulong(signal.SIGKILL),
                ctypes.c_ulong(0),
                ctypes.c_ulong(0),
                ctypes.c_ulong(0),
            )
    expected = os.environ.get(PARENT_ENV, "")
    if expected.isdigit() and int(expected) != parent:
        os._exit(0)  # the parent died before we asked: re-parented already

    def watch() -> None:
        while True:
            time.sleep(period_s)
            if os.getppid() != parent:  # re-parented: the parent died
                os._exit(0)

    threading.Thread(target=watch, name="moagraph-parent-watch", daemon=True).start()


def main() -> int:
    """Serve one model over stdin/stdout until stdin closes or ``shutdown`` arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _exit_with_parent()
    inp = os.fdopen(os.dup(0), "rb", buffering=0)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # anything native code prints goes to stderr, not into the protocol
    sys.stdout = sys.stderr

    def send(obj: dict[str, Any]) -> None:
        out.write(encode(obj))

    engine: Any = None
    name = "?"
    crash: tuple[int, signal.Signals] | None = None
    calls = 0
    while True:
        try:
            msg = _read_message(inp)
            problem = None if msg is EOF else check_request(msg)
        except ProtocolError as e:
            msg, problem = {}, str(e)
        if msg is EOF:
            break
        if problem is not None:
            text = (
                f"model {name!r}: local worker protocol error: it got {problem}; "
                "the worker exits (the parent restarts it)"
            )
            sys.stderr.write(text + "\n")
            with contextlib.suppress(OSError):
                rid = msg.get("id") if isinstance(msg, dict) else None
                send({"id": rid, "type": "error", "config": False, "message": text})
            if engine is not None:
                engine.close()
            return 2
        rid = msg["id"]
        op = msg["op"]
        if op == "shutdown":
            break
        if op == "init":
            from moagraph.models.llamacpp import install_buffer_policy, make_engine

            settings = msg["settings"]
            name = settings["name"]
            crash = _test_crash_hook(msg.get("test_crash"))
            try:
                install_buffer_policy(bool(settings.get("extra_buffers", False)))
            except ImportError:
                pass  # LlamaEngine.load says what to install
            engine = make_engine(settings)
            continue
        push: Callable[[str], None] | None = None
        if msg.get("stream"):

            def push(text: str, rid: int = rid) -> None:
                send({"id": rid, "type": "token", "text": text})

        try:
            if engine is None:
                raise BackendError("local worker got a call before init")
            if op == "generate":
                calls += 1
                if crash is not None and calls == crash[0]:
                    engine.load()
                    os.kill(os.getpid(), crash[1])
                    time.sleep(5)  # a signal that does not kill (e.g. SIGTERM ignored) stops here
            result = engine.handle(op, msg.get("payload") or {}, push)
            send({"id": rid, "type": "result", "result": result})
        except BrokenPipeError:
            break
        except Exception as e:
            send(
                {
                    "id": rid,
                    "type": "error",
                    "config": isinstance(e, ValueError),
                    "message": str(e)
                    if isinstance(e, BackendError)
                    else f"model {name!r}: llama.cpp failed: {type(e).__name__}: {e}",
                }
            )
    if engine is not None:
        engine.close()
    return 0


# --- parent side -----------------------------------------------------------------------------
_LIVE: weakref.WeakSet[LocalWorkerProcess] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for w in list(_LIVE):
        w.close(grace_s=1.0)


class WorkerCrashed(BackendError):
    """The model's process died during a call (signal or exit); it restarts for the next one."""


class LocalWorkerProcess:
    """Parent-side handle of one model's child process. Not thread-safe: call it from one
    thread (the backend's pinned thread). Starts lazily, restarts after a crash."""

    def __init__(self, settings: dict[str, Any], *, verbose: bool = False) -> None:
        self.settings = settings
        self.name: str = settings["name"]
        self.verbose = verbose or bool(settings.get("verbose"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._buf = bytearray()
        self._log: IO[bytes] | None = None
        self._loaded = False
        self._next_id = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    # --- lifecycle -------------------------------------------------------
    def _start(self) -> None:
        self._log = None if self.verbose else tempfile.TemporaryFile()  # noqa: SIM115
        env = dict(os.environ)
        env.pop(TEST_CRASH_ENV, None)
        env[PARENT_ENV] = str(os.getpid())
        # The child imports moagraph from where this process did (a source checkout too).
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moagraph.models.local_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            close_fds=True,
        )
        self._buf.clear()
        self._loaded = False
        self._next_id = 0
        init: dict[str, Any] = {"id": self._take_id(), "op": "init", "settings": self.settings}
        if self.starts == 0 and os.environ.get(TEST_CRASH_ENV):
            init["test_crash"] = os.environ[TEST_CRASH_ENV]
        self.starts += 1
        _LIVE.add(self)
        self._send(init)

    def _take_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    def close(self, grace_s: float = 5.0) -> None:
        """Stop the process: ``shutdown`` and wait, then SIGKILL. Safe to call twice."""
        proc, self.proc = self.proc, None
        _LIVE.discard(self)
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    assert proc.stdin is not None
                    proc.stdin.write(encode({"id": self._take_id(), "op": "shutdown"}))
                    proc.stdin.flush()
                with contextlib.suppress(OSError):
                    assert proc.stdin is not None
                    proc.stdin.close()
                try:
                    proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for f in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    if f is not None:
                        f.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self.close(grace_s=2.0)

    def log_tail(self, lines: int = 6) -> str:
        if self._log is None:
            return ""
        try:
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - 4096))
            text = self._log.read().decode("utf-8", errors="replace")
        except (OSError, ValueError):
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    # --- I/O -------------------------------------------------------------
    def _send(self, obj: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(encode(obj))
        self.proc.stdin.flush()

    def _fill(self, n: int, deadline: float) -> bool:
        """Read until the buffer holds n bytes; False on EOF. Raises TimeoutError."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return False
            self._buf += chunk
        return True

    def _receive(self, deadline: float) -> Any:
        """The next frame's JSON value (checked by the caller); EOF at the end."""
        if not self._fill(_HEADER.size, deadline):
            return EOF
        (size,) = _HEADER.unpack(self._buf[: _HEADER.size])
        if size > _MAX_MESSAGE:
            raise ProtocolError(f"a {size}-byte frame (the limit is {_MAX_MESSAGE})")
        if not self._fill(_HEADER.size + size, deadline):
            return EOF
        body = bytes(self._buf[_HEADER.size : _HEADER.size + size])
        del self._buf[: _HEADER.size + size]
        try:
            return json.loads(body)
        except ValueError as e:
            raise ProtocolError(f"a frame that is not JSON ({e})") from None

    def _protocol_error(self, problem: str) -> BackendError:
        self._kill()
        return BackendError(
            f"model {self.name!r}: local worker protocol error: its pipe carried {problem}; "
            "its process was stopped and restarts for the next call",
            model=self.name,
        )

    def _crash_error(self, during: str) -> WorkerCrashed:
        proc = self.proc
        assert proc is not None
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        how = signal_name(code)
        verb = "killed by" if code < 0 else "exited with"
        hint = ""
        if code == -signal.SIGSEGV or code == -signal.SIGBUS or code == -signal.SIGILL:
            from moagraph.models.llamacpp import cpu_has_amx

            on = "on" if self.settings.get("extra_buffers") else "off"
            hint = (
                f" A native crash in llama.cpp; extra weight buffers are {on} for this model"
                + (" and this CPU has AMX" if cpu_has_amx() else "")
                + ". Workaround: set `extra_buffers: false` for this model in the pool "
                "(the default); if it persists, report it with the log below."
            )
        elif code == -signal.SIGKILL:
            hint = (
                " SIGKILL usually means the kernel's out-of-memory killer: use a smaller "
                "model or quantisation, or lower `context_length` in the pool."
            )
        tail = self.log_tail()
        self.close(grace_s=0.5)
        return WorkerCrashed(
            f"model {self.name!r}: the local model process (pid {proc.pid}) was {verb} {how} "
            f"during {during}; it restarts for the next call.{hint}"
            + (f"\nlast log lines:\n{tail}" if tail else ""),
            model=self.name,
        )

    # --- calls -----------------------------------------------------------
    def call(
        self,
        op: str,
        payload: dict[str, Any],
        push: Callable[[str], None] | None,
        timeout_s: float,
    ) -> dict[str, Any]:
        """One request/response; tokens go to ``push`` as they arrive. Blocking."""
        if self.proc is not None and self.proc.poll() is not None:
            self.close(grace_s=0)  # died between calls (killed while idle): start a fresh one
        if self.proc is None:
            self._start()
        limit = timeout_s if self._loaded else max(timeout_s, LOAD_TIMEOUT_S)
        during = "a call" if op == "generate" else f"'{op}'"
        rid = self._take_id()
        try:
            self._send({"id": rid, "op": op, "payload": payload, "stream": push is not None})
        except OSError:
            raise self._crash_error(during) from None
        # One deadline for the whole call: tokens do not extend it, so a model that streams
        # forever is stopped like one that never answers.
        deadline = time.monotonic() + limit
        push_failed = False
        pieces = 0
        while True:
            try:
                msg = self._receive(deadline)
            except TimeoutError:
                self._kill()
                what = (
                    f"streamed {pieces} pieces but did not finish" if pieces else "gave no answer"
                )
                raise BackendError(
                    f"model {self.name!r}: the local model {what} in {limit:.0f} s "
                    f"(the call's timeout, `timeout_s`); its process was stopped and restarts "
                    "for the next call. Raise `timeout_s` in the pool or lower max_tokens.",
                    model=self.name,
                ) from None
            except ProtocolError as e:
                raise self._protocol_error(str(e)) from None
            except BaseException:
                self._kill()  # the stream is out of step (or we are interrupted)
                raise
            if msg is EOF:
                raise self._crash_error(during)
            problem = check_reply(msg, rid)
            if problem is not None:
                if isinstance(msg, dict) and msg.get("type") == "error":
                    problem += f": {str(msg.get('message'))[:500]}"
                raise self._protocol_error(problem)
            kind = msg["type"]
            if kind == "token":
                pieces += 1
                if push is not None and not push_failed:
                    try:
                        push(msg["text"])
                    except Exception:
                        push_failed = True  # keep reading: the protocol must stay in step
                continue
            self._loaded = True
            if kind == "result":
                result: dict[str, Any] = msg["result"]
                return result
            cls = BackendConfigError if msg.get("config") else BackendError
            raise cls(msg["message"], model=self.name)


def running_workers() -> list[int]:
    """Pids of the local model processes this interpreter has running (for tests)."""
    return [p for w in list(_LIVE) if (p := w.pid) is not None]


if __name__ == "__main__":
    threading.current_thread().name = "local-worker"
    sys.exit(main())
