"""Connection-level protection for the server: what runs before any route.

- :class:`_Guard`, mixed into uvicorn's httptools and h11 protocols:

  - a read deadline: uvicorn closes idle keep-alive connections but has no
    timeout for a request that is *being* sent. A client that opens a
    connection and sends half a request head (or half a body) would hold a
    socket and a file descriptor for ever; a thousand of them exhaust the fd
    limit and lock everyone out. A connection whose request head and body have
    not fully arrived within ``read_timeout_s`` of its first byte (or of the
    connection opening) is closed;
  - a cap on the request head's bytes and header fields, counted on the raw
    bytes before the parser buffers them (httptools has no limit: one 32 MB
    header block cost 490 MB of memory and stalled the event loop for 3 s);
    past it: 431 in OpenAI format;
  - a :class:`ConnectionTable` that closes *idle* connections (never one with a
    request in progress) to make room, per client and in all, so a client
    holding idle keep-alive connections cannot lock others out;
  - malformed requests answered 400 in OpenAI format.
- :class:`RequestLimit`: at most ``--limit-concurrency`` requests at once, 503
  in OpenAI format beyond.
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
import json
import logging
from collections import Counter
from typing import Any

from moagraph.serve.config import ServeConfig
from moagraph.serve.errors import ApiError

log = logging.getLogger("moagraph.serve")

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


# --- connection guards ---------------------------------------------------------


def _raw_error(err: ApiError, close: bool = True) -> bytes:
    """A whole HTTP/1.1 response with ``err``'s OpenAI-format body, written to the socket
    by the protocol itself (for refusals made before any ASGI app runs)."""
    body = json.dumps(err.body()).encode()
    phrase = {400: "Bad Request", 431: "Request Header Fields Too Large"}.get(err.status, "Error")
    head = (
        f"HTTP/1.1 {err.status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n" + ("connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode("latin-1") + body


class ConnectionTable:
    """The open connections of one server, least recently active first.

    Idle connections (kept alive between requests, or opened and silent) cost the
    server a file descriptor each and count against uvicorn's connection limit; one
    client re-opening idle connections used to push the server past that limit, so
    everyone's requests got 503s. Here a new connection is always let in, and room is
    made by closing *idle* connections, never one with a request in progress:

    - past ``max_per_client`` connections from one client address, that client's
      least recently active idle connection is closed;
    - past ``max_total`` connections in all, the least recently active idle
      connection of the client holding the most connections is closed (of anyone,
      if that client has none idle).

    A client whose idle keep-alive connection is closed simply opens a new one (HTTP
    clients retry a request on a kept-alive connection the server closed).
    """

    def __init__(self, max_total: int | None, max_per_client: int | None) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.conns: dict[Any, str] = {}  # protocol -> client address; oldest activity first
        self.per_client: Counter[str] = Counter()
        self.evicted = 0

    def add(self, conn: Any, client: str) -> None:
        self.conns[conn] = client
        self.per_client[client] += 1
        if self.max_per_client is not None and self.per_client[client] > self.max_per_client:
            self._evict(conn, client)
        if self.max_total is not None and len(self.conns) > self.max_total:
            heaviest = max(self.per_client, key=self.per_client.__getitem__)
            if not self._evict(conn, heaviest):
                self._evict(conn, None)

    def touch(self, conn: Any) -> None:
        """``conn`` was active: it becomes the last to be closed."""
        client = self.conns.pop(conn, None)
        if client is not None:
            self.conns[conn] = client

    def remove(self, conn: Any) -> None:
        client = self.conns.pop(conn, None)
        if client is not None:
            self.per_client[client] -= 1
            if self.per_client[client] <= 0:
                del self.per_client[client]

    def _evict(self, new: Any, client: str | None) -> bool:
        victim = None
        for conn, c in self.conns.items():
            if conn is not new and (client is None or c == client) and conn.is_idle():
                victim = conn
                break
        if victim is None:
            return False
        self.remove(victim)
        self.evicted += 1
        if self.evicted in (1, 100) or self.evicted % 10_000 == 0:
            log.warning(
                "%d idle connection(s) closed to make room (most connections from one "
                "client: %d; limits: %s per client, %s in all)",
                self.evicted,
                max(self.per_client.values(), default=0),
                self.max_per_client,
                self.max_total,
            )
        victim.close_idle()
        return True


class _Guard:
    """Mixin over a uvicorn HTTP protocol: what every connection gets before the app.

    - a deadline for receiving each request (``read_timeout_s``): uvicorn closes idle
      keep-alive connections but has no timeout for a request that is *being* sent;
    - a cap on the request head (``max_header_bytes``, ``max_headers``), checked on the
      raw bytes *before* the parser sees them: neither parser (httptools has no limit
      at all) may buffer a 32 MB header block. Past the cap: 431 in OpenAI format;
    - membership in the server's :class:`ConnectionTable` (idle connections are closed
      to make room, see there);
    - malformed requests answered 400 in OpenAI format (uvicorn's is plain text).
    """

    read_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    table: ConnectionTable | None = None
    _read_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _head_lines = 0
    _head_tail = b""
    _refused = False
    _linger_left = 0

    # read timeout
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

    # connection table
    def _join_table(self) -> None:
        if self.table is not None:
            client = self.client  # type: ignore[attr-defined]
            self.table.add(self, client[0] if client else "")

    def _leave_table(self) -> None:
        if self.table is not None:
            self.table.remove(self)

    def is_idle(self) -> bool:
        """No request is being answered on this connection (kept alive, or silent)."""
        cycle = getattr(self, "cycle", None)
        return cycle is None or bool(cycle.response_complete)

    def close_idle(self) -> None:
        transport: asyncio.Transport = self.transport  # type: ignore[attr-defined]
        if not transport.is_closing():
            transport.close()

    # request head
    def _head_pending(self) -> bool:  # per parser: may the next bytes be a request head?
        raise NotImplementedError

    def _head_ok(self, data: bytes) -> bool:
        """Count ``data``'s request-head bytes and lines; False (and a 431 sent) past a cap."""
        if not self._head_pending():
            return True
        window = self._head_tail + data
        ends = [i for i in (window.find(b"\r\n\r\n"), window.find(b"\n\n")) if i >= 0]
        end = min(ends) if ends else -1
        head = window if end < 0 else window[: end + 2]
        n_bytes = self._head_bytes + len(head) - len(self._head_tail)
        n_lines = self._head_lines + head.count(b"\n") - self._head_tail.count(b"\n")
        if n_bytes > self.max_header_bytes:
            what = f"the request head is over {self.max_header_bytes:,} bytes"
        elif n_lines - 1 > self.max_headers:  # the request line is not a header
            what = f"the request has over {self.max_headers:,} header fields"
        else:
            what = ""
        if what:
            self._refuse(
                ApiError(
                    431,
                    f"{what} (server options --max-header-bytes / --max-headers)",
                    code="request_header_fields_too_large",
                )
            )
            return False
        if end < 0:
            self._head_bytes, self._head_lines, self._head_tail = n_bytes, n_lines, window[-3:]
        else:  # the head is complete: count the next one from zero
            self._head_bytes, self._head_lines, self._head_tail = 0, 0, b""
        return True

    def _refuse(self, err: ApiError) -> None:
        """Answer ``err`` and close, reading (and dropping) what the client still sends for
        a moment first, so it can read the answer instead of a connection reset."""
        self._refused = True
        self._disarm_read_timer()
        transport: asyncio.Transport = self.transport  # type: ignore[attr-defined]
        log.info("refused a request: %s", err.message)
        if transport.is_closing():
            return
        if self.is_idle():  # not in the middle of another response
            transport.write(_raw_error(err))
        try:
            if transport.can_write_eof():
                transport.write_eof()
        except (OSError, RuntimeError):  # pragma: no cover - already gone
            pass
        loop: asyncio.AbstractEventLoop = self.loop  # type: ignore[attr-defined]
        loop.call_later(1.0, transport.close)
        self._linger_left = 1 << 20  # then close at once, whatever still comes

    def _linger(self, data: bytes) -> None:
        self._linger_left -= len(data)
        transport: asyncio.Transport = self.transport  # type: ignore[attr-defined]
        if self._linger_left < 0 and not transport.is_closing():
            transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to an unparsable request, in OpenAI format."""
        transport: asyncio.Transport = self.transport  # type: ignore[attr-defined]
        if not transport.is_closing():
            err = ApiError(400, f"invalid HTTP request: {msg}", code="invalid_http_request")
            transport.write(_raw_error(err))
            transport.close()


def _protocol_classes() -> dict[str, type[asyncio.Protocol]]:
    out: dict[str, type[asyncio.Protocol]] = {}
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is a dependency
        HttpToolsProtocol = None  # type: ignore[assignment,misc]
    if HttpToolsProtocol is not None:

        class GuardedHttpToolsProtocol(_Guard, HttpToolsProtocol):
            _in_head = True

            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                super().connection_made(transport)
                self._arm_read_timer()  # until the first request is in
                self._join_table()

            def connection_lost(self, exc: Exception | None) -> None:
                self._disarm_read_timer()
                self._leave_table()
                super().connection_lost(exc)

            def _head_pending(self) -> bool:
                return self._in_head

            def data_received(self, data: bytes) -> None:
                if self._refused:
                    self._linger(data)
                    return
                if self.table is not None:
                    self.table.touch(self)
                if self._head_ok(data):
                    super().data_received(data)

            def on_message_begin(self) -> None:
                super().on_message_begin()
                self._arm_read_timer()  # a new request on a kept-alive connection

            def on_headers_complete(self) -> None:
                self._in_head = False
                super().on_headers_complete()

            def on_message_complete(self) -> None:
                self._in_head = True  # what comes next is the next request's head
                super().on_message_complete()
                self._disarm_read_timer()  # fully received: the app's time now

            def on_response_complete(self) -> None:
                super().on_response_complete()
                if self.table is not None:
                    self.table.touch(self)

        out["httptools"] = GuardedHttpToolsProtocol

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(_Guard, H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_read_timer()
            self._join_table()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_read_timer()
            self._leave_table()
            super().connection_lost(exc)

        def _head_pending(self) -> bool:
            return self.conn.their_state in (h11.IDLE, h11.DONE)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                self._linger(data)
                return
            if self.table is not None:
                self.table.touch(self)
            if not self._head_ok(data):
                return
            super().data_received(data)
            state = self.conn.their_state
            if state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
                self._disarm_read_timer()
            elif self._read_timer is None and state in (h11.IDLE, h11.SEND_BODY):
                self._arm_read_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.table is not None:
                self.table.touch(self)

    out["h11"] = GuardedH11Protocol
    return out


def protocol_class(
    read_timeout_s: float,
    kind: str = "auto",
    *,
    max_header_bytes: int = 64 * 1024,
    max_headers: int = 100,
    table: ConnectionTable | None = None,
) -> type[asyncio.Protocol]:
    """A uvicorn HTTP protocol class with the request read deadline, the request-head
    caps and (optionally) a :class:`ConnectionTable` shared by its connections."""
    classes = _protocol_classes()
    base = classes.get("httptools" if kind == "auto" else kind) or classes["h11"]
    attrs = {
        "read_timeout_s": float(read_timeout_s),
        "max_header_bytes": int(max_header_bytes),
        "max_headers": int(max_headers),
        "table": table,
    }
    return type(base.__name__, (base,), attrs)


class RequestLimit:
    """Pure ASGI middleware: at most ``limit`` requests answered at once; beyond it, 503
    in OpenAI format (uvicorn's own ``limit_concurrency`` answers plain text, and counts
    idle connections too, so a client holding idle connections could refuse everyone)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.active = 0
        self.refused = 0

    def __getattr__(self, name: str) -> Any:  # the wrapped app's `state`, `routes`, ...
        if name == "app":  # not set yet (e.g. while copied): no recursion
            raise AttributeError(name)
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            self.refused += 1
            if self.refused in (1, 100) or self.refused % 10_000 == 0:
                log.warning("%d request(s) refused: %d in progress", self.refused, self.active)
            err = ApiError(
                503,
                f"the server is answering {self.active:,} requests, its limit "
                "(server option --limit-concurrency); retry shortly",
                type="server_error",
                code="server_busy",
                headers={"Retry-After": "1", "Connection": "close"},
            )
            await err.response()(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


# --- uvicorn settings ----------------------------------------------------------


def uvicorn_config(app: Any, config: ServeConfig, **kwargs: Any) -> Any:
    """uvicorn.Config for ``app`` with the server's connection limits and timeouts."""
    import uvicorn

    table = ConnectionTable(config.limit_concurrency, config.max_connections_per_client)
    http = protocol_class(
        config.read_timeout_s,
        max_header_bytes=config.max_header_bytes,
        max_headers=config.max_headers,
        table=table,
    )
    if config.limit_concurrency is not None:
        app = RequestLimit(app, config.limit_concurrency)
    settings: dict[str, Any] = {
        "http": http,
        "timeout_keep_alive": config.keep_alive_s,
        # requests: RequestLimit (503 in OpenAI format); connections: the ConnectionTable
        "limit_concurrency": None,
        # h11 (when httptools is missing) refuses a head past this itself, with a plain
        # 400: a little above our own cap, so the 431 above answers first
        "h11_max_incomplete_event_size": config.max_header_bytes + 4096,
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
