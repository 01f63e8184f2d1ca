"""Connection-level protection for the server: what runs before any route.

- :class:`ReadTimeoutHttpToolsProtocol` (and the h11 twin): uvicorn closes idle
  keep-alive connections but has no timeout for a request that is *being*
  sent. A client that opens a connection and sends half a request head (or
  half a body) would hold a socket and a file descriptor for ever; a thousand
  of them exhaust the fd limit and lock everyone out. These protocols close
  a connection whose request head and body have not fully arrived within
  ``read_timeout_s`` of its first byte (or of the connection opening).
- :class:`RequestGuard`: an ASGI middleware for browser-driven attacks on a
  server with no API key: DNS rebinding (a Host header naming another site),
  cross-site requests (an ``Origin`` that is not allowed). CORS "simple
  requests" (a POST that is not ``application/json``, which a page can send
  without a preflight) are refused by :func:`check_json_content_type`, which
  the POST route calls right after auth. The official openai client sends
  none of these.
- :func:`uvicorn_config` and :func:`raise_fd_limit`: the one place the CLI and
  the in-process test server turn a :class:`ServeConfig` into uvicorn settings.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from moagraph.serve.config import ServeConfig
from moagraph.serve.errors import ApiError

log = logging.getLogger("moagraph.serve")

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


# --- read timeout ------------------------------------------------------------


class _ReadTimeout:
    """Mixin over a uvicorn HTTP protocol: a deadline for receiving each request."""

    read_timeout_s: float = 10.0
    _read_timer: asyncio.TimerHandle | None = None

    def _arm_read_timer(self) -> None:
        self._disarm_read_timer()
        loop: asyncio.AbstractEventLoop = self.loop  # type: ignore[attr-defined]
        self._read_timer = loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _disarm_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        transport: asyncio.Transport = self.transport  # type: ignore[attr-defined]
        if not transport.is_closing():
            log.info(
                "closing a connection whose request did not arrive within %.3gs",
                self.read_timeout_s,
            )
            transport.close()


def _protocol_classes() -> dict[str, type[asyncio.Protocol]]:
    out: dict[str, type[asyncio.Protocol]] = {}
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is a dependency
        HttpToolsProtocol = None  # type: ignore[assignment,misc]
    if HttpToolsProtocol is not None:

        class ReadTimeoutHttpToolsProtocol(_ReadTimeout, HttpToolsProtocol):
            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                super().connection_made(transport)
                self._arm_read_timer()  # until the first request is in

            def connection_lost(self, exc: Exception | None) -> None:
                self._disarm_read_timer()
                super().connection_lost(exc)

            def on_message_begin(self) -> None:
                super().on_message_begin()
                self._arm_read_timer()  # a new request on a kept-alive connection

            def on_message_complete(self) -> None:
                super().on_message_complete()
                self._disarm_read_timer()  # fully received: the app's time now

        out["httptools"] = ReadTimeoutHttpToolsProtocol

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class ReadTimeoutH11Protocol(_ReadTimeout, H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_read_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_read_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            state = self.conn.their_state
            if state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
                self._disarm_read_timer()
            elif self._read_timer is None and state in (h11.IDLE, h11.SEND_BODY):
                self._arm_read_timer()

    out["h11"] = ReadTimeoutH11Protocol
    return out


def protocol_class(read_timeout_s: float, kind: str = "auto") -> type[asyncio.Protocol]:
    """A uvicorn HTTP protocol class with the request read deadline set."""
    classes = _protocol_classes()
    base = classes.get("httptools" if kind == "auto" else kind) or classes["h11"]
    return type(base.__name__, (base,), {"read_timeout_s": float(read_timeout_s)})


# --- uvicorn settings ----------------------------------------------------------


def uvicorn_config(app: Any, config: ServeConfig, **kwargs: Any) -> Any:
    """uvicorn.Config for ``app`` with the server's connection limits and timeouts."""
    import uvicorn

    settings: dict[str, Any] = {
        "http": protocol_class(config.read_timeout_s),
        "timeout_keep_alive": config.keep_alive_s,
        "limit_concurrency": config.limit_concurrency,
        "backlog": config.backlog,
        "timeout_graceful_shutdown": config.grace_s,
        "lifespan": "on",
        # Forwarded headers only from proxies we were told about (none by default).
        "proxy_headers": False,
        "server_header": False,
    }
    settings.update(kwargs)
    return uvicorn.Config(app, **settings)


