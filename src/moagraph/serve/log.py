"""One SQLite row per served request, written off the request path.

Rows are buffered and flushed by one background task every ``flush_s``
(and at shutdown), in a worker thread: a request never waits on a disk
commit, which is what keeps the server's added latency small under load.
The table lives in the store file next to the run store's own tables
(``runs``/``results``): one file holds what was served and the full traces
(``serve_requests.trace_id`` -> ``results.example_id``).

Retention: at most ``max_rows`` request rows per run are kept; when a flush
takes the count past it, the oldest rows are deleted in one batch down to 90%
of the cap, so pruning costs little per request. Rows without a stored
result (refused requests: 401s, bad bodies, limits; cancelled ones) are
deleted first; rows with a stored trace only when they alone are past the
cap, so a flood of refused requests never evicts a stored result. The
buffers of unwritten rows are bounded too (``max_pending`` each, one for
rows without a trace, one for the rest): if the file stays locked while traffic
continues, the oldest buffered rows are dropped rather than memory growing
without bound, and rows without a trace only ever push out one another.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moagraph._sqlite import enable_wal
from moagraph.graph.trace import Trace

log = logging.getLogger("moagraph.serve")

SCHEMA = """
CREATE TABLE IF NOT EXISTS serve_requests (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    ts REAL NOT NULL,
    model TEXT,
    kind TEXT,
    status TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    flops REAL,
    flops_normalised REAL,
    dollars REAL,
    latency_s REAL,
    wall_s REAL,
    error TEXT,
    request TEXT,
    trace_id TEXT
);
CREATE INDEX IF NOT EXISTS serve_requests_run ON serve_requests(run_id, ts);
CREATE INDEX IF NOT EXISTS serve_requests_no_result ON serve_requests(run_id, ts)
    WHERE trace_id IS NULL;
