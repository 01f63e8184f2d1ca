"""Speed of the embedded default model (Gemma 3 270M Q4_K_M) on this machine.

Three tables:

1. raw llama.cpp, extra weight buffers off (moagraph's default) vs on (llama.cpp's
   default): each variant runs in a child process, because on CPUs with AMX the
   "on" variant segfaults in decode; a crash is reported, not fatal.
   Prompt tokens/s = prompt tokens / time to first token (prefill);
   generation tokens/s = (output tokens - 1) / (total - time to first token).
2. moagraph's local backend vs ``llama_cpp.server`` on the same GGUF, same safe
   setting, same threads, same prompts (distinct GSM8K questions, completion
   prompt and stops, greedy), over --calls consecutive calls per variant (in
   blocks of --block, interleaved so machine load hits every variant alike):
   moagraph with ``isolation: process`` (default: a worker process),
   ``isolation: none`` (in this process, one pinned thread), the old way
   (``asyncio.to_thread``: a different worker thread per call), and the server.
   tokens/s = completion tokens / end-to-end seconds of the calls.

    .venv/bin/python benchmarks/bench_local_model.py [--quick] [--calls 20] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from moagraph.models.base import LLMRequest, SamplingParams
from moagraph.models.llamacpp import (
    COMPLETION_STOPS,
    LlamaCppBackend,
    completion_prompt,
    cpu_has_amx,
    load_llama,
    resolve_gguf,
)
from moagraph.models.pool import ModelSpec, load_pool
from moagraph.pools import resolve_pool

FALLBACK = [
    (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
        "in May. How many clips did Natalia sell altogether in April and May?"
    ),
    (
        "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
        "babysitting. How much did she earn?"
    ),
]


def data_dir() -> Path:
    env = os.environ.get("MOAGRAPH_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def questions(n: int) -> list[str]:
    path = data_dir() / "gsm8k" / "test.jsonl"
    if path.exists():
        with open(path, encoding="utf-8") as f:
            qs = [json.loads(line)["question"] for _, line in zip(range(n), f)]
        if len(qs) == n:
            return qs
    try:
        from moagraph.tasks.registry import get_task

        task = get_task("gsm8k")
        qs = [task.prompt(ex)[-1]["content"] for ex in task.load("sample", n=n, seed=0)]
        if len(qs) >= n:
            return qs[:n]
    except Exception:
        pass
    return [f"{q} (variant {i})" for i, q in zip(range(n), FALLBACK * n)]


def local_spec(threads: int | None) -> ModelSpec:
    spec = load_pool(resolve_pool("local")).models[0]
    return spec.model_copy(update={"n_threads": threads}) if threads else spec


# --- table 1: raw llama.cpp in a child process --------------------------------------------------
def child_raw(extra: bool, max_tokens: int, threads: int) -> None:
    """Runs in a child: load with/without extra buffers, time a short and a long prompt."""
    spec = local_spec(threads)
    t0 = time.perf_counter()
    llm = load_llama(
        resolve_gguf(spec), extra_buffers=extra, n_ctx=2048, n_threads=threads, verbose=False
    )
    load_s = time.perf_counter() - t0
    list(llm.create_completion("Warm up.", max_tokens=4, stream=True))  # page in the weights
    rows = []
    for label, text in (("short", questions(1)[0]), ("long", " ".join(questions(8)))):
        prompt = f"Question: {text}\n\nAnswer:"
        n_prompt = len(llm.tokenize(prompt.encode()))
        llm.reset()  # no prefix reuse between runs: time the full prefill
        t0 = time.perf_counter()
        ttft, n_out = 0.0, 0
        # No stops, no EOS ban: logit_bias runs a Python pass over the 262k-entry vocabulary per
        # token in llama-cpp-python and would halve the measured speed.
        for _ in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stream=True):
            n_out += 1
            if n_out == 1:
                ttft = time.perf_counter() - t0
        total = time.perf_counter() - t0
        rows.append(
            {
                "prompt": label,
                "n_prompt": n_prompt,
                "n_out": n_out,
                "ttft": ttft,
                "prompt_tps": n_prompt / ttft,
                "gen_tps": (n_out - 1) / (total - ttft),
            }
        )
    print(json.dumps({"load_s": load_s, "rows": rows}), flush=True)


def raw_table(console: Console, max_tokens: int, threads: int) -> Table:
    table = Table(title=f"raw llama.cpp, child process, {threads} threads, up to {max_tokens} tok")
    for col in ("extra buffers", "prompt", "prompt tok", "output tok", "TTFT s", "prompt tok/s"):
        table.add_column(col, justify="right")
    table.add_column("gen tok/s", justify="right")
    for extra in (False, True):
        label = "on (llama.cpp default)" if extra else "off (moagraph default)"
        cmd = [sys.executable, __file__, "--child-raw", str(int(extra))]
        cmd += ["--max-tokens", str(max_tokens), "--threads", str(threads)]
        with tempfile.TemporaryFile() as log:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, timeout=600)
        if proc.returncode != 0:
            how = (
                f"signal {signal.Signals(-proc.returncode).name.removeprefix('SIG')}"
                if proc.returncode < 0
                else f"exit {proc.returncode}"
            )
            sig = f"crashed ({how})" if proc.returncode < 0 else f"failed ({how})"
            table.add_row(label, "-", "-", "-", "-", "-", sig, style="red")
            continue
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        for r in out["rows"]:
            table.add_row(
                label,
                r["prompt"],
                str(r["n_prompt"]),
                str(r["n_out"]),
                f"{r['ttft']:.3f}",
                f"{r['prompt_tps']:.1f}",
                f"{r['gen_tps']:.1f}",
                style="bold" if not extra else None,
            )
    return table


# --- table 2: moagraph vs llama_cpp.server -------------------------------------------------------
class ServerVariant:
    """llama_cpp.server through moagraph's launcher (extra buffers off), /v1/completions."""

    name = "llama_cpp.server (launcher, buffers off)"

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        import httpx

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        cmd = [sys.executable, "-m", "moagraph.models.llamacpp_server", "--model"]
        cmd += [str(resolve_gguf(spec)), "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--n_ctx", str(spec.context_length), "--n_threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}/v1", timeout=300)
        deadline = time.time() + 180
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited: {self.log.read()[-2000:]!r}")
            try:
                if self.client.get("/models").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                raise RuntimeError("llama_cpp.server did not come up in 180 s")
            time.sleep(0.25)

    async def call(self, q: str, max_tokens: int) -> int:
        body = {
            "prompt": completion_prompt(({"role": "user", "content": q},)),
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "top_p": 1.0,
            "seed": 0,
            "stop": list(COMPLETION_STOPS),
        }
        r = self.client.post("/completions", json=body)
        r.raise_for_status()
        return int(r.json()["usage"]["completion_tokens"])

    async def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class BackendVariant:
    def __init__(self, spec: ModelSpec, name: str) -> None:
        self.spec, self.name = spec, name
        self.backend = LlamaCppBackend(spec)

    async def call(self, q: str, max_tokens: int) -> int:
        req = LLMRequest(
            model=self.spec,
            messages=({"role": "user", "content": q},),
            params=SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0),
        )
        return (await self.backend.complete(req)).completion_tokens

    async def close(self) -> None:
        await self.backend.aclose()


