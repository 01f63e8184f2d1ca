"""Run the real server on loopback inside the current process (tests, benchmarks).

Uses a socket bound before uvicorn starts, so the port is known and free
with no race, and shuts down through uvicorn's own graceful path (the same
one SIGTERM takes), so tests exercise real shutdown behaviour.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI


class ServerThread:
    """``with ServerThread(app) as srv: openai.OpenAI(base_url=srv.base_url + "/v1")``."""

    def __init__(self, app: FastAPI, *, grace_s: float = 5.0, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]
        from moagraph.serve.config import ServeConfig
        from moagraph.serve.http import uvicorn_config

        # the app's own limits and timeouts (read timeout, concurrency), as `moagraph serve` sets them
        serve_config = getattr(app.state, "config", None) or ServeConfig()
        config = uvicorn_config(
            app,
            serve_config,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=grace_s,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the moagraph server did not start (see the log above)")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ask for a graceful shutdown (like SIGTERM) and wait for it."""
        self.server.should_exit = True
        self.thread.join(timeout_s)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
