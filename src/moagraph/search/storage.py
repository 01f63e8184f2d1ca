"""Where studies live: one small protocol, a SQLite and an in-memory implementation.

A storage holds many named studies; each has a config, its trials (complete or
failed), the held-out re-evaluations and a final result. :func:`get_storage`
turns what a user writes (``None``, ``"sqlite:///runs/study.sqlite"``, a path,
a storage object) into a storage, Optuna style.

>>> from moagraph.search.storage import InMemoryStorage, get_storage
>>> s = get_storage(None)
>>> isinstance(s, InMemoryStorage), s.study_names()
(True, [])
"""

from __future__ import annotations

import copy
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from moagraph._sqlite import enable_wal
from moagraph.errors import ConfigError
from moagraph.graph.spec import Graph
from moagraph.search.space import graph_key

__all__ = [
    "COMPLETE",
    "FAILED",
    "InMemoryStorage",
    "SQLiteStorage",
    "StorageError",
    "StudyStorage",
    "TrialRow",
    "get_storage",
]

COMPLETE = "complete"
FAILED = "failed"


class StorageError(ConfigError):
    """A storage URL or path cannot be used; the message says what to write instead."""


@dataclass
class TrialRow:
    """One evaluated graph. A ``failed`` trial's evaluation raised: its ``error`` says
    why, its reward and costs are 0, and it never counts as best."""

    number: int
    phase: str
    graph: Graph
    reward: float
    objective: float
    cost: float
    dollars: float
    latency: float
    state: dict[str, Any]
    status: str = COMPLETE
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == FAILED


@runtime_checkable
class StudyStorage(Protocol):
    """What a study needs from its storage (every method takes the study's name)."""

    def study_names(self) -> list[str]: ...

    def create_study(self, name: str, config: dict[str, Any]) -> None: ...

    def study_config(self, name: str) -> dict[str, Any] | None:
        """The stored config, or None when there is no such study."""
        ...

    def add_trial(self, study: str, row: TrialRow) -> None: ...

    def trials(self, study: str) -> list[TrialRow]: ...

    def add_heldout(self, study: str, row: dict[str, Any]) -> None: ...

    def heldout_rows(self, study: str) -> list[dict[str, Any]]: ...

    def set_result(self, study: str, result: dict[str, Any], status: str) -> None: ...

    def result(self, study: str) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


class InMemoryStorage:
    """Studies in this process only (the default of :func:`moagraph.search.optimize`)."""

    def __init__(self) -> None:
        self._studies: dict[str, dict[str, Any]] = {}

    def study_names(self) -> list[str]:
        return list(self._studies)

    def create_study(self, name: str, config: dict[str, Any]) -> None:
        if name in self._studies:
            raise StorageError(f"study {name!r} already exists in this in-memory storage")
        self._studies[name] = {
            "config": json.loads(json.dumps(config, sort_keys=True)),
            "trials": {},
            "heldout": {},
            "result": None,
            "status": "running",
        }

    def study_config(self, name: str) -> dict[str, Any] | None:
        s = self._studies.get(name)
        return copy.deepcopy(s["config"]) if s else None

    def _get(self, name: str) -> dict[str, Any]:
        if name not in self._studies:
            raise StorageError(f"study {name!r} is not in this in-memory storage")
        return self._studies[name]

    def add_trial(self, study: str, row: TrialRow) -> None:
        self._get(study)["trials"][row.number] = copy.deepcopy(row)

    def trials(self, study: str) -> list[TrialRow]:
        rows = self._get(study)["trials"]
        return [copy.deepcopy(rows[n]) for n in sorted(rows)]

    def add_heldout(self, study: str, row: dict[str, Any]) -> None:
        key = graph_key(Graph.model_validate(row["graph"]))
        self._get(study)["heldout"][key] = copy.deepcopy(row)

    def heldout_rows(self, study: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(r) for r in self._get(study)["heldout"].values()]

    def set_result(self, study: str, result: dict[str, Any], status: str) -> None:
        s = self._get(study)
        s["result"], s["status"] = json.loads(json.dumps(result)), status

    def result(self, study: str) -> dict[str, Any] | None:
        r = self._get(study)["result"]
        return copy.deepcopy(r) if r is not None else None

    def close(self) -> None:
        """Nothing to release (the studies stay readable)."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
  name TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL,
  status TEXT NOT NULL DEFAULT 'running', result TEXT
);
CREATE TABLE IF NOT EXISTS trials (
  study TEXT NOT NULL, number INTEGER NOT NULL, phase TEXT NOT NULL,
  graph TEXT NOT NULL, graph_key TEXT NOT NULL, reward REAL NOT NULL, objective REAL NOT NULL,
  cost REAL NOT NULL, dollars REAL NOT NULL, latency REAL NOT NULL, state TEXT, created REAL NOT NULL,
  status TEXT NOT NULL DEFAULT 'complete', error TEXT,
  PRIMARY KEY (study, number)
);
CREATE TABLE IF NOT EXISTS heldout (
  study TEXT NOT NULL, graph_key TEXT NOT NULL, graph TEXT NOT NULL, source TEXT NOT NULL,
  train_reward REAL, heldout_reward REAL NOT NULL, cost REAL NOT NULL, latency REAL NOT NULL,
  PRIMARY KEY (study, graph_key)
);
"""


