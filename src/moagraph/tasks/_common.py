"""Shared plumbing of the task loaders: where data lives, reading, sampling, splits."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from moagraph.tasks.base import Example, Task, TaskDataError, TaskError

T = TypeVar("T")

BUNDLED_DIR = Path(__file__).parent / "data"
DATA_HINT = "set MOAGRAPH_DATA_DIR to the folder that holds it, or pass --data-dir / data_dir="


def shared_data_dir() -> Path | None:
    """The shared data folder: ``$MOAGRAPH_DATA_DIR``, else the first ``shared/data``
    or ``../shared/data`` found walking up from the cwd and from this file."""
    env = os.environ.get("MOAGRAPH_DATA_DIR")
    if env:
        return Path(env).expanduser()
    starts = [Path.cwd().resolve(), Path(__file__).resolve().parent]
    for start in starts:
        for d in (start, *start.parents):
            for cand in (d / "shared" / "data", d.parent / "shared" / "data"):
                if cand.is_dir():
                    return cand
    return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[dict[str, Any]] = []
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise TaskError(f"{path}:{lineno} is not valid JSON ({e.msg}); fix or remove that line") from None
    return rows


def iter_bundled(name: str) -> Iterator[dict[str, Any]]:
    yield from read_jsonl(BUNDLED_DIR / name)


def seeded_sample(items: Sequence[T], n: int | None, seed: int) -> list[T]:
    """``n`` items drawn with ``seed``, kept in their original order (all if n is None)."""
    if n is None or n >= len(items):
        return list(items)
    if n < 0:
        raise TaskError(f"n must be >= 0 (got {n}); pass the number of examples to load")
    idx = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in idx]


def in_train_fraction(key: str, fraction: float = 0.2) -> bool:
    """Stable hash split for data sets published as one file (HumanEval, AlpacaEval)."""
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return h / 2**64 < fraction


class FileTask(Task):
    """A task whose examples come from files: bundled sample, or a data dir."""

    splits: tuple[str, ...] = ("sample", "train", "test")

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self._data_dir = Path(data_dir).expanduser() if data_dir is not None else None
        self._cache: dict[str, list[Example]] = {}

    @property
    def data_dir(self) -> Path | None:
        return self._data_dir if self._data_dir is not None else shared_data_dir()

    def data_file(self, *relative: str, what: str = "") -> Path:
        """Path of a file under the data dir; TaskDataError naming where we looked if missing."""
        base = self.data_dir
        rel = Path(*relative)
        if base is None:
            raise TaskDataError(
                f"task {self.name!r}: no data dir found for {what or rel} (looked for "
                f"$MOAGRAPH_DATA_DIR and shared/data above the cwd); {DATA_HINT}. "
                f"The bundled split 'sample' needs no data dir."
            )
        path = base / rel
        if not path.exists():
            raise TaskDataError(
                f"task {self.name!r}: data file {path} does not exist; {DATA_HINT}"
                + (f" ({what})" if what else "")
            )
        return path

    def load(self, split: str = "test", n: int | None = None, seed: int = 0) -> list[Example]:
        if split not in self.splits:
            raise TaskError(
                f"task {self.name!r} has no split {split!r}; use one of: {', '.join(self.splits)}"
            )
        if split not in self._cache:
            self._cache[split] = self._load_split(split)
        return seeded_sample(self._cache[split], n, seed)

    def _load_split(self, split: str) -> list[Example]:
        raise NotImplementedError
