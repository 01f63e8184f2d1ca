"""Replay pools: answer from recorded outputs instead of a live model.

Graph search and router training evaluate thousands of (model, query,
sample) calls; with a recording they cost nothing and are exactly
reproducible. One record per (model, query, sample), JSONL or JSONL.gz::

    {"model", "query_id", "sample", "prompt_hash"?, "text", "prompt_tokens",
     "completion_tokens", "latency_s", "score"?, "task"?}

First-layer nodes are found by query id (the prompt text may differ between
the recording and today's template); other nodes by the prompt's hash.
"""

from __future__ import annotations

import fcntl
import gzip
import io
import json
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from moagraph.models.base import (
    Backend,
    Completion,
    LLMRequest,
    ReplayMiss,
    TokenCallback,
    emit,
)
from moagraph.models.pool import ModelSpec, PoolError

ReplayMode = Literal["strict", "record"]
_REQUIRED = ("model", "query_id", "sample", "text")


class ReplayFileError(PoolError):
    """A replay file is missing or holds a malformed record."""


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _unreadable(p: Path, e: BaseException, n: int) -> ReplayFileError:
    """A recording that cannot be decoded (a truncated or damaged gzip, not UTF-8)."""
    what = (
        "is cut short (the gzip stream ends early: a copy or download that did not finish, "
        "or a recorder killed while writing)"
        if isinstance(e, EOFError)
        else f"cannot be read ({type(e).__name__}: {e})"
    )
    return ReplayFileError(
        f"replay file {p} {what}; {n} records were read before that. Replace it with a complete copy "
        "(or record it again with `moagraph record`); it must be UTF-8 JSONL, optionally .gz"
    )


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL(.gz) file, validated enough to index. A file that cannot be
    decoded (truncated or damaged gzip, not UTF-8) is a :class:`ReplayFileError` naming it."""
    p = Path(path)
    n = 0
    try:
        for rec in _iter_records(p):
            n += 1
            yield rec
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
        raise _unreadable(p, e, n) from None


def _iter_records(p: Path) -> Iterator[dict[str, Any]]:
    with _open_text(p) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ReplayFileError(f"{p}:{lineno}: not valid JSON ({e.msg})") from None
            missing = [k for k in _REQUIRED if k not in rec]
            if missing:
                raise ReplayFileError(
                    f"{p}:{lineno}: record lacks {', '.join(missing)}; every record needs "
                    f"{', '.join(_REQUIRED)}"
                )
            yield rec


def _encode(records: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def write_records(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write records to a new JSONL (or .jsonl.gz) file, replacing it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = _encode(records)
    tmp = p.with_name(p.name + ".tmp")
    if p.suffix == ".gz":
        with gzip.open(tmp, "wb") as f:
            f.write(data)
    else:
        tmp.write_bytes(data)
    tmp.replace(p)
    return p


class ReplayStore:
    """An indexed recording: by (model, query_id, sample) and (model, prompt_hash, sample)."""

    def __init__(self, path: str | Path, *, must_exist: bool = True) -> None:
        self.path = Path(path)
        self._by_query: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._by_prompt: dict[tuple[str, str, int], dict[str, Any]] = {}
        if self.path.exists():
            # A shared lock for the whole read: appends hold an exclusive one, so a reader
            # never sees a record half-written by another process (a torn last line).
            with open(self.path, "rb") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_SH)
                try:
                    for rec in iter_records(self.path):
                        self._index(rec)
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        elif must_exist:
            raise ReplayFileError(
                f"replay file {self.path} does not exist; record one with `moagraph record` "
                "or fix the pool's `replay:` path"
            )

    def _index(self, rec: dict[str, Any]) -> None:
        model, sample = str(rec["model"]), int(rec["sample"])
        self._by_query[(model, str(rec["query_id"]), sample)] = rec
        if rec.get("prompt_hash"):
            self._by_prompt[(model, str(rec["prompt_hash"]), sample)] = rec

    def __len__(self) -> int:
        return len(self._by_query)

    def get(
        self,
        model: str,
        *,
        query_id: str | None = None,
        prompt_hash: str | None = None,
        sample: int = 0,
    ) -> dict[str, Any] | None:
        """The record for a query id (preferred) or prompt hash, or None."""
        if query_id is not None:
            rec = self._by_query.get((model, query_id, sample))
            if rec is not None:
                return rec
        if prompt_hash is not None:
            return self._by_prompt.get((model, prompt_hash, sample))
        return None

    def models(self) -> list[str]:
        return sorted({k[0] for k in self._by_query})

    def query_ids(self, model: str | None = None) -> list[str]:
        return sorted({k[1] for k in self._by_query if model is None or k[0] == model})

    def n_samples(self, model: str, query_id: str) -> int:
        """How many consecutive samples 0..n-1 are recorded."""
        n = 0
        while (model, query_id, n) in self._by_query:
            n += 1
        return n

    def score(self, model: str, query_id: str, sample: int = 0) -> float | None:
        rec = self._by_query.get((model, query_id, sample))
        return None if rec is None or rec.get("score") is None else float(rec["score"])

    def records(self) -> list[dict[str, Any]]:
        return list(self._by_query.values())

    def append(self, record: dict[str, Any]) -> None:
        """Append one record to the file and the index.

        An exclusive ``flock`` on the file makes concurrent appends from several
        processes safe: each record lands whole on its own line (or gzip member).
        """
        missing = [k for k in _REQUIRED if k not in record]
        if missing:
            raise ValueError(f"replay record lacks {', '.join(missing)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = _encode([record])
        with open(self.path, "ab") as raw:
            fcntl.flock(raw.fileno(), fcntl.LOCK_EX)
            try:
                if self.path.suffix == ".gz":
                    with gzip.GzipFile(fileobj=raw, mode="ab") as gz:  # one gzip member a record
                        gz.write(data)
                else:
                    raw.write(data)
                raw.flush()
            finally:
                fcntl.flock(raw.fileno(), fcntl.LOCK_UN)
        self._index(record)


class ReplayBackend:
    """A pool model answered from a recording.

    ``strict``: a missing recording raises :class:`ReplayMiss`. ``record``:
    a miss calls ``live``, appends its answer to the file and returns it, so a
    recording grows as experiments run and resumes where it stopped.
    """

    kind = "replay"
    cacheable = False  # the recording is already a cache

    def __init__(
        self,
        spec: ModelSpec,
        path: str | Path,
        mode: ReplayMode = "strict",
        live: Backend | None = None,
        *,
        task: str | None = None,
    ) -> None:
        if mode not in ("strict", "record"):
            raise ValueError(f"replay mode {mode!r}: use 'strict' or 'record'")
        if mode == "record" and live is None:
            raise ValueError(f"model {spec.name!r}: replay mode 'record' needs a `live` backend")
        self.spec = spec
        self.mode = mode
        self.live = live
        self.task = task
        self.store = ReplayStore(path, must_exist=mode == "strict")
        self._questions: dict[str, str] | None = None

    def _question_index(self) -> dict[str, str]:
        """Question text -> query id, from the pool's ``queries.jsonl`` (if any).

        Lets a client that only has the question text (the server, a chat UI)
        hit a recording made under the task's query ids.
        """
        if self._questions is None:
            self._questions = {}
            qfile = self.path.parent / "queries.jsonl"
            if qfile.exists():
                for line in qfile.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        q = json.loads(line)
                        self._questions[str(q.get("question", "")).strip()] = str(q["query_id"])
        return self._questions

    def _lookup_by_question(self, name: str, request: LLMRequest) -> dict[str, Any] | None:
        users = [m["content"] for m in request.messages if m["role"] == "user"]
        if not users:
            return None
        qid = self._question_index().get(users[-1].strip())
        if qid is None or qid == request.query_id:
            return None
        return self.store.get(name, query_id=qid, sample=request.sample_index)

    @property
    def path(self) -> Path:
        return self.store.path

    def recorded_name(self, spec: ModelSpec) -> str:
        return spec.replay_model or spec.name

    def identity(self, model: ModelSpec) -> str:
        return f"replay:{self.path.resolve()}:{self.recorded_name(model)}"

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        spec = request.model
        name = self.recorded_name(spec)
        phash = request.prompt_hash()
        rec = self.store.get(
            name, query_id=request.query_id, prompt_hash=phash, sample=request.sample_index
        )
        if rec is None and len(request.messages) <= 2:  # a first-turn question, asked verbatim
            rec = self._lookup_by_question(name, request)
        if rec is not None:
            await emit(on_token, rec["text"])
            return self._completion(spec, rec)
        if self.mode == "strict":
            raise ReplayMiss(self._miss_message(name, request), model=spec.name)
        assert self.live is not None
        t0 = time.perf_counter()
        live = await self.live.complete(request, on_token)
        record: dict[str, Any] = {
            "model": name,
            "query_id": request.query_id if request.query_id is not None else phash,
            "sample": request.sample_index,
            "prompt_hash": phash,
            "text": live.text,
            "prompt_tokens": live.prompt_tokens,
            "completion_tokens": live.completion_tokens,
            "latency_s": live.latency_s or time.perf_counter() - t0,
        }
        if self.task:
            record["task"] = self.task
        self.store.append(record)
        live.meta = {**live.meta, "recorded": True}
        return live

    def _completion(self, spec: ModelSpec, rec: dict[str, Any]) -> Completion:
        meta: dict[str, Any] = {"replay_model": rec["model"], "query_id": rec["query_id"]}
        if rec.get("score") is not None:
            meta["score"] = float(rec["score"])
        return Completion(
            text=rec["text"],
            prompt_tokens=int(rec.get("prompt_tokens") or 0),
            completion_tokens=int(rec.get("completion_tokens") or 0),
            latency_s=float(rec.get("latency_s") or 0.0),
            model=spec.name,
            backend=self.kind,
            finish_reason=str(rec.get("finish_reason", "stop")),
            meta=meta,
        )

    def _miss_message(self, name: str, request: LLMRequest) -> str:
        what = (
            f"query {request.query_id!r}"
            if request.query_id is not None
            else f"prompt hash {request.prompt_hash()}"
        )
        have = self.store.n_samples(name, request.query_id) if request.query_id is not None else 0
        known = (
            ""
            if name in self.store.models()
            else (
                f"; the recording has no model {name!r} (it has: {', '.join(self.store.models()) or 'none'};"
                " set `replay_model` in the pool to map names)"
            )
        )
        return (
            f"replay {self.path}: no recording for model {name!r}, {what}, sample "
            f"{request.sample_index} ({have} samples recorded for this query){known}. "
            "Record it with `moagraph record --pool POOL --task TASK` or run the replay "
            "backend with mode='record' and a live backend."
        )

    async def aclose(self) -> None:
        if self.live is not None:
            await self.live.aclose()
