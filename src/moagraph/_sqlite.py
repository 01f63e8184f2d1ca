"""SQLite helpers shared by the stores (call cache, run store, studies, embeddings)."""

from __future__ import annotations

import sqlite3
import time


def enable_wal(conn: sqlite3.Connection, timeout_s: float = 30.0) -> None:
    """Switch ``conn``'s file to WAL, waiting out other processes that do the same.

    The switch needs an exclusive lock. When several processes open one new file at
    once (parallel evals sharing a cache, server workers), SQLite can answer
    "database is locked" at once instead of calling the busy handler, and the process
    that lost the race would die. Retry with backoff until ``timeout_s`` instead.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
