"""The replay-pool file format: records, queries and the per-pool summary.

A replay pool is a folder::

    pool.yaml          models with `backend: replay`, `replay: records.jsonl.gz`
    records.jsonl.gz   one ReplayRecord per (model, query, sample)
    queries.jsonl      one QueryRecord per query (question text, reference)
    summary.json       PoolSummary (how it was made, per-model accuracy/tokens)
    README.md          provenance, written for people

Everything is JSON Lines so users can produce recordings with any tool
(RouterBench-like dumps, their own API logs) and import them with
``moagraph pool import jsonl``. Readers validate each line and report the
file, line number and field of the first bad one, because a hand-made
recording is the usual source of errors.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moagraph.errors import DataError

RECORDS_FILE = "records.jsonl.gz"
QUERIES_FILE = "queries.jsonl"
SUMMARY_FILE = "summary.json"
POOL_FILE = "pool.yaml"


class ReplayFormatError(DataError):
    """A recording or queries file has a bad line; the message names file, line and field."""


def _id_to_str(v: Any) -> Any:
    # Datasets often use integer ids; replay lookups key on strings.
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return v


class ReplayRecord(BaseModel):
    """One recorded completion of one model on one query (one sample)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="Model name (as in pool.yaml, or `replay_model`).")
    query_id: str = Field(min_length=1, description="The task example's id.")
    sample: int = Field(0, ge=0, description="Sample index 0..S-1 of repeated samples.")
    text: str = Field(description="The completion text.")
    prompt_tokens: int = Field(
        ge=0, description="Prompt tokens (measured, or estimated: see meta)."
    )
    completion_tokens: int = Field(ge=0, description="Completion tokens.")
    latency_s: float = Field(ge=0, description="Wall time of the call in seconds.")
    score: float | None = Field(
        None, ge=0, le=1, description="Graded quality in [0, 1]: correctness or win probability."
    )
    task: str | None = Field(None, description="Task name, e.g. gsm8k.")
    prompt_hash: str | None = Field(
        None, description="moagraph.models.base.prompt_hash of the messages, if known."
    )
    meta: dict[str, Any] = Field(default_factory=dict, description="Free-form provenance.")

    _ids = field_validator("query_id", mode="before")(_id_to_str)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.model, self.query_id, self.sample)


class QueryRecord(BaseModel):
    """One query of a pool: what the models were asked, and the grader's reference."""

    model_config = ConfigDict(extra="forbid")

    query_id: str = Field(min_length=1)
    question: str
    reference: Any = None
    task: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    _ids = field_validator("query_id", mode="before")(_id_to_str)


class ModelSummary(BaseModel):
    """Per-model statistics of a pool (what `moagraph pool show` prints)."""

    model: str
    n_records: int
    n_queries: int
    n_samples: int = Field(description="Largest number of samples recorded for one query.")
    n_scored: int
    score_mean: float | None = Field(None, description="Mean score: accuracy or win rate.")
    mean_prompt_tokens: float
    mean_completion_tokens: float
    mean_latency_s: float
    total_latency_s: float


class PoolSummary(BaseModel):
    """How a pool was made and what it holds."""

    model_config = ConfigDict(extra="allow")

    name: str
    source: str = Field(description="e.g. 'moagraph record', 'alpaca_eval import'.")
    task: str | None = None
    n_queries: int
    models: list[ModelSummary]
    wall_s: float | None = Field(None, description="Recording wall time in seconds, if recorded.")
    settings: dict[str, Any] = Field(default_factory=dict)


T = TypeVar("T", bound=BaseModel)


def open_text(path: str | Path, mode: str = "rt") -> io.TextIOBase:
    """Open plain or gzip-compressed text by file suffix."""
    p = Path(path)
    if p.suffix == ".gz":
        return gzip.open(p, mode, encoding="utf-8")  # type: ignore[return-value]
    return open(p, mode, encoding="utf-8")  # type: ignore[return-value]


def _describe(err: ValidationError, where: str, model: type[BaseModel]) -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(x) for x in e["loc"]) or "(record)"
        if e["type"] == "missing":
            desc = model.model_fields.get(field)
            hint = f" ({desc.description})" if desc is not None and desc.description else ""
            msg = f"is required{hint}; add it"
        elif e["type"] == "extra_forbidden":
            msg = (
                "is not a known field; rename it to one of "
                f"{', '.join(model.model_fields)} or move it under `meta`"
            )
        else:
            msg = e["msg"]
        parts.append(f"field `{field}` {msg}")
    return f"{where}: " + "; ".join(parts)


