"""docs/own-task.md end to end: a 5-question JSONL task, eval / record / search against a
scripted OpenAI-compatible upstream on 127.0.0.1 (the user's endpoints)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

DOC = Path(__file__).parent.parent / "docs" / "own-task.md"


def _doc_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


class _Upstream(BaseHTTPRequestHandler):
    """`large` adds right; `small` is off by one when the first addend is odd."""

    calls: ClassVar[list[str]] = []

    def log_message(self, *a: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model = body["model"]
        text = body["messages"][-1]["content"]
        m = re.search(r"What is (\d+) \+ (\d+)\?", text)
        a, b = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        ans = a + b + (1 if model == "small" and a % 2 else 0)
        _Upstream.calls.append(model)
        out = {
            "id": "x",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"{a} + {b}.\nAnswer: {ans}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38},
        }
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def upstream() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown()
        srv.server_close()


def _cli(args: list[str]) -> str:
    from typer.testing import CliRunner

    from moagraph.cli import _register, app

    _register()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, f"{args}\n{res.output}"
    return res.output


def test_doc_commands_end_to_end(
    upstream: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "questions.jsonl").write_text(_doc_blocks("jsonl")[0], encoding="utf-8")
    pool = yaml.safe_load(_doc_blocks("yaml")[0])
    for m in pool["models"]:
        m["base_url"] = upstream
    (tmp_path / "my-pool.yaml").write_text(yaml.safe_dump(pool), encoding="utf-8")
    commands = [
        ln
        for block in _doc_blocks("bash")
        for ln in block.replace("\\\n", " ").splitlines()
        if ln.strip().startswith("moagraph ")
    ]
    assert [c.split()[1] for c in commands] == ["eval", "record", "search"]

    out = _cli([*commands[0].split()[1:], "--no-progress", "--store", "runs.sqlite"])
    assert "jsonl:questions.jsonl:number" in out
    rows = {
        ln.split("│")[1].strip(): ln.split("│")[2].strip()
        for ln in out.splitlines()
        if ln.count("│") == 3
    }
    assert rows["queries"] == "5" and rows["errors"] == "0"
    assert set(_Upstream.calls) == {"large"}

    _cli(commands[1].split()[1:])
    from moagraph.pools.schema import read_records

    rec_dir = tmp_path / "my-recording"
    recs = read_records(next(rec_dir.glob("records.jsonl*")))
    assert len(recs) == 2 * 5 * 2  # models x questions x samples
    score = {(r.model, r.query_id): r.score for r in recs}
    assert score[("large", "q1")] == 1.0 and score[("small", "q1")] == 0.0  # 17 is odd
    assert score[("small", "q3")] == 1.0  # 30 is even
    n_calls = len(_Upstream.calls)

    out = _cli(commands[2].split()[1:])
    assert (tmp_path / "best.yaml").exists()
    assert len(_Upstream.calls) == n_calls  # the search replays the recording: no call

    # the recording carries its task: route trains on it, and the found graph evaluates on it
    out = _cli(["route", "train", "--pool", "my-recording", "--encoder", "hashing"])
    out += _cli(
        [
            "route",
            "train",
            "--pool",
            "my-recording",
            "--encoder",
            "hashing",
            "--test-frac",
            "0",
            "--out",
            "r.pt",
        ]
    )
    assert (tmp_path / "r.pt").exists()
    out = _cli(
        [
            "eval",
            "--task",
            "jsonl:questions.jsonl:number",
            "--pool",
            "my-recording",
            "--graph",
            "best.yaml",
            "--n",
            "5",
            "--store",
            "runs.sqlite",
            "--no-progress",
        ]
    )
    assert len(_Upstream.calls) == n_calls


def test_doc_rows_match_the_task_layout(tmp_path: Path) -> None:
    from moagraph.tasks.registry import get_task

    p = tmp_path / "questions.jsonl"
    p.write_text(_doc_blocks("jsonl")[0], encoding="utf-8")
    task = get_task(f"jsonl:{p}:number")
    exs = task.load("test")
    assert [e.id for e in exs] == ["q1", "q2", "q3", "q4", "q5"]
    assert task.grade("so\nAnswer: 42.0", exs[0]) == 1.0
