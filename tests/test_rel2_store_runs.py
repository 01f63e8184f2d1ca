"""Issue #25, "runs and stores": a resume never mixes two data sets or two samples, a
full call-cache disk is named and survived, and `eval`'s exit code says when queries failed.

Real SQLite files, real CLI runs (typer's CliRunner), a real tmpfs for the full disk and a
real HTTP server speaking the OpenAI protocol (the call cache skips replay pools).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moagraph.cli import _register, app
from moagraph.models.base import Completion, LLMRequest, TokenCallback
from moagraph.models.pool import ModelSpec, Pool
from moagraph.models.runtime import PoolRuntime
from moagraph.pools.record import RecordSettings, RecordSettingsError, record_pool
from moagraph.pools.schema import read_queries, read_records
from moagraph.tasks.gsm8k import GSM8KTask

_register()
runner = CliRunner()
TASK_REF = "moagraph.graph.testing:ArithmeticTask"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _no_traceback(res) -> None:  # type: ignore[no-untyped-def]
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception


# --------------------------------------------------------------------------- data and pools
def _gsm8k_rows(k: int, shift: int = 0) -> list[dict[str, str]]:
    """GSM8K-shaped rows; ``shift`` changes every question and answer, not the ids."""
    return [
        {
            "question": f"Tom has {i + shift} apples and buys {i + 1} more. How many now?",
            "answer": f"{i + shift} + {i + 1} = {2 * i + 1 + shift}\n#### {2 * i + 1 + shift}",
        }
        for i in range(k)
    ]


def _write_gsm8k(data: Path, rows: list[dict[str, str]]) -> Path:
    (data / "gsm8k").mkdir(parents=True, exist_ok=True)
    f = data / "gsm8k" / "test.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def _replay_pool_for(tmp_path: Path, ids_refs: dict[str, str]) -> Path:
    """A recorded model that answers every query id with ``ids_refs[id]``."""
    recs = [
        {
            "model": "rec",
            "query_id": qid,
            "sample": 0,
            "text": f"so \\boxed{{{ref}}}",
            "prompt_tokens": 40,
            "completion_tokens": 8,
            "latency_s": 0.1,
        }
        for qid, ref in ids_refs.items()
    ]
    (tmp_path / "rec.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "name: recorded\nmodels:\n"
        "  - {name: rec, backend: replay, replay: rec.jsonl, params_b: 1, layers: 16, "
        "hidden_size: 2048}\n"
    )
    return pool


def _gsm8k_eval(pool: Path, data: Path, db: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--pool",
        str(pool),
        "--task",
        "gsm8k",
        "--split",
        "test",
        "--n",
        "5",
        "--data-dir",
        str(data),
        "--store",
        str(db),
        "--no-progress",
        *extra,
    ]


# --------------------------------------------------------------------------- 1. eval --resume
def test_resume_refuses_a_changed_data_set_with_the_same_ids(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_gsm8k(data, _gsm8k_rows(5))
    pool = _replay_pool_for(tmp_path, {f"gsm8k/test/{i}": str(2 * i + 1) for i in range(5)})
    db = tmp_path / "runs.sqlite"
    first = runner.invoke(app, _gsm8k_eval(pool, data, db, "--run-id", "r1"))
    assert first.exit_code == 0, first.output

    # Same ids gsm8k/test/0..4, other questions and answers: the stored 5/5 would be lies.
    _write_gsm8k(data, _gsm8k_rows(5, shift=100))
    res = runner.invoke(app, _gsm8k_eval(pool, data, db, "--run-id", "r1", "--resume"))
    assert res.exit_code == 2, res.output
    _no_traceback(res)
    out = _flat(res.output)
    assert "other examples" in out and "'gsm8k'" in out and "'test'" in out
    assert str(data) in res.output.replace("\n", "")  # names the data
    assert "restore the original data" in out and "new --run-id" in out  # and the fix
    assert "from the store" not in out
    with sqlite3.connect(db) as c:  # the old run is untouched
        assert c.execute("SELECT COUNT(*) FROM results WHERE run_id='r1'").fetchone() == (5,)

    # The original data back: the resume goes through, all 5 from the store.
    _write_gsm8k(data, _gsm8k_rows(5))
    again = runner.invoke(app, _gsm8k_eval(pool, data, db, "--run-id", "r1", "--resume"))
    assert again.exit_code == 0, again.output
    assert "5 from the store" in again.output


# --------------------------------------------------------------------------- 2. record --seed
class FakeBackend:
    """Answers every call; after ``fail_after`` calls it fails (a recorder killed mid-way)."""

    kind = "fake"

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.requests: list[LLMRequest] = []

    def identity(self, model: ModelSpec) -> str:
        return f"fake:{model.name}"

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        if self.fail_after is not None and len(self.requests) >= self.fail_after:
            raise RuntimeError("killed")
        self.requests.append(request)
        return Completion(
            text="\\boxed{1}",
            prompt_tokens=5,
            completion_tokens=3,
            latency_s=0.01,
            model=request.model.name,
            backend=self.kind,
        )

    async def aclose(self) -> None:
        pass


def _live_pool(base_url: str = "http://127.0.0.1:9/v1") -> Pool:
    return Pool(
        name="live",
        models=[
            ModelSpec(
                name="a",
                backend="openai",
                base_url=base_url,
                params_b=0.3,
                layers=18,
                hidden_size=640,
            )
        ],
    )


async def _record(out: Path, data: Path, settings: RecordSettings, fake: FakeBackend):  # type: ignore[no-untyped-def]
    pool = _live_pool()
    rt = PoolRuntime(pool, overrides={"a": fake})
    return await record_pool(
        pool, GSM8KTask(data_dir=data), out, settings, runtime=rt, show_progress=False
    )


async def test_record_resume_under_another_seed_or_sample_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_gsm8k(data, _gsm8k_rows(40))
    out = tmp_path / "rec"
    s0 = RecordSettings(task="gsm8k", n=30, seed=0, samples=1, concurrency=1)
    # The first recording is interrupted after 10 of its 30 queries.
    with pytest.raises(RuntimeError, match="killed"):
        await _record(out, data, s0, FakeBackend(fail_after=10))

    # Resuming under --seed 1 would draw another 30 queries (the probe got 44 in one pool).
    fake = FakeBackend()
    with pytest.raises(RecordSettingsError) as e:
        await _record(out, data, s0.model_copy(update={"seed": 1}), fake)
    msg = str(e.value)
    assert "--seed" in msg and str(out) in msg and "seed=0" in msg and "--out" in msg
    assert fake.requests == []  # refused before any call
    # Another --n draws another sample too.
    with pytest.raises(RecordSettingsError, match="mix two samples"):
        await _record(out, data, s0.model_copy(update={"n": 20}), fake)
    assert fake.requests == []

    # The same settings resume and finish with exactly the 30 queries of seed 0.
    res = await _record(out, data, s0, fake)
    assert res.skipped == 10 and res.new_records == 20
    want = {ex.id for ex in GSM8KTask(data_dir=data).load("test", 30, 0)}
    assert {r.query_id for r in read_records(out / "records.jsonl.gz")} == want
    assert {q.query_id for q in read_queries(out / "queries.jsonl")} == want
    # A larger sample that holds the recorded one (all 40) extends it: allowed.
    res2 = await _record(out, data, s0.model_copy(update={"n": None}), fake)
    assert res2.skipped == 30 and res2.new_records == 10


async def test_record_resume_refuses_a_changed_data_set(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_gsm8k(data, _gsm8k_rows(6))
    out = tmp_path / "rec"
    s = RecordSettings(task="gsm8k", n=None, seed=0, samples=1)
    with pytest.raises(RuntimeError):
        await _record(out, data, s, FakeBackend(fail_after=2))
    _write_gsm8k(data, _gsm8k_rows(6, shift=7))  # same ids, other questions
    with pytest.raises(RecordSettingsError, match="data set changed") as e:
        await _record(out, data, s, FakeBackend())
    assert str(out) in str(e.value) and "--data-dir" in str(e.value)


# --------------------------------------------------------------------------- 3. full disk
class _OpenAIHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        question = body["messages"][-1]["content"]
        reply = {
            "choices": [
                {
                    # a long answer: every cached call takes real space on the disk
                    "message": {"role": "assistant", "content": f"{question} " + "x" * 3000},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 700},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def openai_server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _OpenAIHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown()
        srv.server_close()


def _http_pool(tmp_path: Path, base_url: str) -> Path:
    pool = tmp_path / "http-pool.yaml"
    pool.write_text(
        "name: http\nmodels:\n"
        f"  - {{name: m, backend: openai, base_url: '{base_url}', model: m, params_b: 1, "
        "layers: 16, hidden_size: 2048, max_retries: 0, timeout_s: 20}\n"
    )
    return pool


def _arith_eval(pool: Path, db: Path, n: int, *extra: str) -> list[str]:
    return [
        "eval",
        "--pool",
        str(pool),
        "--task",
        TASK_REF,
        "--n",
        str(n),
        "--store",
        str(db),
        "--no-progress",
        "--concurrency",
        "2",
        *extra,
    ]


def test_cache_on_a_full_disk_is_named_once_and_every_query_still_succeeds(
    tmp_path: Path,
    mount_tmpfs,  # type: ignore[no-untyped-def]
    openai_server: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = _http_pool(tmp_path, openai_server)
    mnt = mount_tmpfs("160k")  # the cache's disk: full after a few calls
    cache = mnt / "calls.sqlite"
    db = tmp_path / "runs.sqlite"  # the store is on a disk with room
    with caplog.at_level("WARNING", logger="moagraph.cache"):
        res = runner.invoke(
            app, _arith_eval(pool, db, 40, "--run-id", "full", "--cache", str(cache))
        )
    _no_traceback(res)
    assert res.exit_code == 0, res.output  # the calls worked; only caching stopped
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT error FROM results WHERE run_id='full'").fetchall()
    assert len(rows) == 40 and all(e is None for (e,) in rows), rows[:3]
    out = _flat(res.output)
    assert str(cache) in res.output.replace("\n", "") and "disk full" in out
    assert "--cache" in out and "free some space" in out.lower()
    warnings = [r for r in caplog.records if "disk full" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]  # one warning, not 40
    # the calls cached before the disk filled are still there and good
    with sqlite3.connect(cache) as c:
        assert 0 < c.execute("SELECT COUNT(*) FROM calls").fetchone()[0] < 40


def test_corrupt_cache_interior_is_named_with_the_fix(tmp_path: Path, openai_server: str) -> None:
    pool = _http_pool(tmp_path, openai_server)
    cache = tmp_path / "calls.sqlite"
    db = tmp_path / "runs.sqlite"
    ok = runner.invoke(app, _arith_eval(pool, db, 6, "--run-id", "a", "--cache", str(cache)))
    assert ok.exit_code == 0, ok.output
    # Damage the interior (the header stays valid: the file still opens as SQLite).
    with sqlite3.connect(cache) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = c.execute("PRAGMA page_size").fetchone()[0]
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name='calls'").fetchone()[0]
    raw = bytearray(cache.read_bytes())
    start = (root - 1) * page
    raw[start : start + page] = b"\xff" * page  # the table's root page is garbage now
    cache.write_bytes(bytes(raw))
    res = runner.invoke(app, _arith_eval(pool, db, 6, "--run-id", "b", "--cache", str(cache)))
    _no_traceback(res)
    assert res.exit_code in (1, 2), res.output
    out = _flat(res.output)
    assert str(cache) in res.output.replace("\n", "") and "corrupt" in out
    assert "malformed" in out or "not a database" in out
    assert "move that file away" in out and "drop --cache" in out and "--no-cache" in out


# --------------------------------------------------------------------------- exit codes
def test_eval_exit_code_when_some_queries_fail(tmp_path: Path) -> None:
    # A recording that answers only 3 of the 8 queries: 5 replay misses.
    pool = _replay_pool_for(tmp_path, {f"q{i}": str(2 * i + 1) for i in range(3)})
    db = tmp_path / "runs.sqlite"
    res = runner.invoke(
        app,
        [
            "eval",
            "--pool",
            str(pool),
            "--task",
            TASK_REF,
            "--n",
            "8",
            "--store",
            str(db),
            "--run-id",
            "part",
            "--no-progress",
        ],
    )
    _no_traceback(res)
    assert res.exit_code == 3, res.output
    out = _flat(res.output)
    assert "5 of 8 queries failed" in out and "--resume --retry-errors" in out and "'part'" in out
    assert "accuracy" in out  # the table is still printed
    all_ok = runner.invoke(
        app,
        ["eval", "--pool", str(pool), "--task", TASK_REF, "--n", "3", "--store", str(db),
         "--no-progress"],
    )  # fmt: skip
    assert all_ok.exit_code == 0, all_ok.output
    help_text = _flat(runner.invoke(app, ["eval", "--help"]).output)
    assert "Exit codes: 0" in help_text and "3 some queries failed" in help_text


def test_resume_with_another_n_names_the_option_not_the_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_gsm8k(data, _gsm8k_rows(8))
    pool = _replay_pool_for(tmp_path, {f"gsm8k/test/{i}": str(2 * i + 1) for i in range(8)})
    db = tmp_path / "runs.sqlite"
    assert runner.invoke(app, _gsm8k_eval(pool, data, db, "--run-id", "n5")).exit_code == 0
    args = _gsm8k_eval(pool, data, db, "--run-id", "n5", "--resume")
    res = runner.invoke(app, [*args, "--n", "6"])  # the later --n wins
    assert res.exit_code == 2, res.output
    out = _flat(res.output)
    assert "another configuration" in out and "`n`: stored 5, now 6" in out
    assert "other examples" not in out
