"""Replay pools: the store's index, strict hits and misses, record-then-replay."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from moagraph.models.base import Completion, LLMRequest, ReplayMiss, TokenCallback, prompt_hash
from moagraph.models.pool import ModelSpec
from moagraph.models.replay import ReplayBackend, ReplayFileError, ReplayStore, write_records

MSGS = ({"role": "user", "content": "Name a prime."},)


def spec(name: str = "llama-8b", **kw: object) -> ModelSpec:
    return ModelSpec(
        name=name, backend="replay", replay="r.jsonl", params_b=8, layers=32, hidden_size=4096, **kw
    )  # type: ignore[arg-type]


def rec(model: str, qid: str, sample: int, text: str, **kw: object) -> dict[str, object]:
    return {
        "model": model,
        "query_id": qid,
        "sample": sample,
        "text": text,
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "latency_s": 0.5,
        **kw,
    }


RECORDS = [
    rec("llama-8b", "q1", 0, "2", score=1.0),
    rec("llama-8b", "q1", 1, "9", score=0.0),
    rec("llama-8b", "q2", 0, "7", prompt_hash=prompt_hash(MSGS)),
    rec("qwen-7b", "q1", 0, "3", score=1.0),
]


class EchoLive:
    """Fake live backend for the record-mode orchestration test."""

    kind = "fake"

    def __init__(self) -> None:
        self.calls = 0

    def identity(self, model: ModelSpec) -> str:
        return "fake"

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        self.calls += 1
        return Completion(f"live answer {self.calls}", 12, 4, 0.75, request.model.name, "fake")

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("name", ["r.jsonl", "r.jsonl.gz"])
def test_store_indexes(tmp_path: Path, name: str) -> None:
    store = ReplayStore(write_records(tmp_path / name, RECORDS))
    assert len(store) == 4 and store.models() == ["llama-8b", "qwen-7b"]
    assert store.query_ids() == ["q1", "q2"] and store.query_ids("qwen-7b") == ["q1"]
    assert store.n_samples("llama-8b", "q1") == 2 and store.n_samples("qwen-7b", "q2") == 0
    assert store.score("llama-8b", "q1", 1) == 0.0 and store.score("llama-8b", "q2") is None
    assert store.get("llama-8b", query_id="q1", sample=1)["text"] == "9"  # type: ignore[index]
    assert store.get("llama-8b", prompt_hash=prompt_hash(MSGS))["text"] == "7"  # type: ignore[index]
    assert store.get("llama-8b", query_id="q9") is None


def test_bad_files_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(ReplayFileError, match="does not exist"):
        ReplayStore(tmp_path / "none.jsonl")
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(RECORDS[0]) + "\n{oops\n")
    with pytest.raises(ReplayFileError, match=r"bad.jsonl:2: not valid JSON"):
        ReplayStore(p)
    p.write_text(json.dumps({"model": "m", "text": "x"}) + "\n")
    with pytest.raises(ReplayFileError, match=r":1: record lacks query_id, sample"):
        ReplayStore(p)


async def test_strict_hits_by_query_then_prompt_hash(tmp_path: Path) -> None:
    b = ReplayBackend(spec(), write_records(tmp_path / "r.jsonl", RECORDS))
    streamed: list[str] = []
    c = await b.complete(
        LLMRequest(model=spec(), messages=MSGS, query_id="q1", sample_index=1), streamed.append
    )
    assert (c.text, c.prompt_tokens, c.completion_tokens, c.latency_s) == ("9", 10, 3, 0.5)
    assert c.meta["score"] == 0.0 and c.backend == "replay" and streamed == ["9"]
    # No query id (a node with inputs): found by the prompt's hash; no score recorded.
    c2 = await b.complete(LLMRequest(model=spec(), messages=MSGS))
    assert c2.text == "7" and "score" not in c2.meta


async def test_replay_model_maps_pool_name(tmp_path: Path) -> None:
    s = spec("my-qwen", replay_model="qwen-7b")
    b = ReplayBackend(s, write_records(tmp_path / "r.jsonl", RECORDS))
    c = await b.complete(LLMRequest(model=s, messages=MSGS, query_id="q1"))
    assert c.text == "3" and c.model == "my-qwen" and c.meta["replay_model"] == "qwen-7b"
    assert "qwen-7b" in b.identity(s)


async def test_strict_miss_says_what_and_how(tmp_path: Path) -> None:
    b = ReplayBackend(spec(), write_records(tmp_path / "r.jsonl", RECORDS))
    with pytest.raises(ReplayMiss) as e:
        await b.complete(LLMRequest(model=spec(), messages=MSGS, query_id="q1", sample_index=5))
    msg = str(e.value)
    assert (
        "'llama-8b'" in msg and "'q1'" in msg and "sample 5" in msg and "2 samples recorded" in msg
    )
    assert "moagraph record" in msg and "mode='record'" in msg
    other = spec("gpt-x")
    with pytest.raises(
        ReplayMiss, match=r"no model 'gpt-x' \(it has: llama-8b, qwen-7b; set `replay_model`"
    ):
        await b.complete(LLMRequest(model=other, messages=MSGS, query_id="q1"))


@pytest.mark.parametrize("name", ["rec.jsonl", "rec.jsonl.gz"])
async def test_record_then_replay_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    live = EchoLive()
    recorder = ReplayBackend(spec(), path, mode="record", live=live, task="gsm8k")
    reqs = [
        LLMRequest(model=spec(), messages=MSGS, query_id="q1", sample_index=i) for i in range(2)
    ]
    reqs.append(LLMRequest(model=spec(), messages=({"role": "user", "content": "fuse these"},)))
    recorded = [await recorder.complete(r) for r in reqs]
    assert live.calls == 3 and all(c.meta["recorded"] for c in recorded)
    again = await recorder.complete(reqs[0])  # already recorded: no live call
    assert live.calls == 3 and again.text == recorded[0].text

    strict = ReplayBackend(spec(), path)  # a fresh reader of the same file
    replayed = [await strict.complete(r) for r in reqs]
    assert [c.text for c in replayed] == [c.text for c in recorded]
    assert [c.prompt_tokens for c in replayed] == [12, 12, 12]
    data = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    raw = [json.loads(line) for line in data.decode().splitlines()]
    assert [r["task"] for r in raw] == ["gsm8k"] * 3 and raw[2]["query_id"] == raw[2]["prompt_hash"]


def test_record_mode_needs_live(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a `live` backend"):
        ReplayBackend(spec(), tmp_path / "x.jsonl", mode="record")


APPENDER = textwrap.dedent(
    """
    import sys
    from moagraph.models.replay import ReplayStore
    path, worker, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = ReplayStore(path, must_exist=False)
    for i in range(n):
        store.append({"model": "m", "query_id": f"{worker}-{i}", "sample": 0, "text": "x" * 5000})
    """
)


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz"])
def test_concurrent_appends_from_processes(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(path), str(w), "60"], stderr=subprocess.PIPE
        )
        for w in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    store = ReplayStore(path)  # every line parses: no interleaved writes
    assert len(store) == 240 and len(store.query_ids("m")) == 240


async def test_question_text_finds_a_recording_made_under_a_query_id(tmp_path: Path) -> None:
    """A client that sends only the question (the server, a chat UI) still hits the recording."""
    path = write_records(tmp_path / "records.jsonl", RECORDS)
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"query_id": "q1", "question": "What is 1+1?"}) + "\n", encoding="utf-8"
    )
    backend = ReplayBackend(spec(), path)
    asked = ({"role": "user", "content": "  What is 1+1?\n"},)
    hit = await backend.complete(LLMRequest(model=spec(), messages=asked, query_id="chat-123"))
    assert hit.text == "2" and hit.meta["query_id"] == "q1"
    other = ({"role": "user", "content": "What is 1+1? Explain."},)
    with pytest.raises(ReplayMiss):
        await backend.complete(LLMRequest(model=spec(), messages=other, query_id="chat-123"))
