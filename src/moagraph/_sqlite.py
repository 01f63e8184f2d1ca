"""SQLite helpers shared by the stores (call cache, run store, studies, embeddings)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def make_private_parent(path: Path) -> None:
    """Create the folders above ``path`` if missing; the ones created here are 0700."""
    missing = []
    d = path.parent
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    for m in reversed(missing):
        with contextlib.suppress(FileExistsError):
            m.mkdir(mode=PRIVATE_DIR)


def create_private(path: str | Path) -> bool:
    """Create ``path`` as an empty file readable by its owner only (0600), unless it exists.

    An empty file is a valid empty SQLite database, and SQLite creates the ``-wal`` and
    ``-shm`` files with the mode of the database file: so a store made through here is
    never world-readable, not even for an instant (``O_EXCL``: no window before a chmod).
    A file that already exists keeps its mode (the owner chose it). True if created.
    """
    p = Path(path)
    make_private_parent(p)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files and folders created inside are 0600 / 0700 (process-wide umask 077 meanwhile)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _tighten_new_file(conn: sqlite3.Connection) -> None:
    """A database file that is still empty (just created by ``connect``) becomes 0600
    before its -wal/-shm exist, so they are created 0600 too. Existing files keep their mode."""
    try:
        row = conn.execute("PRAGMA database_list").fetchone()
    except sqlite3.Error:
        return
    name = row[2] if row else ""
    if not name:  # :memory: or a temp database
        return
    try:
        st = os.stat(name)
        if st.st_size == 0 and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(name, PRIVATE_FILE)
    except OSError:
        return


def enable_wal(conn: sqlite3.Connection, timeout_s: float = 30.0) -> None:
    """Switch ``conn``'s file to WAL, waiting out other processes that do the same.

    The switch needs an exclusive lock. When several processes open one new file at
    once (parallel evals sharing a cache, server workers), SQLite can answer
    "database is locked" at once instead of calling the busy handler, and the process
    that lost the race would die. Retry with backoff until ``timeout_s`` instead.

    A new (empty) database file is made private (0600) first; see :func:`create_private`.
    """
    _tighten_new_file(conn)
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
