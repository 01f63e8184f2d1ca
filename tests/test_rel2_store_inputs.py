"""Issue #25, "runs and stores" and "bad inputs": no password from a `base_url` in any file
moagraph writes, stores and recordings are private, and bad input files are named.

Real CLI runs (typer's CliRunner) against a real HTTP server speaking the OpenAI protocol,
real SQLite files, real (damaged) gzip recordings and GSM8K data files.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from test_rel2_store_runs import _flat, _gsm8k_rows, _no_traceback, _write_gsm8k, openai_server
from typer.testing import CliRunner

from moagraph._sqlite import create_private
from moagraph.cli import _register, app
from moagraph.models.cache import CallCache
from moagraph.models.redact import redact_url
from moagraph.models.replay import ReplayFileError, ReplayStore
from moagraph.pools import resolve_pool
from moagraph.pools.schema import ReplayFormatError, read_records
from moagraph.store import RunStore
from moagraph.tasks.base import TaskError
from moagraph.tasks.gsm8k import GSM8KTask

_register()
runner = CliRunner()
SECRET = "s3cretPW-9917"
__all__ = ["openai_server"]  # the fixture, imported for its side effect on this module


def _secret_pool(tmp_path: Path, server: str) -> Path:
    url = server.replace("http://", f"http://alice:{SECRET}@")
    pool = tmp_path / "secret-pool.yaml"
    pool.write_text(
        "name: http\nmodels:\n"
        f"  - {{name: m, backend: openai, base_url: '{url}', model: m, params_b: 1, "
        "layers: 16, hidden_size: 2048, max_retries: 0, timeout_s: 20}\n"
    )
    return pool


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# --------------------------------------------------------------------------- 4. credentials
def test_redact_url_removes_userinfo_and_key_parameters() -> None:
    assert redact_url(f"http://alice:{SECRET}@h:8000/v1") == "http://[REDACTED]@h:8000/v1"
    assert redact_url("https://tok3n@h/v1?api_key=abc&x=1") == (
        "https://[REDACTED]@h/v1?api_key=[REDACTED]&x=1"
    )
    assert redact_url("http://127.0.0.1:9/v1") == "http://127.0.0.1:9/v1"  # nothing to hide


def test_eval_never_writes_a_base_url_password_to_the_store(
    tmp_path: Path, openai_server: str
) -> None:
    pool = _secret_pool(tmp_path, openai_server)
    runs = tmp_path / "runs"
    db = runs / "moagraph.sqlite"
    cache = tmp_path / "cache" / "calls.sqlite"
    args = [
        "eval",
        "--pool",
        str(pool),
        "--task",
        "moagraph.graph.testing:ArithmeticTask",
        "--n",
        "4",
        "--store",
        str(db),
        "--cache",
        str(cache),
        "--run-id",
        "pw",
        "--no-progress",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    for f in _files_under(runs) + _files_under(cache.parent):  # the store, cache, -wal, -shm
        assert SECRET.encode() not in f.read_bytes(), f
    with sqlite3.connect(db) as c:
        cfg = json.loads(c.execute("SELECT config FROM runs").fetchone()[0])
    assert cfg["pool_models"]["m"]["base_url"].startswith("http://[REDACTED]@127.0.0.1:")
    # The same pool resumes: both sides are compared without the password.
    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 0 and "4 from the store" in again.output, again.output
    # 5. private: the store, the cache and their -wal/-shm are 0600, new folders 0700
    assert _mode(runs) == 0o700 and _mode(cache.parent) == 0o700
    made = _files_under(runs) + _files_under(cache.parent)
    assert {p.name for p in made} >= {"moagraph.sqlite", "moagraph.sqlite-wal", "calls.sqlite"}
    for p in made:
        assert _mode(p) == 0o600, (p, oct(_mode(p)))


def test_record_never_writes_a_base_url_password_and_is_private(
    tmp_path: Path, openai_server: str
) -> None:
    pool = _secret_pool(tmp_path, openai_server)
    data = tmp_path / "data"
    _write_gsm8k(data, _gsm8k_rows(6))
    out = tmp_path / "recording"
    args = [
        "record",
        "--pool",
        str(pool),
        "--task",
        "gsm8k",
        "--split",
        "test",
        "--n",
        "3",
        "--samples",
        "2",
        "--data-dir",
        str(data),
        "--out",
        str(out),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    files = _files_under(out)
    names = {p.name for p in files}
    assert {"pool.yaml", "record_state.json", "README.md", "records.jsonl.gz"} <= names
    for f in files:
        raw = f.read_bytes()
        text = gzip.decompress(raw) if f.suffix == ".gz" else raw
        assert SECRET.encode() not in text, f
        assert _mode(f) == 0o600, (f, oct(_mode(f)))
    assert _mode(out) == 0o700
    assert "[REDACTED]@127.0.0.1" in (out / "pool.yaml").read_text()
    assert "[REDACTED]@127.0.0.1" in (out / "README.md").read_text()

    # 2. (CLI) a resume under another --seed is refused before any call
    before = (out / "records.jsonl.gz").read_bytes()
    res2 = runner.invoke(app, [*args, "--seed", "1"])
    assert res2.exit_code == 2, res2.output
    _no_traceback(res2)
    out2 = _flat(res2.output)
    assert "--seed" in out2 and "seed=0" in out2 and "new folder" in out2
    assert (out / "records.jsonl.gz").read_bytes() == before
    # the same settings (same password or another one) resume: nothing to do
    res3 = runner.invoke(app, args)
    assert res3.exit_code == 0 and "0 new calls (6 already done)" in _flat(res3.output)


# --------------------------------------------------------------------------- 5. modes
def test_stores_and_caches_are_created_private(tmp_path: Path) -> None:
    with RunStore(tmp_path / "a" / "runs.sqlite") as rs:
        rs.create_run("r", {"x": 1})
    with CallCache(tmp_path / "b" / "calls.sqlite") as cc:
        assert len(cc) == 0
    for p in [*_files_under(tmp_path / "a"), *_files_under(tmp_path / "b")]:
        assert _mode(p) == 0o600, (p, oct(_mode(p)))
    assert _mode(tmp_path / "a") == 0o700 and _mode(tmp_path / "b") == 0o700
    # a store the owner made readable on purpose keeps its mode
    shared = tmp_path / "shared.sqlite"
    with sqlite3.connect(shared) as c:
        c.execute("CREATE TABLE t (x)")
    c.close()
    os.chmod(shared, 0o644)
    assert create_private(shared) is False
    with RunStore(shared):
        pass
    assert _mode(shared) == 0o644


# --------------------------------------------------------------------------- 6. bad inputs
def test_gsm8k_answer_without_the_marker_names_the_file_and_line(tmp_path: Path) -> None:
    rows = _gsm8k_rows(4)
    rows[2]["answer"] = "Tom ends with 5 apples."  # no '#### 5'
    f = _write_gsm8k(tmp_path, rows)
    with pytest.raises(TaskError) as e:
        GSM8KTask(data_dir=tmp_path).load("test")
    msg = str(e.value)
    assert f"{f}:3" in msg and "####" in msg and "remove that line" in msg
    # and through the CLI: one red line, exit 2
    res = runner.invoke(
        app,
        ["eval", "--pool", "zeroeval-math", "--task", "gsm8k", "--split", "test",
         "--data-dir", str(tmp_path), "--store", str(tmp_path / "r.sqlite"), "--no-progress"],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    _no_traceback(res)
    assert f"{f}:3" in res.output.replace("\n", "")


def _truncated_copy(tmp_path: Path, name: str) -> Path:
    """A copy of a bundled replay pool whose records.jsonl.gz lost its second half."""
    src = resolve_pool(name).parent
    dst = tmp_path / name
    shutil.copytree(src, dst)
    gz = dst / "records.jsonl.gz"
    raw = gz.read_bytes()
    gz.write_bytes(raw[: len(raw) // 2])
    return gz


def test_truncated_replay_gzip_names_the_file(tmp_path: Path) -> None:
    gz = _truncated_copy(tmp_path, "gsm8k-local")
    with pytest.raises(ReplayFileError) as e:
        ReplayStore(gz)
    assert str(gz) in str(e.value) and "cut short" in str(e.value)
    with pytest.raises(ReplayFormatError) as e2:
        read_records(gz)
    assert str(gz) in str(e2.value) and "cut short" in str(e2.value)
    with pytest.raises(ReplayFormatError, match="cut short"):
        read_records(gz, tolerate_truncated_tail=True)
    # through the CLI: `pool show` and `eval` on the damaged pool name the file, exit 2
    show = runner.invoke(app, ["pool", "show", str(gz.parent / "pool.yaml")])
    assert show.exit_code == 2, show.output
    _no_traceback(show)
    assert str(gz) in show.output.replace("\n", "")
    ev = runner.invoke(
        app,
        ["eval", "--pool", str(gz.parent / "pool.yaml"), "--task", "gsm8k",
         "--store", str(tmp_path / "r.sqlite"), "--no-progress"],
    )  # fmt: skip
    assert ev.exit_code != 0, ev.output
    _no_traceback(ev)
    assert str(gz) in ev.output.replace("\n", "") and "cut short" in _flat(ev.output)


def test_record_against_a_dead_endpoint_stops_cleanly_without_the_password(
    tmp_path: Path,
) -> None:
    """The probe's case: the state file is written before any call succeeds."""
    pool = tmp_path / "dead.yaml"
    pool.write_text(
        "name: dead\nmodels:\n"
        f"  - {{name: m, backend: openai, base_url: 'http://bob:{SECRET}@127.0.0.1:9/v1', "
        "model: m, params_b: 1, layers: 2, hidden_size: 8, max_retries: 0}\n"
    )
    out = tmp_path / "rec"
    res = runner.invoke(
        app,
        ["record", "--pool", str(pool), "--task", "gsm8k", "--split", "sample", "--n", "2",
         "--samples", "1", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 1, res.output
    _no_traceback(res)
    assert "rerun the same command to resume" in _flat(res.output)
    assert SECRET not in res.output
    files = _files_under(out)
    assert "record_state.json" in {p.name for p in files}
    for f in files:
        assert SECRET.encode() not in f.read_bytes(), f
        assert _mode(f) == 0o600
    assert _mode(out) == 0o700


@pytest.mark.needs_shared_data("alpaca_eval", "outputs.jsonl.gz")
def test_alpaca_eval_import_of_a_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    from moagraph.tasks._common import shared_data_dir

    src = shared_data_dir() / "alpaca_eval"  # type: ignore[operator]
    d = tmp_path / "ae"
    d.mkdir()
    for name in ("labels.jsonl.gz", "models.json", "outputs.jsonl.gz"):
        (d / name).symlink_to(src / name)
    raw = (src / "instructions.jsonl.gz").read_bytes()
    (d / "instructions.jsonl.gz").write_bytes(raw[: len(raw) // 3])
    res = runner.invoke(
        app, ["pool", "import", "alpaca-eval", str(d), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2, res.output
    _no_traceback(res)
    assert str(d / "instructions.jsonl.gz") in res.output.replace("\n", "")
    assert "cut short" in _flat(res.output)


def test_corrupt_run_store_interior_names_the_file(tmp_path: Path) -> None:
    from test_rel2_store_runs import _replay_pool_for

    pool = _replay_pool_for(tmp_path, {f"q{i}": str(2 * i + 1) for i in range(4)})
    db = tmp_path / "runs.sqlite"
    args = ["eval", "--pool", str(pool), "--task", "moagraph.graph.testing:ArithmeticTask",
            "--n", "4", "--store", str(db), "--no-progress", "--run-id", "c"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = c.execute("PRAGMA page_size").fetchone()[0]
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name='results'").fetchone()[0]
    c.close()
    raw = bytearray(db.read_bytes())
    raw[(root - 1) * page : root * page] = b"\xff" * page
    db.write_bytes(bytes(raw))
    res = runner.invoke(app, [*args, "--resume"])
    assert res.exit_code == 2, res.output
    _no_traceback(res)
    out = _flat(res.output)
    assert str(db) in res.output.replace("\n", "") and "corrupt" in out and "malformed" in out
    assert "--store" in out and "move that file away" in out
