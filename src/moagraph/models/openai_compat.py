"""Any OpenAI-compatible ``/v1/chat/completions`` endpoint.

vLLM, Ollama, llama.cpp's server, OpenRouter and OpenAI itself all speak
this dialect. We talk to it with plain httpx and our own retry loop (not the
openai SDK) because a search runs thousands of calls against self-hosted
servers: we want backoff with jitter that honours ``Retry-After``, errors
that tell the user what to fix, and SSE streaming with usage from the final
chunk, all without hidden retries stacked on ours.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from typing import Any

import httpx

from moagraph.models.base import (
    BackendConfigError,
    BackendError,
    Completion,
    LLMRequest,
    TokenCallback,
    emit,
    estimate_tokens,
)
from moagraph.models.pool import ModelSpec
from moagraph.models.redact import redact, register_secret_env

_HINTS = {
    400: "check the request: `model`, `max_tokens` within the context length, supported params",
    401: "set `api_key_env` in the pool to the environment variable holding the key, and export it",
    403: "the key lacks access to this model; check `api_key_env` and the account",
    404: "check `model` (the endpoint's model id) and `base_url` (it usually ends in /v1)",
    422: "the endpoint rejected a parameter; check `model` and the sampling params",
}


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date)."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return str(err)[:500]
    return json.dumps(body)[:500]


class OpenAICompatBackend:
    """Chat completions over HTTP with retries and optional SSE streaming.

    ``backoff_s``/``backoff_cap_s`` shape the exponential backoff (full
    jitter: a retry waits uniform(0, min(cap, backoff_s * 2**attempt))),
    unless the server says how long to wait with ``Retry-After``.
    """

    kind = "openai"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        backoff_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        max_retry_after_s: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not spec.base_url:
            raise BackendConfigError(
                f"model {spec.name!r}: backend 'openai' needs `base_url`", model=spec.name
            )
        self.spec = spec
        # The key's value is redacted from every error this process reports (see redact.py).
        register_secret_env([spec.api_key_env])
        self.backoff_s = backoff_s
        self.backoff_cap_s = backoff_cap_s
        self.max_retry_after_s = max_retry_after_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rng = random.Random()

    @property
    def url(self) -> str:
        assert self.spec.base_url is not None
        return self.spec.base_url.rstrip("/") + "/chat/completions"

    def identity(self, model: ModelSpec) -> str:
        return f"openai:{(model.base_url or '').rstrip('/')}:{model.endpoint_model}"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        env = self.spec.api_key_env
        if env:
            key = os.environ.get(env)
            if not key:
                raise BackendConfigError(
                    f"model {self.spec.name!r}: environment variable {env} (from `api_key_env`) "
                    f"is not set; export {env}=<your key>",
                    model=self.spec.name,
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _client_for_loop(self) -> httpx.AsyncClient:
        # Created lazily inside the running loop (nothing connects at import or construction),
        # and again if a later asyncio.run() uses another loop: a client is bound to its loop.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._loop is not loop:
            self._loop = loop
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.spec.timeout_s, connect=min(10.0, self.spec.timeout_s)),
                transport=self._transport,
                limits=httpx.Limits(max_connections=self.spec.max_concurrency * 2),
            )
        return self._client

    def _body(self, request: LLMRequest, stream: bool, usage_opt: bool) -> dict[str, Any]:
        p = request.params
        body: dict[str, Any] = {
            "model": request.model.endpoint_model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in request.messages],
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
            "seed": request.effective_seed(),
        }
        if p.stop:
            body["stop"] = list(p.stop)
        if p.json_schema is not None:  # structured output (vLLM, llama.cpp server, OpenAI)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": p.json_schema},
            }
        if stream:
            body["stream"] = True
            if usage_opt:
                body["stream_options"] = {"include_usage": True}
        return body

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s)
        return self._rng.uniform(0, min(self.backoff_cap_s, self.backoff_s * 2**attempt))

    def _redact(self, message: str) -> str:
        """Upstream text with credentials removed: endpoints echo rejected keys."""
        env = self.spec.api_key_env
        return redact(message, [os.environ.get(env) if env else None])

    def _fail_fast(self, response: httpx.Response) -> BackendConfigError:
        status = response.status_code
        hint = _HINTS.get(status, "check the pool entry (`base_url`, `model`, `api_key_env`)")
        return BackendConfigError(
            self._redact(
                f"model {self.spec.name!r}: {self.url} answered HTTP {status}: "
                f"{_error_message(response)} (hint: {hint})"
            ),
            model=self.spec.name,
        )

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        headers = self._headers()
        stream = on_token is not None
        usage_opt = True
        delays: list[float] = []
        t0 = time.perf_counter()
        attempt = 0
        while True:
            emitted = [False]
            try:
                body = self._body(request, stream, usage_opt)
                if stream:
                    result = await self._stream(body, headers, on_token, emitted)
                else:
                    result = await self._once(body, headers)
                break
            except _StreamOptionsRejected:
                usage_opt = False  # old servers reject stream_options; estimate usage instead
                continue
            except _Retryable as e:
                if emitted[0] or attempt >= self.spec.max_retries:
                    raise BackendError(
                        self._redact(
                            f"model {self.spec.name!r}: {self.url} failed after {attempt + 1} "
                            f"attempt(s): {e}"
                        ),
                        model=self.spec.name,
                        retryable=True,
                    ) from None
                delay = self._backoff(attempt, e.retry_after)
                delays.append(delay)
                attempt += 1
                await asyncio.sleep(delay)
        text, pt, ct, finish, extra = result
        meta: dict[str, Any] = {"attempts": attempt + 1, **extra}
        if delays:
            meta["retry_delays_s"] = delays
        if pt is None or ct is None:
            meta["usage_estimated"] = True
            pt = (
                pt
                if pt is not None
                else sum(estimate_tokens(m["content"]) for m in request.messages)
            )
            ct = ct if ct is not None else estimate_tokens(text)
        return Completion(
            text=text,
            prompt_tokens=int(pt),
            completion_tokens=int(ct),
            latency_s=time.perf_counter() - t0,
            model=request.model.name,
            backend=self.kind,
            finish_reason=finish,
            meta=meta,
        )

    def _check(self, response: httpx.Response, body: dict[str, Any]) -> None:
        status = response.status_code
        if status < 400:
            return
        if status == 429 or status >= 500:
            raise _Retryable(
                f"HTTP {status}: {_error_message(response)}", _retry_after(response.headers)
            )
        if (
            status == 400
            and "stream_options" in body
            and "stream_options" in _error_message(response)
        ):
            raise _StreamOptionsRejected()
        raise self._fail_fast(response)

    async def _once(
        self, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[str, int | None, int | None, str, dict[str, Any]]:
        client = self._client_for_loop()
        try:
            response = await client.post(self.url, json=body, headers=headers)
        except (httpx.TimeoutException, httpx.TransportError) as e:
            raise _Retryable(f"{type(e).__name__}: {e}") from None
        self._check(response, body)
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise BackendError(
                self._redact(
                    f"model {self.spec.name!r}: {self.url} returned no chat completion ({e!r}): "
                    f"{response.text[:300]}"
                ),
                model=self.spec.name,
            ) from None
        usage = data.get("usage") or {}
        return (
            text,
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            choice.get("finish_reason") or "stop",
            {},
        )

    async def _stream(
        self,
        body: dict[str, Any],
        headers: dict[str, str],
        on_token: TokenCallback | None,
        emitted: list[bool],
    ) -> tuple[str, int | None, int | None, str, dict[str, Any]]:
        client = self._client_for_loop()
        pieces: list[str] = []
        usage: dict[str, Any] = {}
        finish = "stop"
        t0 = time.perf_counter()
        ttft: float | None = None
        try:
            async with client.stream("POST", self.url, json=body, headers=headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self._check(response, body)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    try:
                        chunk = json.loads(payload)
                    except json.JSONDecodeError:
                        continue
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content") or ""
                        if piece:
                            if ttft is None:
                                ttft = time.perf_counter() - t0
                            pieces.append(piece)
                            emitted[0] = True
                            await emit(on_token, piece)
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
        except (httpx.TimeoutException, httpx.TransportError) as e:
            raise _Retryable(f"{type(e).__name__}: {e}") from None
        extra = {"ttft_s": ttft} if ttft is not None else {}
        # Without usage, count content chunks: vLLM, llama.cpp and Ollama send one token each.
        ct = usage.get("completion_tokens", len(pieces) if not usage else None)
        return "".join(pieces), usage.get("prompt_tokens"), ct, finish, extra

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class _StreamOptionsRejected(Exception):
    pass
