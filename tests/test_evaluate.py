"""evaluate() + RunStore: grading, CI, per-query commits, resume after a kill."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from moagraph.graph import builders
from moagraph.graph.evaluate import aevaluate, evaluate, wilson_interval
from moagraph.graph.executor import GraphExecutor
from moagraph.graph.policy import GraphPolicy
from moagraph.graph.testing import ArithmeticTask, ScriptedBackend, fake_pool
from moagraph.models.base import LLMRequest
from moagraph.models.runtime import PoolRuntime
from moagraph.store import RunStore, RunStoreError

TASK = ArithmeticTask()


def solver(r: LLMRequest) -> str:
    """Right on even question numbers, off by one on odd ones."""
    a, b = map(int, re.findall(r"What is (\d+) \+ (\d+)", r.messages[-1]["content"])[0])
    return f"The total is {a + b + (a % 2)}"


def policy(backend: ScriptedBackend, conc: int = 4) -> GraphPolicy:
    rt = PoolRuntime(fake_pool("m1", max_concurrency=conc), overrides={"m1": backend})
    return GraphPolicy(builders.single("m1"), GraphExecutor(rt, TASK))


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert wilson_interval(0, 4)[0] == 0.0 and wilson_interval(4, 4)[1] == 1.0


def test_evaluate_grades_and_stores(tmp_path: Path) -> None:
    exs = TASK.load(n=10)
    with RunStore(tmp_path / "r.sqlite") as store:
        rep = evaluate(
            policy(ScriptedBackend(respond=solver)),
            TASK,
            exs,
            store=store,
            run_id="r1",
            progress=False,
        )
        assert rep.n == 10 and rep.accuracy == pytest.approx(0.5) and rep.errors == 0
        assert (rep.ci_low, rep.ci_high) == pytest.approx(wilson_interval(5, 10))
        assert rep.mean_flops > 0 and rep.mean_flops_norm == pytest.approx(
            sum(r.flops_norm for r in rep.rows) / 10
        )
        assert {r.example_id for r in rep.rows if r.score == 1.0} == {
            f"q{i}" for i in range(0, 10, 2)
        }
        t = store.trace("r1", "q3")
        assert t.output == "The total is 8" and t.score == 0.0 and t.nodes[0].model == "m1"
        assert store.run("r1").status == "done"  # type: ignore[union-attr]
        with pytest.raises(RunStoreError, match="--resume"):
            evaluate(policy(ScriptedBackend()), TASK, exs, store=store, run_id="r1", progress=False)
    raw = sqlite3.connect(tmp_path / "r.sqlite")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("SELECT COUNT(*) FROM results WHERE run_id='r1'").fetchone()[0] == 10


async def test_failures_are_rows_not_crashes() -> None:
    be = ScriptedBackend(respond=solver, fail_models={"m1"})
    rep = await aevaluate(policy(be), TASK, TASK.load(n=3), progress=False)
    assert rep.errors == 3 and rep.accuracy == 0.0
    assert all("refused the call" in (r.error or "") for r in rep.rows)


_CHILD = textwrap.dedent(
    """
    import re, sys
    from moagraph.graph import builders
    from moagraph.graph.evaluate import evaluate
    from moagraph.graph.executor import GraphExecutor
    from moagraph.graph.policy import GraphPolicy
    from moagraph.graph.testing import ArithmeticTask, ScriptedBackend, fake_pool
    from moagraph.models.runtime import PoolRuntime
    from moagraph.store import RunStore

    task = ArithmeticTask()
    log = open(sys.argv[2], "a", buffering=1)
    def respond(r):
        log.write(r.query_id + "\\n")
        a, b = map(int, re.findall(r"What is (\\d+) \\+ (\\d+)", r.messages[-1]["content"])[0])
        return f"The total is {a + b + (a % 2)}"
    be = ScriptedBackend(respond=respond, latency_s=0.15)
    rt = PoolRuntime(fake_pool("m1", max_concurrency=1), overrides={"m1": be})
    pol = GraphPolicy(builders.single("m1"), GraphExecutor(rt, task))
    evaluate(pol, task, task.load(n=12), store=RunStore(sys.argv[1]), run_id="killme",
             concurrency=2, progress=False)
    """
)


def test_resume_after_kill(tmp_path: Path) -> None:
    db, log = tmp_path / "runs.sqlite", tmp_path / "calls.log"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db), str(log)], env=os.environ.copy()
    )
    try:
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline and child.poll() is None:
            if db.exists():
                try:
                    with sqlite3.connect(db) as c:
                        done = c.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                except sqlite3.OperationalError:
                    done = 0
                if done >= 4:
                    break
            time.sleep(0.05)
        assert child.poll() is None, "the child finished before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    with RunStore(db) as store:
        finished = store.finished_ids("killme")
        assert 4 <= len(finished) < 12
        assert store.run("killme").status == "running"  # type: ignore[union-attr]
        calls: list[str] = []
        be = ScriptedBackend(respond=lambda r: (calls.append(r.query_id), solver(r))[1])
        rep = evaluate(
            policy(be),
            TASK,
            TASK.load(n=12),
            store=store,
            run_id="killme",
            resume=True,
            progress=False,
        )
    assert not set(calls) & finished  # nothing finished was called again
    assert sorted(calls) == sorted(f"q{i}" for i in range(12) if f"q{i}" not in finished)
    assert rep.n == 12 and rep.resumed == len(finished) and rep.errors == 0
    assert rep.accuracy == pytest.approx(0.5)  # totals cover the killed run's results too


class _OpenChat(ArithmeticTask):
    name = "openchat"
    kind = "chat"
    gradable = False

    def grade(self, text: str, example) -> float:  # type: ignore[no-untyped-def]
        raise AssertionError("open chat is scored from the recording, never graded here")


async def test_chat_scores_come_from_replayed_judge_scores(tmp_path: Path) -> None:
    import json

    from moagraph.models.pool import load_pool

    task = _OpenChat()
    exs = task.load(n=4)
    recs = [
        {
            "model": "r",
            "query_id": ex.id,
            "sample": s,
            "text": f"reply {s}",
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "latency_s": 0.1,
            "score": [0.2, 0.9][s] * (1 if k < 2 else 0),
        }
        for k, ex in enumerate(exs)
        for s in (0, 1)
    ]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "pool.yaml").write_text(
        "name: r\nmodels:\n  - {name: r, backend: replay, replay: r.jsonl, params_b: 1, layers: 8, hidden_size: 512}\n"
    )
    rt = PoolRuntime(load_pool(tmp_path / "pool.yaml"))
    ex = GraphExecutor(rt, task)
    rep = await aevaluate(GraphPolicy(builders.single("r"), ex), task, exs, progress=False)
    assert sorted(r.score for r in rep.rows) == pytest.approx([0.0, 0.0, 0.2, 0.2])
    assert rep.accuracy == pytest.approx(0.1)
    # A vote passes on one input's text and that input's recorded score: answers 0 and 1
    # tie, so the earliest input (sample 0) wins.
    rep2 = await aevaluate(
        GraphPolicy(builders.parallel_vote("r", 2), ex), task, exs, progress=False
    )
    assert sorted(r.score for r in rep2.rows) == pytest.approx([0.0, 0.0, 0.2, 0.2])
    # Pin the winner to sample 1 (score 0.9) and the score follows it.
    from moagraph.graph.spec import Graph, Node, Role

    pinned = Graph(
        name="pinned",
        sink="v",
        nodes=[Node(id="x", model="r", sample_index=1), Node(id="v", role=Role.VOTE, inputs=["x"])],
    )
    rep3 = await aevaluate(GraphPolicy(pinned, ex), task, exs, progress=False)
    assert sorted(r.score for r in rep3.rows) == pytest.approx([0.0, 0.0, 0.9, 0.9])


def test_resume_reruns_transient_failures_only(tmp_path) -> None:
    """A query that failed because the infrastructure did (a crashed local model, a timeout)
    is unfinished: `--resume` runs it again. A deterministic failure (a replay miss, a bad
    config) stays finished unless --retry-errors asks for it."""
    from moagraph.graph.executor import is_transient
    from moagraph.graph.trace import Trace
    from moagraph.models.base import BackendConfigError, BackendError, ReplayMiss
    from moagraph.models.local_worker import WorkerCrashed
    from moagraph.store import RunStore

    assert is_transient(WorkerCrashed("model 'm': killed by SIGSEGV", model="m"))
    assert is_transient(BackendError("timed out after 3 retries"))
    assert not is_transient(BackendConfigError("bad key"))
    assert not is_transient(ReplayMiss("no recording"))
    assert not is_transient(ValueError("x"))

    store = RunStore(tmp_path / "runs.sqlite")
    store.create_run("r", {"x": 1})
    store.add_result("r", Trace(query_id="ok", policy="p"))
    store.add_result(
        "r",
        Trace(
            query_id="crashed",
            policy="p",
            error="killed by SIGSEGV",
            meta={"transient_error": True},
        ),
    )
    store.add_result("r", Trace(query_id="missed", policy="p", error="ReplayMiss: no recording"))
    assert store.finished_ids("r") == {"ok", "missed"}
    assert store.finished_ids("r", include_errors=False) == {"ok"}
