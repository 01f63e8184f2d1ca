"""The one interface every LLM call goes through.

Graphs, routers, the recorder and the server never talk to an endpoint
directly: they build an :class:`LLMRequest` and hand it to a :class:`Backend`.
That is what lets the same graph run on a live endpoint, a local GGUF model
or a replay of recorded outputs, and lets the SQLite cache sit in front of
all of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

from moagraph.errors import ConfigError

if TYPE_CHECKING:
    from moagraph.models.pool import ModelSpec


class ChatMessage(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


TokenCallback = Callable[[str], Awaitable[None] | None]
"""Called with each new piece of text while a completion streams."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: dict[str, Any] | None = field(default=None, hash=False)
    """Constrain the reply to JSON matching this schema (llama.cpp grammar, or an
    OpenAI-compatible ``response_format``); None leaves decoding free."""

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "stop": list(self.stop),
        }
        if self.json_schema is not None:  # only when set: existing cache keys stay valid
            d["json_schema"] = self.json_schema
        return d


@dataclass(frozen=True)
class LLMRequest:
    """One chat completion to make.

    ``sample_index`` distinguishes repeated samples of the same prompt (so the
    cache and the replay pool can hold several); ``query_id`` lets a replay
    pool answer a first-layer node by the task's query id instead of the exact
    prompt text.
    """

    model: ModelSpec
    messages: tuple[ChatMessage, ...]
    params: SamplingParams = SamplingParams()
    sample_index: int = 0
    query_id: str | None = None

    def prompt_hash(self) -> str:
        return prompt_hash(self.messages)

    def effective_seed(self) -> int:
        """Seed for this sample: ``params.seed + sample_index`` (base 0).

        Sample k of a prompt is then reproducible, and samples differ from each
        other at temperature > 0 even when the caller gives one fixed seed.
        """
        return (self.params.seed if self.params.seed is not None else 0) + self.sample_index


def prompt_hash(messages: tuple[ChatMessage, ...] | list[ChatMessage]) -> str:
    """Stable hash of a conversation (role + content only)."""
    canon = json.dumps(
        [[m["role"], m["content"]] for m in messages], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:32]


@dataclass
class Completion:
    """What a backend returns: text plus everything the cost model needs."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str
    backend: str
    cached: bool = False
    finish_reason: str = "stop"
    meta: dict[str, Any] = field(default_factory=dict)


class BackendError(RuntimeError):
    """An LLM call failed for good (after retries), or cannot be made at all."""

    def __init__(self, message: str, *, model: str | None = None, retryable: bool = False):
        super().__init__(message)
        self.model = model
        self.retryable = retryable


class BackendConfigError(BackendError, ConfigError):
    """The call cannot succeed as configured (bad key, model, URL, path).

    Also a ``ValueError`` so the CLI prints it without a traceback: the user
    fixes it in the pool file or the environment, not by retrying.
    """


class ReplayMiss(BackendError):
    """A strict replay pool has no recording for this request."""


def estimate_tokens(text: str) -> int:
    """Rough token count (~4 characters a token) for endpoints that report no usage."""
    return 0 if not text else max(1, round(len(text) / 4))


@runtime_checkable
class Backend(Protocol):
    """Async chat completion. Implementations: openai-compatible, llama.cpp, replay."""

    kind: str

    def identity(self, model: ModelSpec) -> str:
        """What distinguishes this backend's answers for ``model`` (the cache key part)."""
        ...

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        """Run one completion. ``on_token`` receives text pieces if the backend streams;
        backends that cannot stream call it once with the whole text."""
        ...

    async def aclose(self) -> None: ...


async def emit(on_token: TokenCallback | None, text: str) -> None:
    """Call a token callback that may or may not be async."""
    if on_token is None or not text:
        return
    result = on_token(text)
    if result is not None:
        await result
