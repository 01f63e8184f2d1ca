"""SQLite run store: one row per finished query, committed at once.

Because every result is its own transaction (WAL mode), a run that is killed
loses only the queries in flight, and ``resume`` skips what is already there.
Several processes may read while one writes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from moagraph.graph.trace import Trace

__all__ = ["ResultRow", "RunInfo", "RunStore", "RunStoreError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id  TEXT PRIMARY KEY,
    created REAL NOT NULL,
    config  TEXT NOT NULL,
    status  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_id     TEXT NOT NULL REFERENCES runs(run_id),
    example_id TEXT NOT NULL,
    score      REAL,
    flops      REAL NOT NULL DEFAULT 0,
    flops_norm REAL,
    dollars    REAL NOT NULL DEFAULT 0,
    latency_s  REAL NOT NULL DEFAULT 0,
    wall_s     REAL NOT NULL DEFAULT 0,
    cache_hits INTEGER NOT NULL DEFAULT 0,
    error      TEXT,
    trace      TEXT NOT NULL,
    finished   REAL NOT NULL,
    PRIMARY KEY (run_id, example_id)
);
"""


class RunStoreError(ValueError):
    """A run id clash or a missing run; the message says which flag fixes it."""


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    created: float
    config: dict[str, Any]
    status: str
    n_results: int


@dataclass(frozen=True)
class ResultRow:
    example_id: str
    score: float | None
    flops: float
    flops_norm: float | None
    dollars: float
    latency_s: float
    wall_s: float
    cache_hits: int
    error: str | None

    def trace(self, store: RunStore, run_id: str) -> Trace:
        return store.trace(run_id, self.example_id)


class RunStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    # --- runs ---------------------------------------------------------------
    def create_run(self, run_id: str, config: dict[str, Any], *, resume: bool = False) -> RunInfo:
        """Start ``run_id``; with ``resume`` an existing run is reopened instead."""
        existing = self.run(run_id)
        if existing is not None:
            if not resume:
                raise RunStoreError(
                    f"run id {run_id!r} already exists in {self.path}; pass --resume to continue it "
                    "or choose another --run-id"
                )
            self.set_status(run_id, "running")
            return self.run(run_id)  # type: ignore[return-value]
        self._db.execute(
            "INSERT INTO runs(run_id, created, config, status) VALUES (?, ?, ?, 'running')",
            (run_id, time.time(), json.dumps(config, sort_keys=True, default=str)),
        )
        return self.run(run_id)  # type: ignore[return-value]

    def set_status(self, run_id: str, status: str) -> None:
        self._db.execute("UPDATE runs SET status=? WHERE run_id=?", (status, run_id))

    def run(self, run_id: str) -> RunInfo | None:
        row = self._db.execute(
            "SELECT r.run_id, r.created, r.config, r.status, "
            "(SELECT COUNT(*) FROM results x WHERE x.run_id=r.run_id) FROM runs r WHERE r.run_id=?",
            (run_id,),
        ).fetchone()
        return None if row is None else RunInfo(row[0], row[1], json.loads(row[2]), row[3], row[4])

    def runs(self) -> list[RunInfo]:
        ids = [r[0] for r in self._db.execute("SELECT run_id FROM runs ORDER BY created")]
        return [r for r in (self.run(i) for i in ids) if r is not None]

    # --- results ------------------------------------------------------------
    def add_result(self, run_id: str, trace: Trace, *, flops_norm: float | None = None) -> None:
        """Record one finished query (replacing an earlier attempt) and commit."""
        self._db.execute(
            "INSERT OR REPLACE INTO results(run_id, example_id, score, flops, flops_norm, dollars, "
            "latency_s, wall_s, cache_hits, error, trace, finished) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run_id,
                trace.query_id,
                trace.score,
                trace.flops,
                flops_norm,
                trace.dollars,
                trace.latency_s,
                trace.wall_s,
                trace.cache_hits,
                trace.error,
                json.dumps(trace.to_dict(), ensure_ascii=False, default=str),
                time.time(),
            ),
        )

    def finished_ids(self, run_id: str, *, include_errors: bool = True) -> set[str]:
        sql = "SELECT example_id FROM results WHERE run_id=?"
        if not include_errors:
            sql += " AND error IS NULL"
        return {r[0] for r in self._db.execute(sql, (run_id,))}

    def results(self, run_id: str) -> list[ResultRow]:
        rows = self._db.execute(
            "SELECT example_id, score, flops, flops_norm, dollars, latency_s, wall_s, cache_hits, error "
            "FROM results WHERE run_id=? ORDER BY finished",
            (run_id,),
        ).fetchall()
        return [ResultRow(*r) for r in rows]

    def trace(self, run_id: str, example_id: str) -> Trace:
        row = self._db.execute(
            "SELECT trace FROM results WHERE run_id=? AND example_id=?", (run_id, example_id)
        ).fetchone()
        if row is None:
            raise RunStoreError(f"run {run_id!r} has no result for example {example_id!r}")
        return Trace.from_dict(json.loads(row[0]))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
