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
    return [row for _, row in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: Path) -> list[tuple[int, Any]]:
    """``(line number, parsed row)`` of every non-blank line; a file that cannot be read
    (not UTF-8, a bad gzip, a folder, no permission) is a :class:`TaskError` naming it."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[tuple[int, Any]] = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append((lineno, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise TaskError(
                        f"{path}:{lineno} is not valid JSON ({e.msg}); fix or remove that line"
                    ) from None
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise TaskError(
            f"data file {path} cannot be read ({type(e).__name__}: {e}); it must be UTF-8 "
            "JSONL (optionally .gz): replace it with a good copy"
        ) from None
    return rows


def _type_names(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in (t if isinstance(t, tuple) else (t,)))


def read_rows(
    path: Path, fields: dict[str, type | tuple[type, ...]], what: str
) -> list[tuple[int, dict[str, Any]]]:
    """JSONL rows with their line numbers, each checked to be an object with ``fields``
    of the given types; the error names the file, the line, the field and the fix."""
    out = []
    for lineno, row in read_jsonl_numbered(path):
        check_row(row, fields, f"{path}:{lineno}", what)
        out.append((lineno, row))
    return out


def check_row(row: Any, fields: dict[str, type | tuple[type, ...]], where: str, what: str) -> None:
    layout = ", ".join(f"{k}: {_type_names(t)}" for k, t in fields.items())
    if not isinstance(row, dict):
        raise TaskError(
            f"{where}: a {what} row must be a JSON object {{{layout}}}, got "
            f"{type(row).__name__}; fix or remove that line"
        )
    for k, t in fields.items():
        if k not in row:
            raise TaskError(
                f"{where}: {what} row lacks field `{k}` (rows need {{{layout}}}); "
                "fix or remove that line"
            )
        v = row[k]
        if not isinstance(v, t) or (
            isinstance(v, bool) and bool not in (t if isinstance(t, tuple) else (t,))
        ):
            raise TaskError(
                f"{where}: {what} field `{k}` is {type(v).__name__} {str(v)[:40]!r}, expected "
                f"{_type_names(t)}; fix or remove that line"
            )


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
