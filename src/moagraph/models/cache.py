"""SQLite call cache: a finished LLM call is never paid for twice.

Searches evaluate the same (model, prompt, sample) many times; experiments
get interrupted. One SQLite file in WAL mode, committed after every put, so
a crash loses no finished call and several processes (search workers, the
server, a second evaluation) can share one file: SQLite's own locking plus a
busy timeout serialises their writes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from moagraph.models.base import Completion, LLMRequest

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
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 60.0) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._hits = self._misses = self._puts = 0
        # isolation_level=None: autocommit; every put is its own durable transaction.
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against app crashes
        self._conn.execute(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"call cache {self.path} is closed")
        return self._conn

    def get(self, key: str) -> Completion | None:
        """The cached completion (``cached=True``), or None on a miss."""
        with self._lock:
            row = (
                self._db()
                .execute(
                    "SELECT model, backend, text, prompt_tokens, completion_tokens, latency_s, "
                    "finish_reason, meta FROM calls WHERE key = ?",
                    (key,),
                )
                .fetchone()
            )
            if row is None:
                self._misses += 1
                return None
            self._hits += 1
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
        """Store a finished call (committed before returning)."""
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
            self._puts += 1

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
