"""SQLite run store: one row per finished query, committed at once.

Because every result is its own transaction (WAL mode), a run that is killed
loses only the queries in flight, and ``resume`` skips what is already there.
Several processes may read while one writes.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from moagraph._sqlite import create_private, enable_wal
from moagraph.errors import DataError
from moagraph.graph.trace import Trace
from moagraph.models.redact import redact_config, redact_url

__all__ = ["ResultRow", "RunInfo", "RunStore", "RunStoreError", "config_diff"]

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


class RunStoreError(DataError):
    """A run id clash, a missing run, a resume with another configuration, or a store
    file that cannot be read or written; the message names the file and the fix."""


_NOT_RECORDED = "(not recorded)"


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    """The config as it reads back from the store (tuples -> lists, paths -> str, ...),
    credentials in URLs (``http://user:pass@host``) redacted: they are never written."""
    out: dict[str, Any] = redact_config(json.loads(json.dumps(config, sort_keys=True, default=str)))
    return out


def config_diff(stored: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Where two JSON configs differ: ``(dotted.field, stored value, new value)``,
    descending into dicts and same-length lists so the field is as precise as possible."""
    if isinstance(stored, dict) and isinstance(new, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in sorted(set(stored) | set(new), key=str):
            sub = f"{path}.{k}" if path else str(k)
            out += config_diff(stored.get(k, _NOT_RECORDED), new.get(k, _NOT_RECORDED), sub)
        return out
    if isinstance(stored, list) and isinstance(new, list) and len(stored) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(stored, new, strict=True)):
            out += config_diff(a, b, f"{path}.{i}" if path else str(i))
        return out
    return [] if stored == new else [(path or "(config)", stored, new)]


def _short(v: Any, limit: int = 120) -> str:
    text = v if v == _NOT_RECORDED else json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        self._db: sqlite3.Connection | None = None
        if self.path.is_dir():
            raise RunStoreError(
                f"run store {self.path} is a directory; pass --store PATH to a SQLite file "
                f"(e.g. {self.path / 'moagraph.sqlite'})"
            )
        with self._errors("open"):
            # 0600 (and its -wal/-shm): traces hold prompts, answers and endpoints
            create_private(self.path)
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            enable_wal(self._db)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn SQLite/OS failures into a :class:`RunStoreError` naming the file and the fix."""
        try:
            yield
        except RunStoreError:
            raise
        except (sqlite3.Error, OSError) as e:
            if self._db is not None and action == "open":
                self._db.close()
                self._db = None
            raise RunStoreError(self._explain(e, action)) from e

    def _explain(self, e: BaseException, action: str) -> str:
        msg = str(e)
        low = msg.lower()
        where = f"run store {self.path}"
        if "not a database" in low or "malformed" in low or "file is encrypted" in low:
            return (
                f"{where} is not a SQLite database or is corrupt ({msg}); pass --store with a "
                "new path, or move that file away (it is not deleted for you)"
            )
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "disk is full" in low:
            return (
                f"{where}: no space left on the device while trying to {action} ({msg}); "
                "free some space or pass --store PATH on another disk. Results already "
                "committed are kept; continue later with --resume"
            )
        if (
            "readonly" in low
            or "read-only" in low
            or "unable to open" in low
            or "permission" in low
            or isinstance(e, PermissionError)
        ):
            return (
                f"{where} cannot be {'opened' if action == 'open' else 'written'} ({msg}); "
                "make the file and its folder writable (SQLite writes a -wal file beside it), "
                "or pass --store PATH somewhere writable"
            )
        return (
            f"{where}: cannot {action} ({type(e).__name__}: {msg}); pass --store with another path"
        )

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RunStoreError(f"run store {self.path} is closed")
        return self._db

    # --- runs ---------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        config: dict[str, Any],
        *,
        resume: bool = False,
        strict: bool = False,
    ) -> RunInfo:
        """Start ``run_id``; with ``resume`` an existing run is reopened instead.

        ``strict`` (what ``moagraph eval --resume`` uses): resuming a run id that
        is not in the store is an error, and so is a ``config`` that differs from
        the stored one, since its results would be reported as if they came from
        this configuration. Without ``strict`` a resume creates a missing run and
        keeps the stored config (the server's request log reopens its run this way).
        """
        existing = self.run(run_id)
        if existing is None and resume and strict:
            known = [r.run_id for r in self.runs()]
            raise RunStoreError(
                f"--resume: run id {run_id!r} is not in {self.path} "
                f"(known: {', '.join(known[-10:]) or 'none'}); check --run-id and --store, "
                "or drop --resume to start a new run"
            )
        if existing is not None:
            if not resume:
                raise RunStoreError(
                    f"run id {run_id!r} already exists in {self.path}; pass --resume to continue it "
                    "or choose another --run-id"
                )
            if strict:
                diffs = config_diff(redact_config(existing.config), _jsonable(config))
                if diffs:
                    shown = "; ".join(
                        f"`{f}`: stored {_short(a)}, now {_short(b)}" for f, a, b in diffs[:3]
                    )
                    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
                    raise RunStoreError(
                        f"--resume: run {run_id!r} in {self.path} was made with another "
                        f"configuration: {shown}{more}. Its {existing.n_results} stored results "
                        "would be reported as this run's; rerun without --resume under a new "
                        "--run-id, or resume with the original options"
                    )
            self.set_status(run_id, "running")
            return self.run(run_id)  # type: ignore[return-value]
        with self._errors("create the run"):
            self.db.execute(
                "INSERT INTO runs(run_id, created, config, status) VALUES (?, ?, ?, 'running')",
                (run_id, time.time(), json.dumps(_jsonable(config), sort_keys=True)),
            )
        return self.run(run_id)  # type: ignore[return-value]

    def set_status(self, run_id: str, status: str) -> None:
        with self._errors("record the run status"):
            self.db.execute("UPDATE runs SET status=? WHERE run_id=?", (status, run_id))

    def run(self, run_id: str) -> RunInfo | None:
        with self._errors("read"):
            return self._run(run_id)

    def _run(self, run_id: str) -> RunInfo | None:
        row = self.db.execute(
            "SELECT r.run_id, r.created, r.config, r.status, "
            "(SELECT COUNT(*) FROM results x WHERE x.run_id=r.run_id) FROM runs r WHERE r.run_id=?",
            (run_id,),
        ).fetchone()
        return None if row is None else RunInfo(row[0], row[1], json.loads(row[2]), row[3], row[4])

    def runs(self) -> list[RunInfo]:
        with self._errors("read"):
            ids = [r[0] for r in self.db.execute("SELECT run_id FROM runs ORDER BY created")]
        return [r for r in (self.run(i) for i in ids) if r is not None]

    # --- results ------------------------------------------------------------
    def add_result(self, run_id: str, trace: Trace, *, flops_norm: float | None = None) -> None:
        """Record one finished query (replacing an earlier attempt) and commit."""
        with self._errors("write a result"):
            self._insert_result(run_id, trace, flops_norm)

    def _insert_result(self, run_id: str, trace: Trace, flops_norm: float | None) -> None:
        error = redact_url(trace.error) if trace.error is not None else None
        data = trace.to_dict()
        if data.get("error") is not None:
            data["error"] = error
        for node in data.get("nodes", []):
            if node.get("error"):
                node["error"] = redact_url(node["error"])
        self.db.execute(
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
                error,
                json.dumps(data, ensure_ascii=False, default=str),
                time.time(),
            ),
        )

    def finished_ids(self, run_id: str, *, include_errors: bool = True) -> set[str]:
        """Queries a resumed run skips. A query that failed for a transient reason (a
        crashed local model, a timeout: ``meta.transient_error`` in its trace) is not
        finished, so it always runs again; other errors only with ``include_errors=False``."""
        sql = (
            "SELECT example_id FROM results WHERE run_id=? AND (error IS NULL OR "
            "coalesce(json_extract(trace, '$.meta.transient_error'), 0) = 0)"
        )
        if not include_errors:
            sql += " AND error IS NULL"
        with self._errors("read"):
            return {r[0] for r in self.db.execute(sql, (run_id,))}

    def results(self, run_id: str) -> list[ResultRow]:
        with self._errors("read"):
            rows = self.db.execute(
                "SELECT example_id, score, flops, flops_norm, dollars, latency_s, wall_s, "
                "cache_hits, error FROM results WHERE run_id=? ORDER BY finished",
                (run_id,),
            ).fetchall()
        return [ResultRow(*r) for r in rows]

    def trace(self, run_id: str, example_id: str) -> Trace:
        with self._errors("read"):
            row = self.db.execute(
                "SELECT trace FROM results WHERE run_id=? AND example_id=?", (run_id, example_id)
            ).fetchone()
        if row is None:
            raise RunStoreError(f"run {run_id!r} has no result for example {example_id!r}")
        return Trace.from_dict(json.loads(row[0]))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