def iter_json_objects(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, object)`` for each non-blank line of a JSONL(.gz) file.

    ``where`` ("file line N") is what every later validation error names.
    """
    p = Path(path)
    if not p.exists():
        raise ReplayFormatError(f"{p} does not exist")
    lineno = 0
    try:
        with open_text(p) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{p.name} line {lineno}"
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ReplayFormatError(
                        f"{where}: not valid JSON ({e.msg}); one object per line"
                    ) from None
                if not isinstance(raw, dict):
                    raise ReplayFormatError(
                        f"{where}: expected a JSON object, got {type(raw).__name__}"
                    )
                yield where, raw
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
        raise ReplayFormatError(unreadable_message(p, e, lineno)) from None


def unreadable_message(p: Path, e: BaseException, lines: int) -> str:
    """Why a JSONL(.gz) file cannot be decoded (a truncated or damaged gzip, not UTF-8)."""
    what = (
        "is cut short (the gzip stream ends early: a copy or download that did not finish, "
        "or a writer killed mid-way)"
        if isinstance(e, EOFError)
        else f"cannot be read ({type(e).__name__}: {e})"
    )
    return (
        f"{p} {what}; {lines} lines were read before that. Replace it with a complete copy "
        "(or record it again); it must be UTF-8 JSONL, optionally gzip-compressed (.gz)"
    )


def iter_jsonl(path: str | Path, model: type[T]) -> Iterator[T]:
    """Validated rows of a JSONL(.gz) file; blank lines are skipped."""
    for where, raw in iter_json_objects(path):
        try:
            yield model.model_validate(raw)
        except ValidationError as e:
            raise ReplayFormatError(_describe(e, where, model)) from None


def read_records(path: str | Path, *, tolerate_truncated_tail: bool = False) -> list[ReplayRecord]:
    """All records of a file. ``tolerate_truncated_tail`` drops a half-written last line
    (what a killed recorder leaves behind) instead of failing."""
    p = Path(path)
    if not tolerate_truncated_tail:
        return list(iter_jsonl(p, ReplayRecord))
    out: list[ReplayRecord] = []
    try:
        with open_text(p) as fh:
            lines = fh.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
        raise ReplayFormatError(unreadable_message(p, e, 0)) from None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(ReplayRecord.model_validate_json(line))
        except ValidationError:
            if i >= len(lines) - 2:  # the last non-empty line may be cut short
                break
            raise ReplayFormatError(f"{p.name} line {i + 1}: invalid record") from None
    return out


def read_queries(path: str | Path) -> list[QueryRecord]:
    return list(iter_jsonl(path, QueryRecord))


def _compact(row: BaseModel) -> dict[str, Any]:
    d = row.model_dump(mode="json", exclude_none=True)
    if not d.get("meta"):
        d.pop("meta", None)
    return d


def write_jsonl(path: str | Path, rows: Iterable[BaseModel]) -> int:
    """Write rows (gzip if the name ends in .gz, deterministic: mtime 0). Returns the count."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = p.with_name(p.name + ".tmp")
    if p.suffix == ".gz":
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz,
        ):
            for r in rows:
                gz.write((json.dumps(_compact(r), ensure_ascii=False) + "\n").encode("utf-8"))
                n += 1
    else:
        with open(tmp, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(_compact(r), ensure_ascii=False) + "\n")
                n += 1
    tmp.replace(p)
    return n


def summarize(
    records: Iterable[ReplayRecord], model_order: list[str] | None = None
) -> list[ModelSummary]:
    """Per-model statistics of a set of records."""
    by_model: dict[str, list[ReplayRecord]] = {}
    for r in records:
        by_model.setdefault(r.model, []).append(r)
    names = [m for m in (model_order or []) if m in by_model] + sorted(
        m for m in by_model if m not in (model_order or [])
    )
    out = []
    for m in names:
        rs = by_model[m]
        per_query: dict[str, int] = {}
        for r in rs:
            per_query[r.query_id] = per_query.get(r.query_id, 0) + 1
        scored = [r.score for r in rs if r.score is not None]
        n = len(rs)
        out.append(
            ModelSummary(
                model=m,
                n_records=n,
                n_queries=len(per_query),
                n_samples=max(per_query.values()),
                n_scored=len(scored),
                score_mean=(sum(scored) / len(scored)) if scored else None,
                mean_prompt_tokens=sum(r.prompt_tokens for r in rs) / n,
                mean_completion_tokens=sum(r.completion_tokens for r in rs) / n,
                mean_latency_s=sum(r.latency_s for r in rs) / n,
                total_latency_s=sum(r.latency_s for r in rs),
            )
        )
    return out


def pool_dir_queries(pool_dir: str | Path) -> list[QueryRecord] | None:
    """The queries file next to a pool.yaml (None if the pool has none).

    Evaluation on a replay pool should take its examples from here, so it asks
    only for queries that were recorded.
    """
    d = Path(pool_dir)
    if d.is_file():
        d = d.parent
    for name in (QUERIES_FILE, QUERIES_FILE + ".gz"):
        if (d / name).exists():
            return read_queries(d / name)
    return None
