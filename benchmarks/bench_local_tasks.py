"""Accuracy and speed of an embedded local model on the bundled task samples.

Runs ``moagraph eval --model M --task T --split sample`` for each task, exactly as a
user would (one CLI process per task, results in a SQLite run store, every call in a
SQLite call cache), then reads the stored traces and prints one row per task:
accuracy with a Wilson 95% CI, prompt and output tokens, output tokens per second
(end to end per call, prefill included; cache hits excluded), how many replies hit
``--max-tokens``, and errors. A task whose run already exists in the store is
resumed, so an interrupted benchmark continues and a finished one re-prints for free.

    .venv/bin/python benchmarks/bench_local_tasks.py                # qwen-coder-1.5b, 4 tasks
    .venv/bin/python benchmarks/bench_local_tasks.py --tasks gsm8k --n 10 --threads 2

``--threads`` writes a copy of the pool with ``n_threads`` set on every model (the
speed then depends on it and on what else runs on the machine: say so with numbers).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from moagraph.graph.evaluate import wilson_interval
from moagraph.pools import resolve_pool
from moagraph.store import RunStore

OUT = Path(__file__).parent / "out"
SAMPLE_SIZES = {"humaneval": 20, "mbpp": 20, "gsm8k": 40, "math": 40}


def pool_file(pool: str, threads: int | None, work: Path) -> str:
    """The pool path to evaluate with; a copy with ``n_threads`` when asked."""
    path = Path(resolve_pool(pool))
    if threads is None:
        return str(path)
    d = yaml.safe_load(path.read_text())
    d["name"] = f"{d['name']}-{threads}thread"
    for m in d["models"]:
        m["n_threads"] = threads
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"{d['name']}.yaml"
    out.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(out)


def run_exists(store: Path, run_id: str) -> bool:
    if not store.exists():
        return False
    with RunStore(store) as rs:
        return rs.run(run_id) is not None


def run_task(args: argparse.Namespace, pool: str, task: str, run_id: str) -> None:
    n = args.n or SAMPLE_SIZES.get(task, 20)
    cmd = [
        *(["nice", "-n", str(args.nice)] if args.nice else []),
        sys.executable,
        "-c",
        "from moagraph.cli import main; main()",
        "eval",
        "--pool",
        pool,
        "--model",
        args.model,
        "--task",
        task,
        "--split",
        "sample",
        "-n",
        str(n),
        "--max-tokens",
        str(args.max_tokens),
        "--concurrency",
        "1",
        "--store",
        str(args.store),
        "--cache",
        str(args.cache),
        "--run-id",
        run_id,
    ]
    if run_exists(args.store, run_id):
        cmd.append("--resume")
    rc = subprocess.run(cmd).returncode
    if rc not in (0, 3):  # 3: some queries failed (stored with their error, counted below)
        raise SystemExit(f"moagraph eval exited {rc}: {' '.join(cmd)}")


def summarise(store: Path, run_id: str, max_tokens: int) -> dict[str, Any]:
    with RunStore(store) as rs:
        rows = rs.results(run_id)
        traces = [r.trace(rs, run_id) for r in rows]
    scores = [float(r.score) for r in rows if r.score is not None and r.error is None]
    errors = sum(1 for r in rows if r.error)
    ptok, ctok, lat, truncated = [], [], [], 0
    for tr in traces:
        for node in tr.nodes:
            if node.model is None:
                continue
            ptok.append(node.prompt_tokens)
            ctok.append(node.completion_tokens)
            truncated += node.completion_tokens >= max_tokens
            if not node.cached and node.latency_s > 0:
                lat.append((node.completion_tokens, node.latency_s))
    lo, hi = wilson_interval(sum(scores), len(scores)) if scores else (None, None)
    return {
        "n": len(rows),
        "accuracy": sum(scores) / len(scores) if scores else None,
        "ci95": [lo, hi],
        "prompt_tokens": sum(ptok) / len(ptok) if ptok else None,
        "output_tokens": sum(ctok) / len(ctok) if ctok else None,
        "tokens_per_s": sum(c for c, _ in lat) / sum(s for _, s in lat) if lat else None,
        "s_per_call": sum(s for _, s in lat) / len(lat) if lat else None,
        "truncated": truncated,
        "errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pool", default="local")
    ap.add_argument("--model", default="qwen-coder-1.5b")
    ap.add_argument("--tasks", default="humaneval,mbpp,gsm8k,math")
    ap.add_argument(
        "--n", type=int, default=None, help="questions per task (default: whole sample)"
    )
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None, help="n_threads for every model")
    ap.add_argument("--nice", type=int, default=0, help="run the evals at this niceness")
    ap.add_argument("--store", type=Path, default=OUT / "local_tasks.sqlite")
    ap.add_argument("--cache", type=Path, default=OUT / "local_tasks_cache.sqlite")
    ap.add_argument("--run-prefix", default=None, help="run id = PREFIX + task (default: MODEL-)")
    ap.add_argument("--report-only", action="store_true", help="print what the store holds")
    args = ap.parse_args()
    prefix = args.run_prefix if args.run_prefix is not None else f"{args.model}-"
    pool = pool_file(args.pool, args.threads, args.store.parent / "pools")
    rows = {}
    for task in args.tasks.split(","):
        run_id = f"{prefix}{task}"
        if not args.report_only:
            run_task(args, pool, task, run_id)
        if run_exists(args.store, run_id):
            rows[task] = summarise(args.store, run_id, args.max_tokens)

    def f(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    table = Table(title=f"{args.model} on the bundled samples (pool {Path(pool).name})")
    for col in (
        "task",
        "n",
        "accuracy [95% CI]",
        "prompt tok",
        "output tok",
        "tok/s",
        "s/call",
        "hit max",
        "errors",
    ):
        table.add_column(col, justify="left" if col == "task" else "right")
    md = [
        "| task | n | accuracy [95% CI] | prompt tok | output tok | output tok/s | s/call | hit max_tokens | errors |"
    ]
    md.append("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for task, r in rows.items():
        lo, hi = r["ci95"]
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]"
        cells = [
            task,
            str(r["n"]),
            acc,
            f(r["prompt_tokens"], ".0f"),
            f(r["output_tokens"], ".0f"),
            f(r["tokens_per_s"], ".2f"),
            f(r["s_per_call"], ".1f"),
            str(r["truncated"]),
            str(r["errors"]),
        ]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    Console().print(table)
    OUT.mkdir(exist_ok=True)
    stem = f"local_tasks_{args.model}"
    (OUT / f"{stem}.json").write_text(
        json.dumps(
            {
                "args": vars(args) | {"store": str(args.store), "cache": str(args.cache)},
                "rows": rows,
            },
            indent=2,
            default=str,
        )
    )
    (OUT / f"{stem}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
