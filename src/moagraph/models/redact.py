"""Redact credentials from text that may leave the process (errors, logs, stores).

An upstream endpoint that rejects a key often echoes it ("Incorrect API key
provided: sk-abc..."). Such a message becomes a :class:`BackendError`, and
from there it would reach a served client's 502 body, the run store, the
call cache and CLI output. :func:`redact` is applied where upstream errors
are made (``openai_compat``) and again where the server answers, so a key
never travels further than the request that carried it.

Two kinds of secret are removed:

- known values: the API keys in the environment variables that pools name in
  ``api_key_env`` (registered with :func:`register_secret_env`), and any value
  passed to :func:`register_secret`;
- shapes: ``sk-...``-style keys, ``Bearer <token>``, ``api_key=...`` /
  ``"api_key": "..."`` / ``token=`` / ``password=``, and ``user:pass@`` in URLs.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from typing import Any

__all__ = [
    "REDACTED",
    "redact",
    "redact_config",
    "redact_url",
    "register_secret",
    "register_secret_env",
]

REDACTED = "[REDACTED]"

_lock = threading.Lock()
_secrets: set[str] = set()
_env_names: set[str] = set()

# Shorter values are not treated as secrets: redacting "1" or "ab" would mangle text.
_MIN_SECRET_LEN = 6

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization headers: "Authorization: <scheme> <credentials>", "Bearer <token>"
    (re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)[^\r\n\"',;}]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=\-]{6,}"), rf"\1\2{REDACTED}"),
    # key=value, key: value, "key": "value" for credential-looking names
    (
        re.compile(
            r"(?i)([\"']?\b(?:api[_-]?key|apikey|access[_-]?token|auth[_-]?token|secret|"
            r"password|passwd|token|x-api-key)[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;}]{3,})"
        ),
        rf"\1{REDACTED}",
    ),
    # provider key shapes: sk-..., sk-proj-..., sk_live_..., hf_..., gsk_..., xai-..., AIza...
    (
        re.compile(
            r"\b(?:sk|rk|pk)[-_](?:[A-Za-z0-9]+[-_])*[A-Za-z0-9]{8,}|"
            r"\b(?:hf|gsk|ghp|gho|xoxb|xoxp)_[A-Za-z0-9]{8,}|\bxai-[A-Za-z0-9]{8,}|"
            r"\bAIza[0-9A-Za-z_\-]{20,}"
        ),
        REDACTED,
    ),
    # credentials in URLs: scheme://user:pass@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@"), rf"\1{REDACTED}@"),
]


def register_secret(value: str | None) -> None:
    """Redact this exact value from now on (e.g. the server's own --api-key)."""
    if value and len(value.strip()) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(value.strip())


def register_secret_env(names: Iterable[str | None]) -> None:
    """Redact the current (and future) values of these environment variables."""
    with _lock:
        _env_names.update(n for n in names if n)


def _known() -> list[str]:
    with _lock:
        values = set(_secrets)
        names = set(_env_names)
    for n in names:
        v = os.environ.get(n)
        if v and len(v.strip()) >= _MIN_SECRET_LEN:
            values.add(v.strip())
    return sorted(values, key=len, reverse=True)  # longest first: no partial leftovers


def redact(text: str | None, extra: Iterable[str | None] = ()) -> str:
    """``text`` with every known secret value and credential-shaped string replaced."""
    if not text:
        return text or ""
    out = text
    values = _known()
    values += [v for v in extra if v and len(v) >= _MIN_SECRET_LEN]
    for v in values:
        if v in out:
            out = out.replace(v, REDACTED)
    for pattern, repl in _PATTERNS:
        out = pattern.sub(repl, out)
    return out


# userinfo of a URL (``scheme://user:pass@`` or ``scheme://token@``) and credential-named
# query parameters (``?api_key=...``, ``&token=...``): what :func:`redact_url` removes.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#]+@")
_URL_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:api[_-]?key|apikey|key|access[_-]?token|auth[_-]?token|token|secret|"
    r"password|passwd|sig|signature)=)[^&#\s\"']+"
)


def redact_url(text: str | None) -> str:
    """``text`` with the credentials of every URL in it replaced: ``user:pass@`` (or a bare
    ``token@``) and credential-named query parameters. Unlike :func:`redact` it leaves all
    other text alone, so it is safe on settings that are written to files (a pool's
    ``base_url``, a run's config) and compared again later (both sides redacted alike)."""
    if not text:
        return text or ""
    out = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    return _URL_QUERY_SECRET.sub(rf"\1{REDACTED}", out)


def redact_config(value: Any) -> Any:
    """:func:`redact_url` on every string inside a JSON-like value (dicts, lists, tuples)."""
    if isinstance(value, str):
        return redact_url(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: redact_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_config(v) for v in value]
    return value