class SQLiteStorage:
    """Studies in one SQLite file (WAL; a file can hold many studies). Files written
    before trials had a status are upgraded in place (their trials are complete)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path))
        enable_wal(self.db)
        self.db.executescript(SCHEMA)
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(trials)")}
        if "status" not in cols:
            self.db.execute("ALTER TABLE trials ADD COLUMN status TEXT NOT NULL DEFAULT 'complete'")
        if "error" not in cols:
            self.db.execute("ALTER TABLE trials ADD COLUMN error TEXT")
        self.db.commit()

    def __repr__(self) -> str:
        return f"SQLiteStorage({str(self.path)!r})"

    def study_names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM studies ORDER BY created")]

    def create_study(self, name: str, config: dict[str, Any]) -> None:
        try:
            self.db.execute(
                "INSERT INTO studies(name, config, created) VALUES (?,?,?)",
                (name, json.dumps(config, sort_keys=True), time.time()),
            )
        except sqlite3.IntegrityError:
            raise StorageError(f"study {name!r} already exists in {self.path}") from None
        self.db.commit()

    def study_config(self, name: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT config FROM studies WHERE name=?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def add_trial(self, study: str, row: TrialRow) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO trials(study, number, phase, graph, graph_key, reward, objective, "
            "cost, dollars, latency, state, created, status, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                study,
                row.number,
                row.phase,
                json.dumps(row.graph.to_dict()),
                graph_key(row.graph),
                row.reward,
                row.objective,
                row.cost,
                row.dollars,
                row.latency,
                json.dumps(row.state),
                time.time(),
                row.status,
                row.error,
            ),
        )
        self.db.commit()

    def trials(self, study: str) -> list[TrialRow]:
        rows = self.db.execute(
            "SELECT number, phase, graph, reward, objective, cost, dollars, latency, state, status, "
            "error FROM trials WHERE study=? ORDER BY number",
            (study,),
        ).fetchall()
        return [
            TrialRow(
                n,
                ph,
                Graph.model_validate(json.loads(g)),
                r,
                o,
                c,
                d,
                lat,
                json.loads(st or "{}"),
                status or COMPLETE,
                err,
            )
            for n, ph, g, r, o, c, d, lat, st, status, err in rows
        ]

    def add_heldout(self, study: str, row: dict[str, Any]) -> None:
        g = Graph.model_validate(row["graph"])
        self.db.execute(
            "INSERT OR REPLACE INTO heldout VALUES (?,?,?,?,?,?,?,?)",
            (
                study,
                graph_key(g),
                json.dumps(row["graph"]),
                row["source"],
                row["train_reward"],
                row["heldout_reward"],
                row["cost"],
                row["latency"],
            ),
        )
        self.db.commit()

    def heldout_rows(self, study: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT graph, source, train_reward, heldout_reward, cost, latency FROM heldout WHERE study=?",
            (study,),
        ).fetchall()
        return [
            {
                "graph": json.loads(g),
                "source": s,
                "train_reward": tr,
                "heldout_reward": h,
                "cost": c,
                "latency": lat,
            }
            for g, s, tr, h, c, lat in rows
        ]

    def set_result(self, study: str, result: dict[str, Any], status: str) -> None:
        self.db.execute(
            "UPDATE studies SET result=?, status=? WHERE name=?",
            (json.dumps(result), status, study),
        )
        self.db.commit()

    def result(self, study: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT result FROM studies WHERE name=?", (study,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def close(self) -> None:
        self.db.close()


StorageLike = StudyStorage | str | Path | None


def get_storage(storage: StorageLike) -> StudyStorage:
    """``None`` -> a new :class:`InMemoryStorage`; ``"sqlite:///PATH"``, a path string or a
    ``Path`` -> :class:`SQLiteStorage`; a storage object is returned as is."""
    if storage is None:
        return InMemoryStorage()
    if isinstance(storage, Path):
        return SQLiteStorage(storage)
    if isinstance(storage, str):
        if storage.startswith("sqlite:///"):
            return SQLiteStorage(storage[len("sqlite:///") :])
        if "://" in storage:
            raise StorageError(
                f"storage {storage!r}: only sqlite:///PATH, a file path, None (in memory) "
                "or a StudyStorage object are supported"
            )
        return SQLiteStorage(storage)
    if isinstance(storage, StudyStorage):
        return storage
    raise StorageError(
        f"storage {storage!r}: use None, 'sqlite:///PATH', a path or a StudyStorage object"
    )
