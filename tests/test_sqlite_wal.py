"""enable_wal waits out a file another process holds, instead of dying on "database is locked"."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from moagraph._sqlite import enable_wal


def _held(path: Path, seconds: float) -> tuple[threading.Thread, sqlite3.Connection]:
    """A file another connection holds with BEGIN EXCLUSIVE for ``seconds``, and a connection
    to it with no busy wait of its own (so only enable_wal's retries can wait)."""
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    held = threading.Event()

    def hold() -> None:
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        locker.execute("COMMIT")
        locker.close()

    t = threading.Thread(target=hold)
    t.start()
    held.wait(5)
    return t, sqlite3.connect(path, timeout=0, isolation_level=None)


def test_enable_wal_retries_until_the_other_process_lets_go(tmp_path: Path) -> None:
    t, conn = _held(tmp_path / "shared.sqlite", 0.4)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        conn.execute("PRAGMA journal_mode=WAL")  # what the stores did before
    enable_wal(conn, timeout_s=10)
    t.join()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_enable_wal_gives_up_after_its_timeout(tmp_path: Path) -> None:
    t, conn = _held(tmp_path / "held.sqlite", 2.0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        enable_wal(conn, timeout_s=0.2)
    t.join()