def raise_fd_limit() -> tuple[int, int] | None:
    """Raise the soft open-file limit to the hard limit (each connection is one fd).

    Returns the (old soft, new soft) pair, or None where not supported.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # e.g. macOS caps below RLIM_INFINITY
        try:
            target = min(target, 10240)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
    return soft, target


# --- Host / Origin / Content-Type guard ---------------------------------------


def check_json_content_type(content_type: str | None) -> None:
    """415 unless the body is declared JSON. Browsers send cross-site POSTs without a
    preflight only as text/plain, form or multipart: requiring JSON stops those."""
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(
            415,
            f"Content-Type must be application/json (got {ctype or 'none'!r})",
            param="Content-Type",
            code="unsupported_media_type",
        )


def _split_host(host: str) -> tuple[str, int | None]:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        end = host.find("]")
        name, rest = host[: end + 1], host[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    try:
        return name, int(port) if port else None
    except ValueError:
        return name, -1


class RequestGuard:
    """Pure ASGI middleware: refuse what a browser on another site could send us.

    ``allow_hosts``: Host names (optionally ``name:port``, or ``*``) accepted
    besides loopback; the Host check applies when the server has no API key or
    when ``allow_hosts`` is given. ``cors_origins``: origins (``*`` for any) whose
    requests are accepted; a request with any other ``Origin`` is refused, except
    the server's own origin (same Host).
    """

    def __init__(self, app: Any, *, config: ServeConfig) -> None:
        self.app = app
        self.check_host = config.api_key is None or bool(config.allow_hosts)
        self.allow_hosts = {h.strip().lower() for h in config.allow_hosts}
        self.any_host = "*" in self.allow_hosts
        self.origins = {o.strip().rstrip("/").lower() for o in config.cors_origins}
        self.any_origin = "*" in self.origins

    def _host_ok(self, host: str | None, server: tuple[str, int] | None) -> bool:
        if self.any_host:
            return True
        if not host:
            return False
        name, port = _split_host(host)
        if port == -1:
            return False
        if f"{name}:{port}" in self.allow_hosts or name in self.allow_hosts:
            return True
        if name in LOOPBACK_HOSTS:
            # "with the port": the port, when given, must be the one we listen on
            return port is None or server is None or port == server[1]
        return False

    def _origin_ok(self, origin: str, host: str | None) -> bool:
        o = origin.strip().rstrip("/").lower()
        if self.any_origin or o in self.origins:
            return True
        if host and o in (f"http://{host.lower()}", f"https://{host.lower()}"):
            return True  # same origin (e.g. the /docs page of this server)
        return False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            name = k.decode("latin-1").lower()
            if name in ("host", "origin") and name not in headers:
                headers[name] = v.decode("latin-1")
        host = headers.get("host")
        err: ApiError | None = None
        if self.check_host and not self._host_ok(host, scope.get("server")):
            err = ApiError(
                421 if host else 400,
                f"Host header {host!r} is not allowed: with no --api-key this server answers "
                "only requests addressed to localhost/127.0.0.1/[::1]; start it with "
                "--allow-host NAME (or --api-key KEY) to accept others",
                code="host_not_allowed",
            )
        elif "origin" in headers and not self._origin_ok(headers["origin"], host):
            err = ApiError(
                403,
                f"cross-origin request from {headers['origin']!r} refused; allow it with "
                "--cors-origin ORIGIN",
                code="origin_not_allowed",
            )
        if err is not None:
            await err.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)
