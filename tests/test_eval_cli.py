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
        (["--budget-flops", "0.5"], "max_flops_norm"),
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
