"""enable_wal waits out a file another process holds, instead of dying on "database is locked"."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from moagraph._sqlite import enable_wal


def _hold(path: Path, seconds: float, held: threading.Event) -> None:
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    held.set()
    time.sleep(seconds)
    locker.execute("COMMIT")
    locker.close()


def test_enable_wal_retries_until_the_other_process_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    held = threading.Event()
    t = threading.Thread(target=_hold, args=(path, 0.4, held))
    t.start()
    held.wait(5)
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)  # no busy wait of its own
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        conn.execute("PRAGMA journal_mode=WAL")  # what the stores did before
    enable_wal(conn, timeout_s=10)
    t.join()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_enable_wal_gives_up_after_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "held.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    held = threading.Event()
    t = threading.Thread(target=_hold, args=(path, 2.0, held))
    t.start()
    held.wait(5)
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        enable_wal(conn, timeout_s=0.2)
    t.join()