"""

# rows that have no stored result (no trace): pruned first
NO_RESULT = "trace_id IS NULL"

COLUMNS = (
    "id",
    "run_id",
    "ts",
    "model",
    "kind",
    "status",
    "http_status",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "flops",
    "flops_normalised",
    "dollars",
    "latency_s",
    "wall_s",
    "error",
    "request",
    "trace_id",
)


@dataclass
class RequestRow:
    """What is kept of one request. ``status``: ok | error | rejected | cancelled."""

    id: str
    model: str | None
    status: str
    http_status: int
    stream: bool = False
    kind: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    flops: float | None = None
    flops_normalised: float | None = None
    dollars: float | None = None
    latency_s: float | None = None
    wall_s: float | None = None
    error: str | None = None
    request: str | dict[str, Any] | None = None  # the JSON body as received, or a dict
    trace: Trace | None = None  # kept whole; serialised in the log thread
    ts: float = field(default_factory=time.time)


class RequestLog:
    """Buffered writer of :class:`RequestRow` into ``serve_requests``, and of each
    request's trace into the :class:`~moagraph.store.RunStore` of the same file
    (run ``run_id``, example id = the request id), so ``report`` tools see served
    traffic like any other run.

    All SQLite work happens in one dedicated thread (connections stay in the
    thread that made them).
    """

    def __init__(
        self,
        path: str | Path,
        run_id: str = "serve",
        flush_s: float = 0.2,
        run_config: dict[str, Any] | None = None,
        *,
        max_rows: int = 200_000,
        max_pending: int = 50_000,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.flush_s = flush_s
        self.max_rows = max_rows
        self.max_pending = max_pending
        self.dropped = 0  # rows dropped because the buffer was full
        self.pruned = 0  # rows deleted by the retention cap
        self._count: int | None = None  # rows of this run in the file (known after open)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moagraph-serve-log")
        self._pending: deque[RequestRow] = deque()
        self._pending_refused: deque[RequestRow] = deque()
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._conn: sqlite3.Connection | None = None
        self._store: Any = None
        self.written = 0
        self._thread.submit(self._open, run_config or {}).result()

    def _open(self, run_config: dict[str, Any]) -> None:
        from moagraph.store import RunStore

        self._store = RunStore(self.path)
        self._store.create_run(self.run_id, {"kind": "serve", **run_config}, resume=True)
        self._conn = sqlite3.connect(str(self.path), timeout=30)
        enable_wal(self._conn)
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._conn.commit()
        self._count = self._conn.execute(
            "SELECT COUNT(*) FROM serve_requests WHERE run_id = ?", (self.run_id,)
        ).fetchone()[0]
        self._prune()

    def add(self, row: RequestRow) -> None:
        # rows without a trace (refused or cancelled requests) are buffered apart: a flood
        # of them never drops the row of a request that ran
        buf = self._pending_refused if row.trace is None else self._pending
        if len(buf) >= self.max_pending:
            buf.popleft()
            self.dropped += 1
            if self.dropped in (1, 1000) or self.dropped % 100_000 == 0:
                log.warning(
                    "request log %s is not keeping up; %d rows dropped", self.path, self.dropped
                )
        buf.append(row)

    def _prune(self) -> None:
        """In the log thread: delete the oldest rows (and their traces) past the cap.

        Rows without a stored result (requests refused before any work, ``rejected``:
        a wrong key, a bad body, a limit; or cancelled before they ran) go first; rows
        with a stored result (a trace) only when they alone are past the cap: a flood
        of refused requests (which any client, authenticated or not, can send) never
        pushes out what the server answered.
        """
        assert self._conn is not None
        if self._count is None or self._count <= self.max_rows:
            return
        excess = self._count - int(self.max_rows * 0.9)
        deleted = self._delete_oldest(excess, NO_RESULT)
        left = self._count - deleted
        if left > self.max_rows:  # the requests with a stored result alone are past the cap
            deleted += self._delete_oldest(left - int(self.max_rows * 0.9), "1")
        self._conn.commit()
        self._count -= deleted
        self.pruned += deleted

    def _delete_oldest(self, n: int, where: str) -> int:
        assert self._conn is not None
        oldest = f"SELECT id FROM serve_requests WHERE run_id = ? AND {where} ORDER BY ts LIMIT ?"
        if where != NO_RESULT:
            has_results = self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='results'"
            ).fetchone()
            if has_results:
                self._conn.execute(
                    f"DELETE FROM results WHERE run_id = ? AND example_id IN ({oldest})",
                    (self.run_id, self.run_id, n),
                )
        cur = self._conn.execute(
            f"DELETE FROM serve_requests WHERE id IN ({oldest})", (self.run_id, n)
        )
        return int(cur.rowcount)

    def _tuple(self, r: RequestRow) -> tuple[Any, ...]:
        def dumps(x: Any) -> str | None:
            if x is None or isinstance(x, str):
                return x
            return json.dumps(x, ensure_ascii=False, default=str)

        return (
            r.id,
            self.run_id,
            r.ts,
            r.model,
            r.kind,
            r.status,
            r.http_status,
            int(r.stream),
            r.prompt_tokens,
            r.completion_tokens,
            r.flops,
            r.flops_normalised,
            r.dollars,
            r.latency_s,
            r.wall_s,
            r.error,
            dumps(r.request),
            None if r.trace is None else r.trace.query_id,
        )

    def _write_rows(self, rows: list[RequestRow]) -> int:
        """In the log thread: one transaction for the request rows, then the traces."""
        assert self._conn is not None
        cols = ",".join(COLUMNS)
        marks = ",".join("?" * len(COLUMNS))
        self._conn.executemany(
            f"INSERT OR REPLACE INTO serve_requests ({cols}) VALUES ({marks})",
            [self._tuple(r) for r in rows],
        )
        self._conn.commit()
        for r in rows:
            if r.trace is not None:
                self._store.add_result(self.run_id, r.trace, flops_norm=r.flops_normalised)
        self.written += len(rows)
        if self._count is not None:
            self._count += len(rows)  # an upper bound (INSERT OR REPLACE may replace)
        self._prune()
        return len(rows)

    async def flush(self) -> int:
        """Write what is buffered (the event loop keeps serving meanwhile)."""
        rows = [*self._pending, *self._pending_refused]
        self._pending.clear()
        self._pending_refused.clear()
        if not rows:
            return 0
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._write_rows, rows)

    async def _loop(self) -> None:
        # Never cancelled mid-flush (a cancelled run_in_executor job may never run,
        # losing its rows): aclose() sets the stop event and waits for the last flush.
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.flush_s)
            except TimeoutError:
                pass
            try:
                await self.flush()
            except Exception as e:
                log.warning("could not write request log to %s: %s", self.path, e)

    def start(self) -> None:
        if self._task is None:
            self._stop = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def aclose(self) -> None:
        """Write everything still buffered, then close (called at server shutdown)."""
        if self._task is not None and self._stop is not None:
            self._stop.set()
            await asyncio.shield(self._task)
            self._task = None
        await self.flush()

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
            if self._store is not None and hasattr(self._store, "close"):
                self._store.close()

        await asyncio.get_running_loop().run_in_executor(self._thread, close)
        self._thread.shutdown(wait=True)


def read_rows(path: str | Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """All request rows of a store file (optionally one run), oldest first."""
    conn = sqlite3.connect(str(path))
    try:
        q = f"SELECT {','.join(COLUMNS)} FROM serve_requests"
        args: tuple[Any, ...] = ()
        if run_id is not None:
            q += " WHERE run_id = ?"
            args = (run_id,)
        rows = [dict(zip(COLUMNS, r)) for r in conn.execute(q + " ORDER BY ts", args)]
    finally:
        conn.close()
    for r in rows:
        if r["request"] is not None:
            r["request"] = json.loads(r["request"])
    return rows