class ToThreadVariant:
    """The pre-isolation way: an in-process Llama called through asyncio.to_thread."""

    name = "in-process, asyncio.to_thread (old)"

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        self.llm = load_llama(
            resolve_gguf(spec), n_ctx=spec.context_length, n_threads=threads, verbose=False
        )

    async def call(self, q: str, max_tokens: int) -> int:
        out = await asyncio.to_thread(
            self.llm.create_completion,
            completion_prompt(({"role": "user", "content": q},)),
            max_tokens=max_tokens,
            temperature=0.0,
            top_p=1.0,
            seed=0,
            stop=list(COMPLETION_STOPS),
        )
        return int(out["usage"]["completion_tokens"])

    async def close(self) -> None:
        self.llm.close()


VARIANTS = ("process", "none", "old", "server")


async def compare(
    console: Console, calls: int, block: int, max_tokens: int, threads: int, which: list[str]
) -> Table:
    spec = local_spec(threads)
    variants: list[Any] = []
    if "process" in which:
        variants.append(BackendVariant(spec, "moagraph, isolation: process (default)"))
    if "none" in which:
        none = spec.model_copy(update={"isolation": "none"})
        variants.append(BackendVariant(none, "moagraph, isolation: none"))
    if "old" in which:
        variants.append(ToThreadVariant(spec, threads))
    variants.append(ServerVariant(spec, threads))  # always: the reference, last
    qs = questions(calls)
    stats = {v.name: [0, 0.0, 0] for v in variants}  # tokens, seconds, calls
    per_call: dict[str, dict[int, float]] = {v.name: {} for v in variants}  # question -> s
    try:
        for v in variants:  # load + warm up outside the timed calls
            await v.call("Warm up: what is 1 + 1?", 4)
        for start in range(0, calls, block):
            for v in variants:
                for i, q in enumerate(qs[start : start + block], start):
                    t0 = time.perf_counter()
                    n = await v.call(q, max_tokens)
                    dt = time.perf_counter() - t0
                    s = stats[v.name]
                    s[0], s[1], s[2] = s[0] + n, s[1] + dt, s[2] + 1
                    per_call[v.name][i] = dt
    finally:
        for v in variants:
            await v.close()
    server = stats[variants[-1].name]
    server_tps = server[0] / server[1]
    table = Table(
        title=f"moagraph vs llama_cpp.server: {calls} calls each (blocks of {block}), "
        f"up to {max_tokens} tok, {threads} threads, extra buffers off"
    )
    cols = ("variant", "calls", "tokens", "seconds", "tok/s", "vs server", "paired median")
    for col in cols:
        table.add_column(col, justify="right")
    ref = per_call[variants[-1].name]
    for v in variants:
        tok, sec, n = stats[v.name]
        tps = tok / sec
        # Same question, same greedy tokens: server time / this time, per question; the
        # median shrugs off bursts of load from other processes.
        paired = statistics.median(ref[i] / t for i, t in per_call[v.name].items())
        table.add_row(
            v.name,
            str(n),
            str(tok),
            f"{sec:.2f}",
            f"{tps:.1f}",
            f"{tps / server_tps:.3f}x",
            f"{paired:.3f}x",
        )
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 calls of up to 24 tokens")
    ap.add_argument("--calls", type=int, default=None, help="calls per variant (default 20)")
    ap.add_argument(
        "--block",
        type=int,
        default=5,
        help="consecutive calls per variant turn (1 = interleave per call: fairest under load)",
    )
    ap.add_argument("--max-tokens", type=int, default=None, help="default 64 (24 with --quick)")
    ap.add_argument("--threads", type=int, default=None, help="default: all cores")
    ap.add_argument(
        "--variants",
        default="process,server",
        help="comma-separated, of process, none, old, server (the server always runs). "
        "'none' and 'old' load llama.cpp into this process too; its idle OpenMP threads "
        "then compete with the out-of-process variants on a small machine.",
    )
    ap.add_argument("--no-raw", action="store_true", help="skip table 1")
    ap.add_argument("--child-raw", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    threads = args.threads or os.cpu_count() or 1
    max_tokens = args.max_tokens or (24 if args.quick else 64)
    if args.child_raw is not None:
        child_raw(bool(args.child_raw), max_tokens, threads)
        return
    calls = args.calls or 20
    console = Console()
    amx = cpu_has_amx()
    console.print(
        f"CPU: {os.cpu_count()} cores, AMX {'yes (amx_tile)' if amx else 'no'}"
        + (": llama.cpp's extra weight buffers are expected to crash here" if amx else "")
    )
    if not args.no_raw:
        console.print(raw_table(console, max_tokens, threads))
    console.print(
        asyncio.run(
            compare(console, calls, args.block, max_tokens, threads, args.variants.split(","))
        )
    )
    load = os.getloadavg()
    console.print(
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min): "
        "other work on the machine slows every number above."
    )


if __name__ == "__main__":
    main()
