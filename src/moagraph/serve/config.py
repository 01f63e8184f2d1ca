"""Server settings: one validated object shared by the CLI, the app and tests.

Kept apart from the app so a test or an embedding program can build a
:class:`ServeConfig` in code and hand it to :func:`moagraph.serve.app.create_app`
without going through the command line.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from moagraph.errors import ConfigError

API_KEY_ENV = "MOAGRAPH_API_KEY"

# What `moagraph serve --api-key KEY` prints: a command line is readable by every user
# of the machine (`ps`, /proc/PID/cmdline), the environment and a 0600 file are not.
API_KEY_ARGV_WARNING = (
    "warning: --api-key on the command line is visible to every user of this machine "
    f"(ps, /proc/PID/cmdline); pass it as ${API_KEY_ENV} or in a file (--api-key-file FILE)"
)


class ServeConfigError(ConfigError):
    """A server option is invalid; the message names the option and the fix."""


def read_api_key_file(path: str | Path) -> tuple[str, str | None]:
    """The API key in ``path`` (its first line, surrounding whitespace removed), and a
    warning when the file can be read by other users (None when it cannot)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ServeConfigError(
            f"--api-key-file {p}: cannot read it ({e.strerror or e}); write the key into "
            "that file (e.g. `umask 077; printf %s KEY > FILE`)"
        ) from None
    except UnicodeDecodeError:
        raise ServeConfigError(f"--api-key-file {p}: not a UTF-8 text file") from None
    lines = text.strip().splitlines()
    key = lines[0].strip() if lines else ""
    if not key:
        raise ServeConfigError(f"--api-key-file {p} is empty; write the key on its first line")
    warning = None
    try:
        mode = p.stat().st_mode
    except OSError:  # pragma: no cover - read a moment ago
        mode = 0
    if os.name == "posix" and mode & 0o077:
        warning = (
            f"warning: --api-key-file {p} can be read by other users (mode {mode & 0o777:o}); "
            f"restrict it: chmod 600 {p}"
        )
    return key, warning


class ServeConfig(BaseModel):
    """How the OpenAI-compatible server behaves (not which graphs it serves)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        "127.0.0.1", description="Interface to bind; 0.0.0.0 exposes it on the network."
    )
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port).")
    api_key: str | None = Field(
        None, description=f"Bearer token clients must send; default: ${API_KEY_ENV}, else no auth."
    )
    store: Path | None = Field(None, description="SQLite file for request logs and traces.")
    run_id: str = Field("serve", description="Run id under which served requests are stored.")
    task: str = Field(
        "chat", description="Task whose prompts and cost averages served queries use."
    )
    budget_flops: float | None = Field(
        None, gt=0, description="Largest estimated cost (normalised FLOPs) a request may have."
    )
    grace_s: float = Field(
        30.0,
        ge=0,
        description="On shutdown, how long in-flight requests may run before cancellation.",
    )
    default_max_tokens: int | None = Field(
        None, gt=0, description="max_tokens for requests that send none (default: the graph's own)."
    )
    log_flush_s: float = Field(
        0.2, gt=0, description="How often buffered request rows are written to the store."
    )
    log_max_rows: int = Field(
        200_000,
        gt=0,
        description="Most request rows (and their traces) kept in the store; the oldest are pruned.",
    )
    log_bodies: bool | None = Field(
        None,
        description="Store the messages of requests that never ran (rejected bodies); default: "
        "only when an API key is set. Traces of requests that ran keep their prompts either way.",
    )
    # --- request limits (checked before any work) ---
    max_body_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest request body; larger is refused with 413."
    )
    max_messages: int = Field(1000, gt=0, description="Most messages in one request.")
    max_prompt_tokens: int = Field(
        131_072,
        gt=0,
        description="Most prompt tokens (estimated, ~4 characters a token) a request may send.",
    )
    max_tokens_limit: int = Field(
        32_768,
        gt=0,
        description="Largest max_tokens / max_completion_tokens a request may ask for.",
    )
    # --- connections ---
    read_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request's head and body must arrive within this many seconds, else the "
        "connection is closed (slow or half-sent requests).",
    )
    keep_alive_s: float = Field(
        5.0, gt=0, description="Idle keep-alive connections close after this."
    )
    limit_concurrency: int | None = Field(
        1000,
        gt=0,
        description="Most requests answered at once (503 beyond) and most open connections "
        "(past it, the least recently active idle connection of the client holding the most "
        "is closed; a request in progress never is).",
    )
    max_connections_per_client: int | None = Field(
        128,
        gt=0,
        description="Most open connections from one client address; past it, that client's "
        "least recently active idle connection is closed.",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest request head (request line + headers); larger is refused with 431.",
    )
    max_headers: int = Field(
        100, gt=0, description="Most header fields in one request; more are refused with 431."
    )
    backlog: int = Field(2048, gt=0, description="Listen backlog of the server socket.")
    # --- browser-driven access ---
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Host header values accepted besides loopback ('*': any). With no API key "
        "only loopback names are accepted unless listed here (DNS-rebinding protection).",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the server ('*': any); requests with any "
        "other Origin header are refused.",
    )

    @property
    def store_bodies(self) -> bool:
        return self.log_bodies if self.log_bodies is not None else self.api_key is not None

    @field_validator("api_key")
    @classmethod
    def _non_empty_key(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError(
                "--api-key is empty; pass a non-empty token or leave it out for no auth"
            )
        return v

    @classmethod
    def with_env(cls, **kwargs: object) -> ServeConfig:
        """Build a config, taking the API key from ``$MOAGRAPH_API_KEY`` when none is given."""
        if kwargs.get("api_key") is None and os.environ.get(API_KEY_ENV):
            kwargs["api_key"] = os.environ[API_KEY_ENV]
        try:
            return cls.model_validate(kwargs)
        except Exception as e:  # pydantic ValidationError -> one readable line per field
            from pydantic import ValidationError

            if isinstance(e, ValidationError):
                parts = [
                    f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}" for err in e.errors()
                ]
                raise ServeConfigError("invalid server option: " + "; ".join(parts)) from None
            raise
