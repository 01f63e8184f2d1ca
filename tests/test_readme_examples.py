"""The README's Python examples run as written (only the serve client's port is changed).

Each ```python block of README.md is matched to one test below; a new block without a
test fails :func:`test_every_python_block_is_run`. Eval, search and route run on the
bundled replay pools (no model call, seconds); the serve example starts `moagraph serve`
for real on a loopback port with the embedded local model and talks to it with the
official ``openai`` client (skipped without the ``local`` extra).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text(encoding="utf-8")


def _blocks(lang: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```lang block."""
    out = []
    for m in re.finditer(rf"^```{lang}\n(.*?)^```", TEXT, flags=re.M | re.S):
        out.append((TEXT.count("\n", 0, m.start()) + 2, m.group(1)))
    return out


KINDS = {
    "eval": "moagraph.evaluate(graph",
    "search": "moagraph.optimize(",
    "route": "moagraph.load_router(",
    "serve": "from openai import OpenAI",
}


def _block(kind: str) -> tuple[int, str]:
    found = [(line, code) for line, code in _blocks("python") if KINDS[kind] in code]
    assert len(found) == 1, f"README.md should have one {kind} Python example, found {len(found)}"
    return found[0]


def _run(kind: str, code: str | None = None) -> str:
    """Run the block as a script would (its own globals), return what it printed."""
    line, block = _block(kind)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code or block, f"README.md:{line}", "exec"), {"__name__": "__main__"})
    return out.getvalue()


def test_every_python_block_is_run() -> None:
    blocks = _blocks("python")
    assert blocks, "README.md has no Python example"
    for line, code in blocks:
        kinds = [k for k, needle in KINDS.items() if needle in code]
        assert len(kinds) == 1, f"README.md:{line}: a Python block no test here runs"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)  # the examples write runs/, best.yaml, router.npz
    yield tmp_path


def test_eval_example(in_tmp: Path) -> None:
    out = _run("eval")
    lines = out.strip().splitlines()
    assert len(lines) == 2 and "vote-" in lines[0] and "single-Qwen2.5-7B" in lines[1], out
    # the numbers the README quotes under the example
    assert "accuracy 0.500 [0.332, 0.668], 13.61 normalised FLOPs" in lines[0]
    assert "accuracy 0.533 [0.361, 0.698], 3.32 normalised FLOPs" in lines[1]
    assert "0.500 [0.332, 0.668]" in " ".join(TEXT.split())
    assert (in_tmp / "runs" / "moagraph.sqlite").exists()  # the store got the traces


def test_search_example(in_tmp: Path) -> None:
    import moagraph

    out = _run("search")
    assert "test accuracy" in out and "20 graphs evaluated" in out, out
    best = moagraph.Graph.load(in_tmp / "best.yaml")  # written for eval/serve to use
    allowed = {"Qwen2.5-3B-Instruct", "Qwen2.5-7B-Instruct", "gemma-2-9b-it"}
    allowed.add("Meta-Llama-3.1-8B-Instruct")
    assert {n.model for n in best.llm_nodes} <= allowed
    pool, task = moagraph.load_pool("zeroeval-math"), moagraph.get_task("math")
    assert moagraph.estimate_cost(best, pool, task).flops_norm > 0


def test_route_example(in_tmp: Path) -> None:
    from typer.testing import CliRunner

    from moagraph.cli import _register, app

    # the README's first `route train` line, as written (its comment cut off)
    (_, bash), *_ = [b for b in _blocks("bash") if "moagraph route train" in b[1]]
    first = next(ln for ln in bash.splitlines() if ln.startswith("moagraph route train"))
    args = shlex.split(first.split("#")[0])[1:]
    assert "router.npz" in args
    _register()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = _run("route")
    assert out.startswith("RouteMoA: accuracy "), out
    acc = float(out.split("accuracy ")[1].split(",")[0])
    assert 0.0 <= acc <= 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.needs_extra("local")
@pytest.mark.local_model
def test_serve_example_with_the_openai_client(tmp_path: Path) -> None:
    pytest.importorskip("openai")
    import httpx

    # Served as "math" like the README's `--graph math=...`; one node (not vote3) and
    # 8 new tokens a request keep the live model's part short on a loaded CPU.
    graph = tmp_path / "one.yaml"
    graph.write_text(
        "name: one\nnodes:\n  - {id: a0, model: gemma-270m}\nsink: a0\n", encoding="utf-8"
    )
    port = _free_port()
    cmd = [sys.executable, "-c", "from moagraph.cli import main; main()", "serve"]
    cmd += ["--graph", f"math={graph}", "--api-key", "KEY", "--port", str(port)]
    cmd += ["--max-tokens", "8", "--log-level", "warning"]
    log = tmp_path / "serve.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            base = f"http://127.0.0.1:{port}/v1"
            give_up = time.monotonic() + 600  # a hang guard, not a speed check
            while True:  # wait until it answers (or died)
                if proc.poll() is not None:
                    pytest.fail(f"moagraph serve exited {proc.returncode}:\n{log.read_text()}")
                if time.monotonic() > give_up:
                    pytest.fail(f"moagraph serve never answered /v1/models:\n{log.read_text()}")
                try:
                    r = httpx.get(f"{base}/models", headers={"Authorization": "Bearer KEY"})
                    if r.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            assert "math" in {m["id"] for m in r.json()["data"]}
            _, block = _block("serve")
            assert 'base_url="http://127.0.0.1:8000/v1"' in block
            code = block.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            out = _run("serve", code)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert "'flops'" in out and "'trace_id'" in out and "'dollars'" in out, out
    assert "CompletionUsage(" in out
