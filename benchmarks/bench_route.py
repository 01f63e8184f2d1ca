"""Per-query routing on the AlpacaEval replay pool: scorer quality, policy cost/quality,
router decision time, and (``--live N``) a live RouteMoA run on the local Gemma model.

    .venv/bin/python benchmarks/bench_route.py                 # replay + timing (~1 min, MiniLM)
    .venv/bin/python benchmarks/bench_route.py --encoder hashing
    .venv/bin/python benchmarks/bench_route.py --live 3        # + live Gemma demo (slow)

What is measured and what is modelled is stated in each table's caption; see
moagraph.route.replay_eval for the final-answer model used for every policy.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from moagraph.cli.route_cmd import build_policies
from moagraph.models.runtime import PoolRuntime
from moagraph.route.data import alpaca_eval_pool, load_alpaca_eval
from moagraph.route.encoders import MiniLMEncoder, make_encoder
from moagraph.route.evaluate import evaluate_scorer, plot_calibration
from moagraph.route.replay_eval import evaluate_policies, plot_results, results_table
from moagraph.route.routemoa import RouteMoA
from moagraph.route.scorer import Scorer

console = Console(width=160)
OUT = Path(__file__).parent / "out"


def pct(v: list[float]) -> str:
    return f"{np.percentile(v, 50):.3f} / {np.percentile(v, 99):.3f}"


def decision_times(router: RouteMoA, texts: list[str]) -> Table:
    """p50/p99 of encoder (model / SQLite cache / in-process memo), head and ranking."""
    enc = router.scorer.encoder
    rows: dict[str, list[float]] = {"encoder: model forward": [], "encoder: SQLite cache hit": [],
                                    "encoder: in-process memo": [], "head (ridge)": [],
                                    "policy (rank, tie-break)": []}
    for t in texts:
        if isinstance(enc, MiniLMEncoder):
            model = enc._load()
            t0 = time.perf_counter()
            model.encode([t], normalize_embeddings=True, show_progress_bar=False)
            rows["encoder: model forward"].append((time.perf_counter() - t0) * 1e3)
            enc._memo.pop(t, None)
            t0 = time.perf_counter()
            enc.encode([t])
            rows["encoder: SQLite cache hit"].append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        x = enc.encode([t])
        rows["encoder: in-process memo" if isinstance(enc, MiniLMEncoder) else "encoder: model forward"].append(
            (time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        s = router.scorer.predict_embedded(x)[0]
        rows["head (ridge)"].append((time.perf_counter() - t0) * 1e3)
        scores = {m: float(v) for m, v in zip(router.scorer.models, s)}
        t0 = time.perf_counter()
        router.rank(scores)[: router.config.k]
        rows["policy (rank, tie-break)"].append((time.perf_counter() - t0) * 1e3)
    tab = Table(title=f"Router decision time per query, {len(texts)} held-out queries, "
                      f"encoder {enc.name} (no LLM calls)",
                caption="goal: p50 < 2 ms end to end on 2 cores")
    tab.add_column("step")
    tab.add_column("p50 / p99 ms", justify="right")
    for k, v in rows.items():
        if v:
            tab.add_row(k, pct(v))
    head = np.add(rows["head (ridge)"], rows["policy (rank, tie-break)"])
    tab.add_row("head + policy", pct(list(head)))
    for k in ("encoder: model forward", "encoder: SQLite cache hit", "encoder: in-process memo"):
        if rows[k]:
            tab.add_row(f"total via {k.split(': ')[1]}", pct(list(np.add(rows[k], head))))
    return tab


async def live_demo(n: int) -> None:
    """RouteMoA end to end on the local Gemma 3 270M (two pool entries of the same GGUF)."""
    from moagraph.models.pool import load_pool
    from moagraph.pools import resolve_pool
    from moagraph.route.encoders import HashingEncoder
    from moagraph.tasks.gsm8k import GSM8KTask

    base = load_pool(resolve_pool("local"))
    spec = base.models[0]
    pool = base.model_copy(update={"models": [spec, spec.model_copy(update={"name": "gemma-270m-b"})]})
    pool.path = base.path
    scorer = Scorer(HashingEncoder(64), pool.names)  # uniform prior: the demo shows the pipeline
    scorer.weights = [np.zeros((64, 2), np.float32), np.array([0.5, 0.5], np.float32)]
    rt = PoolRuntime(pool)
    router = RouteMoA(scorer, rt, k=2, max_layers=2, max_tokens=48, judge_max_tokens=4,
                      stop=("\n\nQuestion:", "Question:"), stop_threshold=8.0)
    task = GSM8KTask()
    exs = task.load("test", n=n, seed=0)
    tab = Table(title=f"Live RouteMoA on local Gemma 3 270M (base model), {n} GSM8K queries",
                caption="pool = the same GGUF twice (no real diversity); expect wrong answers")
    for c in ("query", "calls", "judge scores L1 (answer<-judges)", "stop", "final", "correct", "wall s"):
        tab.add_column(c)
    for ex in exs:
        tr = await router.answer(ex, task)
        js = tr.meta["layers"][0].get("judge_scores", {}) if tr.meta["layers"] else {}
        tab.add_row(ex.id, str(len(tr.nodes)), str(js), tr.meta.get("stop_reason", "")[:60],
                    tr.meta.get("final", "")[:40], f"{task.grade(tr.output, ex):.0f}", f"{tr.wall_s:.1f}")
    await rt.aclose()
    console.print(tab)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="minilm", choices=["minilm", "hashing"])
    ap.add_argument("--cache", default=None, help="embedding cache (default ~/.cache/moagraph)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--live", type=int, default=0, help="also run N live queries on local Gemma")
    args = ap.parse_args()

    table = load_alpaca_eval()
    pool = alpaca_eval_pool()
    train, test = table.split(0.25, seed=0)
    with console.status(f"encoding {len(table)} instructions ({args.encoder}) and fitting"):
        scorer = Scorer(make_encoder(args.encoder, cache_path=args.cache), table.models).fit(
            train.texts, train.labels, pool)
        rep = evaluate_scorer(scorer, train, test)
    console.print(rep.table(f"Scorer ({args.encoder} + ridge) on {rep.n_test} held-out AlpacaEval queries, "
                            f"{rep.n_models} models"))
    console.print(rep.calibration_line())
    console.print(f"calibration plot: {plot_calibration(rep, OUT / f'route_calibration_{args.encoder}.png')}")

    rt = PoolRuntime(pool)
    names = ["dense", "sparse", "single", "random", "threshold", "routemoa", "routemoa-1L"]
    pols = build_policies(names, scorer, rt, args.k, args.layers, 0)
    res = evaluate_policies(pols, test, pool)
    console.print(results_table(res))
    console.print("cost = cost-model estimate from recorded lengths (chars/4); latency = documented "
                  "params x tokens model (moagraph.route.runner.model_latency_s); RouteMoA has no "
                  "early stop on replay (no recorded judges): its cost is an upper bound.")
    console.print(f"plot: {plot_results(res, OUT / f'route_policies_{args.encoder}.png')}")
    router = next(p for p in pols if p.name == "routemoa")
    console.print(decision_times(router, test.texts))
    if args.live:
        asyncio.run(live_demo(args.live))


if __name__ == "__main__":
    main()
