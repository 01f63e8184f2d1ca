"""Graph-search optimisers at equal evaluations vs the exhaustive optimum.

Pool: the bundled AlpacaEval replay pool (real outputs of 19 open models,
1.2B-69B, with the AlpacaEval 2.0 judge's per-instruction win probability).
Space: flat graphs (first-layer assistants into the sink), one copy per model
(one recording each), under a normalised-FLOPs budget. Objective: the
*oracle-select* sink (best-of-n by the recorded judge score), an upper-bound
objective, because chat outputs cannot be majority-voted. Every graph is
scored exactly from the recordings (no LLM call), so the exhaustive optimum
of the space is known.

``--pool gsm8k-local --task gsm8k`` runs the same comparison in *vote* mode
on a votable task (majority vote over the recorded samples, copies per model
capped at the samples recorded per query): any all-replay pool works.

The agent of agent-reinforce / textgrad is a real LLM: the local Gemma 3
270M base model through the `local` pool, its calls cached in SQLite.

    .venv/bin/python benchmarks/bench_search.py            # default (~10 min on 2 cores, first run)
    .venv/bin/python benchmarks/bench_search.py --quick    # smaller
    .venv/bin/python benchmarks/bench_search.py --pool gsm8k-local --task gsm8k --no-llm-agent
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from moagraph.models.pool import load_pool
from moagraph.pools import resolve_pool
from moagraph.search.agent import RuntimeAgent
from moagraph.search.base import get_optimizer
from moagraph.search.evaluator import (
    ExactReplayEvaluator,
    is_replay_pool,
    is_votable,
    pool_replay_records,
    recorded_copies,
)
from moagraph.search.exhaustive import enumerate_graphs
from moagraph.search.space import SearchSpace
from moagraph.search.study import Study, run_study
from moagraph.tasks.base import Example
from moagraph.tasks.registry import get_task

CLOSED = {"gpt-3.5-turbo-1106", "claude-2.1"}  # parameter counts not disclosed


def build(args: argparse.Namespace) -> tuple[SearchSpace, ExactReplayEvaluator]:
    pool = load_pool(resolve_pool(args.pool))
    if not is_replay_pool(pool):
        raise SystemExit(f"--pool {args.pool}: the benchmark needs an all-replay pool (exact evaluation)")
    task = get_task(args.task) if args.task else None
    votable = task is not None and is_votable(task)
    mode = "vote" if votable else "select"
    models = [m.name for m in pool.models if m.name not in CLOSED]
    recs = pool_replay_records(pool, models)
    a = statistics.mean(r["prompt_tokens"] for r in recs)
    b = statistics.mean(r["completion_tokens"] for r in recs)
    import random

    have = {(r["model"], str(r["query_id"])) for r in recs if r.get("score") is not None}
    qids = sorted({str(r["query_id"]) for r in recs})
    qids = [q for q in qids if all((m, q) in have for m in models)]
    random.Random(0).shuffle(qids)
    train_n = min(args.train_n, max(1, len(qids) // 2))
    heldout_n = min(args.heldout_n, len(qids) - train_n)
    if (train_n, heldout_n) != (args.train_n, args.heldout_n):
        print(f"pool {pool.name} has {len(qids)} fully recorded queries: train {train_n}, held-out {heldout_n}")
    args.train_n, args.heldout_n = train_n, heldout_n
    copies = recorded_copies(recs, models, qids[: train_n + heldout_n])
    space = SearchSpace.from_pool(
        pool, models=models, budget=args.budget, max_nodes=args.max_nodes, flat=True,
        sink_mode=mode, max_copies=copies, avg_in=a, avg_out=b,
    )
    args.mode, args.pool_name = mode, pool.name
    train = [Example(q, "") for q in qids[:train_n]]
    held = [Example(q, "") for q in qids[train_n : train_n + heldout_n]]
    keep = set(qids[: train_n + heldout_n])
    recs = [r for r in recs if str(r["query_id"]) in keep]
    ev = ExactReplayEvaluator.from_records(recs, space, train, held, mode=mode, task=task if votable else None)
    return space, ev


async def run_one(name: str, seed: int, space: SearchSpace, ev: ExactReplayEvaluator, evals: int, agent, out: Path, task_kind: str = "chat"):
    kw = {"agent": agent, "task_kind": task_kind} if name in ("agent-reinforce", "textgrad") else {}
    opt = get_optimizer(name, space, seed=seed, **kw)
    study = Study.open(out / "bench_studies.sqlite", f"{name}-s{seed}-{time.time_ns()}", {"optimizer": name, "seed": seed})
    curve: list[float] = []
    t0 = time.perf_counter()
    res = await run_study(study, opt, ev, evals, on_trial=lambda d, t, row, best: curve.append(best))
    wall = time.perf_counter() - t0
    study.close()
    return res, curve, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 seeds, 20 evaluations, agent on 1 seed")
    ap.add_argument("--evals", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--agent-seeds", type=int, default=1, help="seeds for the LLM-agent optimisers (slow: each agent call of the local model takes 10-60 s on 2 shared cores)")
    ap.add_argument("--budget", type=float, default=20.0)
    ap.add_argument("--max-nodes", type=int, default=4)
    ap.add_argument("--train-n", type=int, default=60)
    ap.add_argument("--heldout-n", type=int, default=300)
    ap.add_argument("--agent-max-tokens", type=int, default=64)
    ap.add_argument("--agent-json-schema", action="store_true", help="constrain the agent's update replies to JSON matching the reply schema (llama.cpp grammar); cached separately")
    ap.add_argument("--no-llm-agent", action="store_true", help="agent optimisers without an LLM (REINFORCE fallback only)")
    ap.add_argument("--pool", default="alpaca_eval", help="an all-replay pool (bundled name or path)")
    ap.add_argument("--task", default="chat", help="task of the pool's recordings; votable kinds (math/choice/code) use the vote sink, others the oracle select sink")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = ap.parse_args()
    if args.quick:
        args.evals, args.seeds, args.agent_seeds = 20, 2, 1
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console()
    space, ev = build(args)
    graphs = enumerate_graphs(space)
    t0 = time.perf_counter()
    scored = [(ev.evaluate_sync(g, "train").reward, g) for g in graphs]
    ex_wall = time.perf_counter() - t0
    opt_train, opt_graph = max(scored, key=lambda x: x[0])
    opt_held = ev.evaluate_sync(opt_graph, "heldout").reward
    best_held = max(ev.evaluate_sync(g, "heldout").reward for _, g in scored)
    console.print(
        f"space: {len(space.models)} models, budget {args.budget:g}, <= {args.max_nodes} nodes, "
        f"{len(graphs)} feasible graphs; exhaustive train optimum {opt_train:.3f} "
        f"({', '.join(n.model or '' for n in opt_graph.llm_nodes)}), its held-out {opt_held:.3f} "
        f"(best held-out of any graph {best_held:.3f}); enumeration {ex_wall:.1f}s", highlight=False,
    )

    agent = None
    runtime = None
    if not args.no_llm_agent:
        from moagraph.models.cache import CallCache
        from moagraph.models.runtime import PoolRuntime

        runtime = PoolRuntime(load_pool(resolve_pool("local")), cache=CallCache(args.out / "agent_cache.sqlite"))
        agent = RuntimeAgent(runtime, "gemma-270m", max_tokens=args.agent_max_tokens, json_schema=args.agent_json_schema)

    task_kind = getattr(ev.task, "kind", None) or "chat"
    names = ["random", "bayesopt", "reinforce", "textgrad", "agent-reinforce"]
    results: dict[str, list[tuple]] = {n: [] for n in names}

    async def go() -> None:
        jobs = [(n, s) for n in names for s in range(args.agent_seeds if n in ("agent-reinforce", "textgrad") else args.seeds)]
        with Progress(console=console) as prog:
            bar = prog.add_task("optimisers x seeds", total=len(jobs))
            for n, s in jobs:
                prog.update(bar, description=f"{n} seed {s}")
                res, curve, wall = await run_one(n, s, space, ev, args.evals, agent, args.out, task_kind)
                results[n].append((res, curve, wall))
                prog.advance(bar)
        if runtime is not None:
            await runtime.aclose()

    asyncio.run(go())

    objective = "oracle-select objective, an UPPER BOUND" if args.mode == "select" else "vote objective (majority over recorded samples)"
    agent_note = ", agent optimisers without an LLM (--no-llm-agent)" if args.no_llm_agent else (
        ", agent replies JSON-schema constrained" if args.agent_json_schema else "")
    t = Table(title=f"Graph search on {args.pool_name} replay ({objective}), {args.evals} evaluations each{agent_note}")
    for c in ("optimizer", "seeds", "held-out acc", "train gap to optimum (pts)", "evals to within 2 pts", "pilot+pretest / guided evals", "wall s", "agent parse failures"):
        t.add_column(c, justify="right")
    for n in names:
        rows = results[n]
        if not rows:
            continue
        held = [r.heldout_reward or 0.0 for r, _, _ in rows]
        gaps = [100 * (opt_train - max(c)) for _, c, _ in rows]
        reach = [next((i + 1 for i, v in enumerate(c) if v >= opt_train - 0.02), None) for _, c, _ in rows]
        hit = [x for x in reach if x is not None]
        reach_s = f"{statistics.median(hit):.0f} ({len(hit)}/{len(rows)} runs)" if hit else f"never (0/{len(rows)})"
        pf = [r.stats.get("parse_failures") for r, _, _ in rows if r.stats.get("parse_failures") is not None]
        ok = [r.stats.get("agent_replies_ok") for r, _, _ in rows if r.stats.get("agent_replies_ok") is not None]
        pf_s = f"{sum(pf)}/{sum(pf) + sum(ok)}" if pf and agent is not None else "-"
        sd = statistics.pstdev(held) if len(held) > 1 else 0.0
        # trial phases come from the study: pilot/pretest evaluations are not agent-guided
        prior = statistics.mean(r.phases.get("prior", 0) for r, _, _ in rows)
        guided = statistics.mean(r.phases.get("guided", 0) for r, _, _ in rows)
        t.add_row(
            n, str(len(rows)), f"{statistics.mean(held):.3f} ± {sd:.3f}", f"{statistics.mean(gaps):.2f}",
            reach_s, f"{prior:g} / {guided:g}", f"{statistics.mean(w for _, _, w in rows):.1f}", pf_s,
        )
    t.add_row("exhaustive", "-", f"{opt_held:.3f}", "0.00", str(len(graphs)), "-", f"{ex_wall:.1f}", "-")
    console.print(t)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for n in names:
        curves = [c for _, c, _ in results[n] if c]
        if not curves:
            continue
        L = min(len(c) for c in curves)
        mean = [statistics.mean(c[i] for c in curves) for i in range(L)]
        ax.plot(range(1, L + 1), mean, label=n)
    ax.axhline(opt_train, color="k", ls="--", label="exhaustive optimum")
    ax.axhline(opt_train - 0.02, color="gray", ls=":", label="optimum - 2 pts")
    ax.set_xlabel("graph evaluations")
    ax.set_ylabel("best training reward (oracle-select win prob.)" if args.mode == "select" else "best training reward (vote accuracy)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = args.out / ("bench_search.png" if args.pool_name == "alpaca_eval" else f"bench_search_{args.pool_name}.png")
    fig.savefig(png, dpi=130)
    console.print(f"plot: {png}; studies: {args.out / 'bench_studies.sqlite'} (moagraph report it)")


if __name__ == "__main__":
    main()
