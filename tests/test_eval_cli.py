"""`moagraph eval` / `moagraph draw` end to end through typer's CliRunner."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moagraph.cli import _register, app
from moagraph.graph import builders
from moagraph.graph.testing import ArithmeticTask

_register()
runner = CliRunner()
TASK_REF = "moagraph.graph.testing:ArithmeticTask"


def accuracy(output: str) -> float:
    m = re.search(r"accuracy\W+([0-9.]+)  95% CI", output)
    assert m, output
    return float(m.group(1))


def replay_pool(tmp_path: Path, right: set[int], n_samples: int = 3) -> Path:
    """A replay pool of two recorded models; ``right`` = question numbers answered correctly."""
    recs = []
    for ex in ArithmeticTask().load(n=8):
        i = int(ex.id[1:])
        for model in ("rec-a", "rec-b"):
            for s in range(n_samples):
                ans = ex.reference if (i in right or s == 1) else ex.reference + 1
                recs.append(
                    {
                        "model": model,
                        "query_id": ex.id,
                        "sample": s,
                        "text": f"So it is {ans}",
                        "prompt_tokens": 40,
                        "completion_tokens": 8,
                        "latency_s": 0.5,
                    }
                )
    (tmp_path / "rec.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "name: recorded\nmodels:\n"
        "  - {name: rec-a, backend: replay, replay: rec.jsonl, params_b: 1, layers: 16, hidden_size: 2048, price_out: 1.0}\n"
        "  - {name: rec-b, backend: replay, replay: rec.jsonl, params_b: 7, layers: 32, hidden_size: 4096}\n"
    )
    return pool


def test_eval_single_model_on_replay_pool(tmp_path: Path) -> None:
    pool = replay_pool(tmp_path, right={0, 1, 2, 3})
    db = tmp_path / "runs.sqlite"
    res = runner.invoke(
        app,
        [
            "eval",
            "--pool",
            str(pool),
            "--task",
            TASK_REF,
            "--split",
            "test",
            "--n",
            "8",
            "--store",
            str(db),
            "--run-id",
            "cli1",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "single-rec-a" in res.output and accuracy(res.output) == 0.5
    with sqlite3.connect(db) as c:
        assert c.execute(
            "SELECT COUNT(*), SUM(score) FROM results WHERE run_id='cli1'"
        ).fetchone() == (8, 4.0)
    again = runner.invoke(
        app,
        [
            "eval",
            "--pool",
            str(pool),
            "--task",
            TASK_REF,
            "--split",
            "test",
            "--n",
            "8",
            "--store",
            str(db),
            "--run-id",
            "cli1",
            "--resume",
            "--no-progress",
        ],
    )
    assert again.exit_code == 0 and "8 from the store" in again.output


def test_eval_graph_file_runs_a_vote(tmp_path: Path) -> None:
    pool = replay_pool(
        tmp_path, right={0, 1}
    )  # sample 1 is always right, samples 0 and 2 only on q0, q1
    gfile = builders.parallel_vote(["rec-a", "rec-b", "rec-a"], 3).save(tmp_path / "vote.yaml")
    res = runner.invoke(
        app,
        [
            "eval",
            "--graph",
            str(gfile),
            "--pool",
            str(pool),
            "--task",
            TASK_REF,
            "--split",
            "test",
            "--n",
            "8",
            "--store",
            str(tmp_path / "r.sqlite"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    # a0=rec-a s0, a1=rec-b s0, a2=rec-a s1 (always right): 2 wrong vs 1 right unless right already
    assert accuracy(res.output) == 0.25 and "vote-rec-a+rec-b" in res.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "nope"], "'nope'"),
        (["--graph", "missing.yaml"], "does not exist"),
        (["--resume"], "--run-id"),
        (["--budget", "0.5"], "max_flops_norm"),
        (["--budget-flops", "0.5"], "max_flops_norm"),  # the deprecated spelling still works
        (["--budget", "paper:x"], "paper:<int>"),
        (["--task", "no.such.module:Task"], "cannot import"),
    ],
)
def test_eval_user_errors_exit_2_without_traceback(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    pool = replay_pool(tmp_path, right=set())
    res = runner.invoke(
        app,
        [
            "eval",
            "--pool",
            str(pool),
            "--task",
            TASK_REF,
            "--split",
            "test",
            "--store",
            str(tmp_path / "r.sqlite"),
            "--no-progress",
            *args,
        ],
    )
    assert res.exit_code == 2, res.output
    assert "Error:" in res.output and needle in res.output and "Traceback" not in res.output


def test_draw_command(tmp_path: Path) -> None:
    pool = replay_pool(tmp_path, right=set())
    gfile = builders.moa([["rec-a", "rec-b"]], "rec-b").save(tmp_path / "moa.yaml")
    res = runner.invoke(app, ["draw", str(gfile), "-o", str(tmp_path / "pic"), "--pool", str(pool)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "pic.html").read_text()
    assert (
        "data:image/png;base64," in page
        and "<td>agg <b>(sink)</b></td>" in page
        and "http" not in page
    )
    bad = runner.invoke(app, ["draw", str(gfile), "--pool", str(tmp_path / "none.yaml")])
    assert bad.exit_code == 2 and "Error:" in bad.output


def test_eval_gsm8k_sample_on_replay_pool(tmp_path: Path) -> None:
    """The real gsm8k task (bundled sample split), answered by a recording."""
    registry = pytest.importorskip("moagraph.tasks.registry")
    task = registry.get_task("gsm8k")
    exs = task.load("sample", n=4, seed=0)
    recs = [
        {
            "model": "rec",
            "query_id": ex.id,
            "sample": 0,
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "latency_s": 1.0,
            "text": f"Let me think. #### {ex.reference if k % 2 == 0 else 'nonsense'}",
        }
        for k, ex in enumerate(exs)
    ]
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "pool.yaml").write_text(
        "name: g\nmodels:\n  - {name: rec, backend: replay, replay: g.jsonl, params_b: 1, layers: 16, hidden_size: 2048}\n"
    )
    res = runner.invoke(
        app,
        [
            "eval",
            "--pool",
            str(tmp_path / "pool.yaml"),
            "--n",
            "4",
            "--store",
            str(tmp_path / "r.sqlite"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert accuracy(res.output) == 0.5


@pytest.mark.local_model
def test_eval_local_model_defaults(tmp_path: Path) -> None:
    pytest.importorskip("moagraph.tasks.registry")
    pytest.importorskip("llama_cpp")
    res = runner.invoke(
        app,
        [
            "eval",
            "--n",
            "2",
            "--max-tokens",
            "32",
            "--store",
            str(tmp_path / "r.sqlite"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "single-gemma-270m" in res.output and "accuracy" in res.output
    with sqlite3.connect(tmp_path / "r.sqlite") as c:
        rows = c.execute("SELECT error, flops FROM results").fetchall()
    assert len(rows) == 2 and all(err is None and flops > 0 for err, flops in rows)


def test_bundled_graphs_are_valid_for_the_local_pool(tmp_path: Path) -> None:
    from moagraph.graph.spec import Graph
    from moagraph.graphs import bundled_graphs
    from moagraph.models.pool import load_pool
    from moagraph.pools import resolve_pool

    local = load_pool(resolve_pool("local"))
    found = bundled_graphs()
    assert {"vote3", "chain2", "moa2x1", "best-of-3"} <= set(found)
    for path in found.values():
        Graph.load(path).validate_against(local)
    res = runner.invoke(app, ["draw", "vote3", "-o", str(tmp_path / "v"), "--pool", "local"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "v.png").exists() and (tmp_path / "v.html").exists()


# --- issue 10: honest resume, failures, bad stores ----------------------------------


def _eval_args(pool: Path, db: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--pool",
        str(pool),
        "--task",
        TASK_REF,
        "--split",
        "test",
        "--n",
        "8",
        "--store",
        str(db),
        "--no-progress",
        *extra,
    ]


def _no_traceback(res) -> None:  # type: ignore[no-untyped-def]
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception


def test_resume_with_another_model_is_refused_naming_the_difference(tmp_path: Path) -> None:
    pool = replay_pool(tmp_path, right={0, 1, 2, 3})
    db = tmp_path / "runs.sqlite"
    first = runner.invoke(app, _eval_args(pool, db, "--model", "rec-a", "--run-id", "r1"))
    assert first.exit_code == 0, first.output
    res = runner.invoke(app, _eval_args(pool, db, "--model", "rec-b", "--run-id", "r1", "--resume"))
    assert res.exit_code == 2, res.output
    _no_traceback(res)
    out = " ".join(res.output.split())
    assert "another configuration" in out and "'r1'" in out and str(db) in out.replace("\n", "")
    assert '"rec-a"' in out and '"rec-b"' in out  # stored and new value
    assert "graph.nodes.0.model" in out or "graph.name" in out  # the field
    assert "without --resume" in out and "--run-id" in out  # the fix
    assert "from the store" not in out
    with sqlite3.connect(db) as c:  # nothing was added to the old run
        assert c.execute("SELECT COUNT(*) FROM results WHERE run_id='r1'").fetchone() == (8,)


def test_resume_with_changed_options_or_pool_model_is_refused(tmp_path: Path) -> None:
    pool = replay_pool(tmp_path, right={0, 1})
    db = tmp_path / "runs.sqlite"
    assert runner.invoke(app, _eval_args(pool, db, "--run-id", "r2")).exit_code == 0
    temp = runner.invoke(
        app, _eval_args(pool, db, "--run-id", "r2", "--resume", "--temperature", "0.5")
    )
    assert temp.exit_code == 2 and "`temperature`: stored 0.0, now 0.5" in temp.output
    seed = runner.invoke(app, _eval_args(pool, db, "--run-id", "r2", "--resume", "--seed", "3"))
    assert seed.exit_code == 2 and "`seed`" in seed.output
    # same model name, other model behind it (the pool file changed)
    pool.write_text(pool.read_text().replace("params_b: 1,", "params_b: 3,"))
    res = runner.invoke(app, _eval_args(pool, db, "--run-id", "r2", "--resume"))
    assert res.exit_code == 2, res.output
    assert "pool_models.rec-a.params_b" in " ".join(res.output.split())
    pool.write_text(pool.read_text().replace("params_b: 3,", "params_b: 1,"))
    same = runner.invoke(
        app, _eval_args(pool, db, "--run-id", "r2", "--resume", "--concurrency", "2")
    )
    assert same.exit_code == 0 and "8 from the store" in same.output  # operational flags may change


def test_resume_of_an_unknown_run_id_is_an_error(tmp_path: Path) -> None:
    pool = replay_pool(tmp_path, right={0})
    db = tmp_path / "runs.sqlite"
    assert runner.invoke(app, _eval_args(pool, db, "--run-id", "real")).exit_code == 0
    res = runner.invoke(app, _eval_args(pool, db, "--run-id", "typo", "--resume"))
    assert res.exit_code == 2, res.output
    _no_traceback(res)
    assert (
        "'typo' is not in" in res.output and "real" in res.output and "drop --resume" in res.output
    )
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT run_id FROM runs").fetchall() == [("real",)]


def test_eval_exits_nonzero_when_every_query_failed(tmp_path: Path) -> None:
    pool = replay_pool(tmp_path, right={0})
    # a model whose recording answers none of the queries: every call is a replay miss
    pool.write_text(
        pool.read_text()
        + "  - {name: rec-z, backend: replay, replay: rec.jsonl, replay_model: nobody, params_b: 1, layers: 2, hidden_size: 8}\n"
    )
    res = runner.invoke(app, _eval_args(pool, tmp_path / "r.sqlite", "--model", "rec-z"))
    assert res.exit_code == 1, res.output
    _no_traceback(res)
    assert "every query failed (8 of 8" in " ".join(res.output.split())
    ok = runner.invoke(app, _eval_args(pool, tmp_path / "r2.sqlite", "--model", "rec-a"))
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_eval_rejects_non_finite_numbers(tmp_path: Path, value: str) -> None:
    pool = replay_pool(tmp_path, right=set())
    for flag in ("--temperature", "--budget"):
        res = runner.invoke(app, _eval_args(pool, tmp_path / "r.sqlite", flag, value))
        assert res.exit_code == 2 and flag in res.output, res.output  # typer or our check
        _no_traceback(res)
        assert not (tmp_path / "r.sqlite").exists()  # refused before anything ran


def test_store_that_is_not_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    pool = replay_pool(tmp_path, right=set())
    db = tmp_path / "runs.sqlite"
    db.write_text("these are my notes, not a database\n" * 200)
    res = runner.invoke(app, _eval_args(pool, db))
    assert res.exit_code == 2, res.output
    _no_traceback(res)
    out = " ".join(res.output.split())
    assert "is not a SQLite database" in out and str(db) in res.output.replace("\n", "")
    assert "--store" in out
    assert db.read_text().startswith("these are my notes")  # left alone


def test_store_path_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    pool = replay_pool(tmp_path, right=set())
    res = runner.invoke(app, _eval_args(pool, tmp_path))
    assert res.exit_code == 2 and "is a directory" in res.output and "--store" in res.output
    _no_traceback(res)


def test_read_only_store_is_a_clear_error(tmp_path: Path, mount_tmpfs) -> None:  # type: ignore[no-untyped-def]
    from conftest import remount_ro

    pool = replay_pool(tmp_path, right={0})
    mnt = mount_tmpfs("16m")
    db = mnt / "runs.sqlite"
    first = runner.invoke(app, _eval_args(pool, db, "--run-id", "a"))
    assert first.exit_code == 0, first.output
    remount_ro(mnt)
    res = runner.invoke(app, _eval_args(pool, db, "--run-id", "b"))
    assert res.exit_code == 2, res.output
    _no_traceback(res)
    out = " ".join(res.output.split())
    assert "cannot be opened" in out or "cannot be written" in out
    assert "writable" in out and "--store" in out


def test_full_disk_is_a_clear_error(tmp_path: Path, tiny_tmpfs: Path) -> None:
    from conftest import fill_disk

    pool = replay_pool(tmp_path, right={0})
    fill_disk(tiny_tmpfs)
    res = runner.invoke(app, _eval_args(pool, tiny_tmpfs / "runs.sqlite"))
    assert res.exit_code == 2, res.output
    _no_traceback(res)
    out = " ".join(res.output.split())
    assert "no space left" in out and "--store" in out and "runs.sqlite" in out


def test_pool_path_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "emptydir").mkdir()
    res = runner.invoke(app, _eval_args(tmp_path / "emptydir", tmp_path / "r.sqlite"))
    assert res.exit_code == 2 and "is a directory" in res.output and "pool.yaml" in res.output
    _no_traceback(res)


def test_cache_that_is_not_sqlite_is_named(tmp_path: Path) -> None:
    pool = replay_pool(tmp_path, right=set())
    bad = tmp_path / "cache.sqlite"
    bad.write_bytes(b"not a database " * 300)
    res = runner.invoke(app, _eval_args(pool, tmp_path / "r.sqlite", "--cache", str(bad)))
    assert res.exit_code == 2, res.output
    _no_traceback(res)
    out = " ".join(res.output.split())
    assert "call cache" in out and "--cache" in out and str(bad) in res.output.replace("\n", "")
