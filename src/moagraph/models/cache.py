"""SQLite call cache: a finished LLM call is never paid for twice.

Searches evaluate the same (model, prompt, sample) many times; experiments
get interrupted. One SQLite file in WAL mode, committed after every put, so
a crash loses no finished call and several processes (search workers, the
server, a second evaluation) can share one file: SQLite's own locking plus a
busy timeout serialises their writes.

Async code (the server) uses :meth:`CallCache.aget` / :meth:`CallCache.aput`:
reads run on a reader thread with their own connection and a short busy
timeout (a locked file reads as a miss), writes are queued to a writer
thread. The event loop never waits on SQLite, even while another process
holds the file locked (``BEGIN EXCLUSIVE``).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from moagraph._sqlite import create_private, enable_wal
from moagraph.errors import DataError
from moagraph.models.base import Completion, LLMRequest

log = logging.getLogger("moagraph.cache")

# One row of ``_SELECT``: model, backend, text, prompt_tokens, completion_tokens,
# latency_s, finish_reason, meta (JSON); every column is NOT NULL.
_Row = tuple[str, str, str, int, int, float, str, str]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    backend TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    finish_reason TEXT NOT NULL,
    meta TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


def cache_key(identity: str, request: LLMRequest) -> str:
    """sha256 of everything that can change a backend's answer.

    ``identity`` comes from ``Backend.identity`` (endpoint + model, or GGUF
    hash + prompt format), so the same pool name pointed at another model
    never returns a stale answer.
    """
    payload = {
        "identity": identity,
        "model": request.model.endpoint_model,
        "messages": [[m["role"], m["content"]] for m in request.messages],
        "params": request.params.as_dict(),
        "sample": request.sample_index,
    }
    blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CacheError(DataError):
    """The call cache file is corrupt or cannot be opened; the message names it and the fix."""


def _kind(e: BaseException) -> str:
    """What a SQLite/OS failure on the cache file means: corrupt, full, readonly, locked, other."""
    low = str(e).lower()
    if "malformed" in low or "not a database" in low or "file is encrypted" in low:
        return "corrupt"
    if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "disk is full" in low:
        return "full"
    if "readonly" in low or "read-only" in low or isinstance(e, PermissionError):
        return "readonly"
    if "locked" in low or "busy" in low:
        return "locked"
    return "other"


_NO_CACHE = " (drop --cache; `search` takes --no-cache)"


def _corrupt_message(path: Path, e: BaseException) -> str:
    return (
        f"call cache {path} is corrupt ({e}); move that file away (it is not deleted for "
        "you) and pass --cache with a new path, or run without a cache"
        + _NO_CACHE
        + ": its calls are then "
        "made again"
    )


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    puts: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class CallCache:
    """Completions keyed by :func:`cache_key`, in one SQLite file.

    Thread-safe (one connection behind a lock) and process-safe (WAL +
    ``busy_timeout``). ``stats`` counts this instance's lookups only.

    Failures name the file and the fix. A corrupt file (at open, or a damaged page found
    by a lookup: "database disk image is malformed") raises :class:`CacheError`. A write
    that fails because the disk is full or the file is read-only turns writing off for
    the rest of this instance with one warning (``write_disabled`` says why): the calls
    still succeed, they are just not cached. Created 0600 (its -wal/-shm too).
    """

    def __init__(
        self, path: str | Path, *, busy_timeout_s: float = 60.0, read_timeout_s: float = 2.0
    ) -> None:
        self.path = Path(path).expanduser()
        self.busy_timeout_s = busy_timeout_s
        self.read_timeout_s = read_timeout_s
        self._lock = threading.Lock()  # the main connection
        self._stat_lock = threading.Lock()  # counters only: never held while waiting on SQLite
        self._hits = self._misses = self._puts = 0
        self.write_errors = 0  # writes dropped (file locked past the busy timeout, disk full)
        self.write_disabled: str | None = None  # why writing was turned off, if it was
        # async side: a reader thread with its own connection, a writer thread fed by a queue
        self._rconn: sqlite3.Connection | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._wqueue: queue.Queue[tuple[str, Completion] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._async_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            if self.path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "is a directory", str(self.path))
            create_private(self.path)  # 0600: prompts and answers are not for other users
            # isolation_level=None: autocommit; every put is its own durable transaction.
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            enable_wal(self._conn, busy_timeout_s)
            self._conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: app-crash durable
            self._conn.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            kind = _kind(e)
            if kind == "corrupt":
                raise CacheError(_corrupt_message(self.path, e)) from None
            if kind == "full":
                why = "no space left on the device; free some space or pass --cache PATH elsewhere"
            elif kind == "readonly":
                why = "make the file and its folder writable (SQLite writes a -wal file beside it)"
            else:
                why = "pass --cache with another path"
            raise CacheError(
                f"call cache {self.path} cannot be opened ({type(e).__name__}: {e}); {why}, "
                "or run without a cache" + _NO_CACHE
            ) from None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"call cache {self.path} is closed")
        return self._conn

    _SELECT = (
        "SELECT model, backend, text, prompt_tokens, completion_tokens, latency_s, "
        "finish_reason, meta FROM calls WHERE key = ?"
    )

    def get(self, key: str) -> Completion | None:
        """The cached completion (``cached=True``), or None on a miss."""
        with self._lock:
            try:
                row = self._db().execute(self._SELECT, (key,)).fetchone()
            except sqlite3.Error as e:
                if _kind(e) == "corrupt":
                    raise CacheError(_corrupt_message(self.path, e)) from None
                raise CacheError(
                    f"call cache {self.path}: a lookup failed ({type(e).__name__}: {e}); "
                    "pass --cache with another path, or run without a cache" + _NO_CACHE
                ) from None
        return self._count(row)

    def _count(self, row: _Row | None) -> Completion | None:
        with self._stat_lock:
            if row is None:
                self._misses += 1
                return None
            self._hits += 1
        return self._completion(row)

    @staticmethod
    def _completion(row: _Row) -> Completion:
        model, backend, text, pt, ct, lat, finish, meta = row
        return Completion(
            text=text,
            prompt_tokens=pt,
            completion_tokens=ct,
            latency_s=lat,
            model=model,
            backend=backend,
            cached=True,
            finish_reason=finish,
            meta=json.loads(meta),
        )

    def put(self, key: str, completion: Completion) -> None:
        """Store a finished call (committed before returning).

        A full disk or a read-only file turns writing off with one warning (see the class);
        a corrupt file raises :class:`CacheError`; a file locked past the busy timeout drops
        this one write with a warning."""
        if self.write_disabled is not None:
            return
        try:
            self._put(key, completion)
        except (sqlite3.Error, OSError) as e:
            kind = _kind(e)
            if kind == "corrupt":
                raise CacheError(_corrupt_message(self.path, e)) from None
            with self._stat_lock:
                self.write_errors += 1
                first = self.write_disabled is None
                if kind in ("full", "readonly"):
                    self.write_disabled = (
                        f"call cache {self.path}: "
                        + ("disk full" if kind == "full" else "file is read-only")
                        + f" ({e}); caching is off for the rest of this run (calls still "
                        "succeed, they are not stored). "
                        + (
                            "Free some space on that disk or pass --cache PATH on another "
                            "disk, or run without a cache" + _NO_CACHE
                            if kind == "full"
                            else "Make the file and its folder writable, or run without a cache"
                            + _NO_CACHE
                        )
                    )
                else:
                    first = True
            if first:
                log.warning(
                    "%s",
                    self.write_disabled
                    or f"call cache {self.path}: could not store a call ({e}); it is made "
                    "again next time",
                )
            return
        with self._stat_lock:
            self._puts += 1

    def _put(self, key: str, completion: Completion) -> None:
        meta = json.dumps(completion.meta, ensure_ascii=False, default=str)
        with self._lock:
            self._db().execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    completion.model,
                    completion.backend,
                    completion.text,
                    completion.prompt_tokens,
                    completion.completion_tokens,
                    completion.latency_s,
                    completion.finish_reason,
                    meta,
                    time.time(),
                ),
            )

    # --- async side: nothing here blocks the event loop -------------------------------
    def _start_async(self) -> None:
        with self._async_lock:
            if self._reader is None:
                self._db()  # raises if closed
                self._rconn = sqlite3.connect(
                    self.path,
                    timeout=self.read_timeout_s,
                    isolation_level=None,
                    check_same_thread=False,
                )
                self._rconn.execute(f"PRAGMA busy_timeout={int(self.read_timeout_s * 1000)}")
                self._reader = ThreadPoolExecutor(1, thread_name_prefix="moagraph-cache-read")
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="moagraph-cache-write", daemon=True
                )
                self._writer.start()

    def _read(self, key: str) -> Completion | None:
        assert self._rconn is not None
        try:
            row = self._rconn.execute(self._SELECT, (key,)).fetchone()
        except sqlite3.Error as e:  # locked past read_timeout_s: a miss, not a failure
            if _kind(e) == "corrupt":
                log.warning("%s; treating this lookup as a miss", _corrupt_message(self.path, e))
            else:
                log.warning("call cache %s unreadable (%s); treating as a miss", self.path, e)
            row = None
        return self._count(row)

    async def aget(self, key: str) -> Completion | None:
        """:meth:`get` on the reader thread; a file locked by another process is a miss."""
        self._start_async()
        assert self._reader is not None
        return await asyncio.get_running_loop().run_in_executor(self._reader, self._read, key)

    def aput(self, key: str, completion: Completion) -> None:
        """Queue a :meth:`put` for the writer thread and return at once."""
        self._start_async()
        self._wqueue.put((key, completion))

    def _write_loop(self) -> None:
        while True:
            item = self._wqueue.get()
            try:
                if item is None:
                    return
                try:
                    self.put(*item)
                except (CacheError, RuntimeError) as e:  # put() warned about other failures
                    self.write_errors += 1
                    log.warning("call cache %s: could not store a call (%s)", self.path, e)
            finally:
                self._wqueue.task_done()

    def flush(self) -> None:
        """Wait until every queued :meth:`aput` is written (or dropped)."""
        if self._writer is not None:
            self._wqueue.join()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return (
                self._db().execute("SELECT 1 FROM calls WHERE key = ?", (key,)).fetchone()
                is not None
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db().execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    @property
    def stats(self) -> CacheStats:
        return CacheStats(self._hits, self._misses, self._puts)

    def close(self) -> None:
        with self._async_lock:
            writer, self._writer = self._writer, None
            reader, self._reader = self._reader, None
        if writer is not None:
            self._wqueue.put(None)  # after what is queued: pending writes land first
            writer.join(self.busy_timeout_s + 5)
        if reader is not None:
            reader.shutdown(wait=True)
        if self._rconn is not None:
            self._rconn.close()
            self._rconn = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
