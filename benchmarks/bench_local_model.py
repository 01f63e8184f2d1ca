"""Speed of the embedded default model (Gemma 3 270M Q4_K_M) on this machine.

Two views: (1) raw llama.cpp speed, a generation of up to --max-tokens with
no stop sequences, so prefill and decode are each long enough to time;
(2) the backend as the default pool uses it on real GSM8K questions
(completion prompt, stop sequences): latency per call.
Prompt tokens/s = prompt tokens / time to first token (prefill);
generation tokens/s = (completion tokens - 1) / (total - time to first token).

    .venv/bin/python benchmarks/bench_local_model.py [--n 5] [--max-tokens 64] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

from moagraph.models.base import LLMRequest, SamplingParams
from moagraph.models.llamacpp import LlamaCppBackend
from moagraph.models.pool import load_pool
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
    if not path.exists():
        return (FALLBACK * n)[:n]
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["question"] for _, line in zip(range(n), f)]


async def run(n: int, max_tokens: int, threads: int | None) -> None:
    console = Console()
    spec = load_pool(resolve_pool("local")).models[0]
    if threads:
        spec = spec.model_copy(update={"n_threads": threads})
    backend = LlamaCppBackend(spec)
    t0 = time.perf_counter()
    llm = backend.llama()  # load once, outside the timed calls
    load_s = time.perf_counter() - t0
    list(llm.create_completion("Warm up.", max_tokens=4, stream=True))  # page in the weights

    raw = Table(
        title=f"raw llama.cpp ({backend.n_threads} threads, up to {max_tokens} tokens, no stops)"
    )
    for col in ("prompt", "prompt tok", "output tok", "TTFT s", "prompt tok/s", "gen tok/s"):
        raw.add_column(col, justify="right")
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
        raw.add_row(
            label,
            str(n_prompt),
            str(n_out),
            f"{ttft:.3f}",
            f"{n_prompt / ttft:.1f}",
            f"{(n_out - 1) / (total - ttft):.1f}",
            style="bold",
        )
    console.print(raw)
    llm.reset()  # the backend rows should not reuse the raw runs' prompt prefix
    rows = []
    for i, q in enumerate(track(questions(n), description="generating", console=console)):
        req = LLMRequest(
            model=spec,
            messages=({"role": "user", "content": q},),
            params=SamplingParams(max_tokens=max_tokens),
            sample_index=i,
        )
        pieces: list[str] = []
        c = await backend.complete(req, pieces.append)
        ttft = c.meta.get("ttft_s") or c.latency_s
        gen_s = c.latency_s - ttft
        rows.append(
            (
                c.prompt_tokens,
                c.completion_tokens,
                ttft,
                c.latency_s,
                c.prompt_tokens / ttft,
                (c.completion_tokens - 1) / gen_s if gen_s > 0 else float("nan"),
            )
        )
    await backend.aclose()

    table = Table(
        title=f"backend on GSM8K: {spec.display}, load {load_s:.2f} s, "
        f"format {backend.prompt_format}"
    )
    for col in ("#", "prompt tok", "output tok", "TTFT s", "total s", "prompt tok/s", "gen tok/s"):
        table.add_column(col, justify="right")
    for i, r in enumerate(rows):
        table.add_row(
            str(i), str(r[0]), str(r[1]), f"{r[2]:.3f}", f"{r[3]:.2f}", f"{r[4]:.1f}", f"{r[5]:.1f}"
        )
    table.add_row(
        "median",
        f"{statistics.median(r[0] for r in rows):.0f}",
        f"{statistics.median(r[1] for r in rows):.0f}",
        f"{statistics.median(r[2] for r in rows):.3f}",
        f"{statistics.median(r[3] for r in rows):.2f}",
        f"{statistics.median(r[4] for r in rows):.1f}",
        f"{statistics.median(r[5] for r in rows):.1f}",
        style="bold",
    )
    console.print(table)
    load = os.getloadavg()
    console.print(
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(1/5/15 min): other work on the machine slows every number above."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5, help="prompts to run")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument(
        "--threads", type=int, default=None, help="llama.cpp threads (default: all cores)"
    )
    args = ap.parse_args()
    asyncio.run(run(args.n, args.max_tokens, args.threads))


if __name__ == "__main__":
    main()
