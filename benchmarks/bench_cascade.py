"""Conditional graphs (cascades) found by every optimiser, on real recordings with ground truth.

For each bundled ground-truth pool (open models; MMLU-Pro: all 29 with list prices) and
paper budget b (``paper:b``, the official rule; MMLU-Pro also a dollar budget), the
search space holds flat conditional graphs: up to ``--max-nodes`` nodes in up to
``--stages`` stages, a later stage running only when the answers of the earlier ones
agree less than its threshold. Every graph is scored exactly from the recordings
(``ExactReplayEvaluator``: the executor's rule, no call), its cost is the *expected*
normalised FLOPs (or dollars) of the nodes that ran, and the budget applies to it.

Questions are split by id (train / validation / test, ``moagraph.pools.splits``); every
optimiser searches on train, picks on validation, and is reported once on test. Rows:
random, REINFORCE, Bayesian optimisation, Agent-REINFORCE with updates and without
(``updates=False``: pilot + mix choice only), each at the same number of evaluations
and ``--seeds`` seeds; the exhaustive optimum where the space can be enumerated. With
``--live-agent`` Agent-REINFORCE also runs with the local Qwen2.5-Coder-1.5B agent
(every call cached in ``--out/agent_cache.sqlite``), else its updates are the REINFORCE
fallback steps (labelled ``no LLM``).

Against the static choice, on the same test questions and grader, with paired bootstrap
95% CIs: the best single model that fits the budget, and the goals' "best single open
model chosen on train" (any cost) with the found graph's cost ratio. The frontier plot
(``--png-dir``) puts single models, flat votes (the top-k models by train accuracy for
k = 2..4) and the found conditional graphs on accuracy vs expected cost.

    .venv/bin/python benchmarks/bench_cascade.py                      # 3 pools x paper:4/8/12, 4 seeds, no LLM agent
    .venv/bin/python benchmarks/bench_cascade.py --pools zeroeval-gsm8k --budgets 8 --live-agent --evals 12
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from moagraph.search import get_optimizer, prepare_search, run_study
from moagraph.search._optimize import ALL_QUESTIONS
from moagraph.search.compare import compare_best_single, paired_bootstrap, single_graph
from moagraph.search.exhaustive import enumerate_graphs
from moagraph.search.space import SearchSpaceError, graph_text
from moagraph.search.study import Study

console = Console()

POOLS = {
    # pool: (task, split, budget kind); open models unless the kind is "dollars"
    "zeroeval-gsm8k": ("gsm8k", "zeroeval", "flops"),
    "zeroeval-math": ("math", "zeroeval", "flops"),
    "mmlu-pro": ("mmlu-pro", "test", "dollars"),
}
GOALS = {
    # pool: (what, met(row)): against the best single open model chosen on train, any cost
    "zeroeval-gsm8k": (
        "CI lower bound >= -1 pt at <= 40% of its FLOPs",
        lambda r: r.diff_best_ci[0] >= -0.01 and r.ratio_best <= 0.40,
    ),
    "zeroeval-math": (
        ">= +2 pts at <= 1.2x its FLOPs",
        lambda r: r.diff_best >= 0.02 and r.ratio_best <= 1.2,
    ),
    "mmlu-pro": (
        "CI lower bound >= -1 pt at <= 40% of its dollars",
        lambda r: r.diff_best_ci[0] >= -0.01 and r.ratio_best <= 0.40,
    ),
}
"""Issue #20's goals per pool (test split), checked per seed."""
DOLLAR_SHARE = 0.4
"""MMLU-Pro's dollar budget: this share of the priciest model's expected dollars per query."""


def open_models(pool: Any) -> list[str]:
    """Open-weight models of known size (the goals' "open models")."""
    out = []
    for m in pool.models:
        extra = m.extra or {}
        if extra.get("size_estimated") or extra.get("closed"):
            continue
        if str(extra.get("price_note", "")).startswith("open weights"):
            out.append(m.name)
    return out


@dataclass
class Row:
    pool: str
    budget: str
    optimizer: str
    seed: int
    evals: int
    test: float
    cost: float
    worst: float | None
    escalated: float | None
    diff_fit: float
    diff_fit_ci: tuple[float, float]
    single_fit: str
    diff_static: float
    diff_static_ci: tuple[float, float]
    static: str
    diff_best: float
    diff_best_ci: tuple[float, float]
    ratio_best: float
    graph: str
    wall_s: float


async def run_pool(pool_name: str, args: argparse.Namespace, agent: Any) -> list[Row]:
    task, split, kind = POOLS[pool_name]
    rows: list[Row] = []
    for b in args.budgets if kind == "flops" else args.budgets[:1]:
        models = None
        budget: Any = f"paper:{b}"
        budget_dollars = None
        label = f"paper:{b}"
        from moagraph.models.pool import load_pool
        from moagraph.pools import resolve_pool

        pool = load_pool(resolve_pool(pool_name))
        if kind == "flops":
            models = open_models(pool)
        else:  # every model; the dollar budget binds (open models cost $0)
            budget = 1e12
            label = f"${DOLLAR_SHARE:g}x"
        setup = prepare_search(
            pool_name,
            task,
            split=split,
            optimizer="random",
            budget=budget,
            budget_dollars=budget_dollars,
            flat=True,
            stages=args.stages,
            max_nodes=args.max_nodes,
            models=models,
            train_n=args.train_n,
            heldout_n=args.heldout_n,
            test_n=ALL_QUESTIONS,
            seed=0,
        )
        ev, space = setup.evaluator, setup.space
        if kind == "dollars":
            priciest = max(space.model_names, key=lambda m: space.node_dollars(m, 0))
            space.budget_dollars = DOLLAR_SHARE * space.node_dollars(priciest, 0)
            label = f"${space.budget_dollars:.5f} ({DOLLAR_SHARE:g}x {priciest})"
        best_open = await best_single_on_train(ev, space)
        console.print(
            f"[bold]{pool_name} {label}[/bold]: {len(space.model_names)} models, budget "
            f"{space.budget:.3g} FLOPs / ${space.budget_dollars}, best single on train: {best_open}",
            highlight=False,
        )
        variants = [
            ("random", {}),
            ("reinforce", {}),
            ("bayesopt", {}),
            ("agent-reinforce[no LLM]", {"agent": None}),
            ("agent-reinforce[no LLM, no updates]", {"agent": None, "updates": False}),
        ]
        if args.sampled_pretest:
            sampled = {"agent": None, "pretest": "sample"}
            variants.append(("agent-reinforce[no LLM, sampled pretest]", sampled))
            variants.append(
                (
                    "agent-reinforce[no LLM, sampled pretest, no updates]",
                    {**sampled, "updates": False},
                )
            )
        if agent is not None and (not args.live_budgets or b in args.live_budgets):
            variants.append(("agent-reinforce[live]", {"agent": agent}))
            variants.append(
                ("agent-reinforce[live, no updates]", {"agent": agent, "updates": False})
            )
            if args.sampled_pretest:
                live_sampled = {"agent": agent, "pretest": "sample"}
                variants.append(("agent-reinforce[live, sampled pretest]", live_sampled))
                variants.append(
                    (
                        "agent-reinforce[live, sampled pretest, no updates]",
                        {**live_sampled, "updates": False},
                    )
                )
        for name, opts in variants:
            if args.only_live and "live" not in name:
                continue
            for evals in args.evals:
                seeds = args.seeds if "live" not in name else args.live_seeds
                for seed in range(seeds):
                    rows.append(
                        await run_one(
                            pool_name, label, name, opts, seed, evals, setup, best_open, args
                        )
                    )
        try:
            graphs = enumerate_graphs(space, limit=args.exhaustive_limit)
        except SearchSpaceError as e:
            console.print(f"  exhaustive: skipped ({e})", highlight=False)
        else:
            rows.append(await exhaustive_row(pool_name, label, graphs, setup, best_open))
        if args.png_dir:
            await frontier_points(pool_name, label, setup, rows, best_open, args)
        await setup.aclose()
    return rows


async def static_choice(ev: Any, space: Any) -> tuple[Any, str]:
    """The static baseline: the best of every single model and every top-k vote (k models
    by train accuracy, k = 2..max nodes) that fits the budget, chosen on train + validation."""
    train = {}
    for m in space.model_names:
        train[m] = (await ev.evaluate(single_graph(space, m), "train")).reward
    ranked = sorted(space.model_names, key=lambda m: -train[m])
    cands = [(single_graph(space, m), m) for m in space.model_names]
    for k in range(2, space.max_nodes + 1):
        counts = [1 if m in ranked[:k] else 0 for m in space.model_names]
        cands.append((space.flat_graph(counts), f"top-{k} vote"))
    best, best_score = cands[0], -1.0
    for g, label in cands:
        if not space.fits(g):
            continue
        r = [await ev.evaluate(g, "train"), await ev.evaluate(g, "heldout")]
        score = float(np.mean([x for res in r for x in res.scores]))
        if score > best_score:
            best, best_score = (g, label), score
    return best


async def best_single_on_train(ev: Any, space: Any) -> str:
    """The goals' baseline: the best single model on train + validation, at any cost."""
    best, score = "", -1.0
    for m in space.model_names:
        g = single_graph(space, m)
        r = [await ev.evaluate(g, "train"), await ev.evaluate(g, "heldout")]
        s = float(np.mean([x for res in r for x in res.scores]))
        if s > score:
            best, score = m, s
    return best


async def against_static(ev: Any, space: Any, graph: Any) -> tuple[float, Any, str]:
    """(graph - static choice) on test with its paired CI, and the static choice's label."""
    g_static, label = await static_choice(ev, space)
    gt = await ev.evaluate(graph, "test")
    st = await ev.evaluate(g_static, "test")
    d, lo, hi = paired_bootstrap(gt.scores, st.scores, seed=0)
    return d, (lo, hi), label


async def test_against(ev: Any, space: Any, graph: Any, model: str) -> tuple[float, Any, float]:
    """(graph - single) on test with its paired CI, and the cost ratio (expected FLOPs, or
    dollars on a dollar budget)."""
    gt = await ev.evaluate(graph, "test")
    st = await ev.evaluate(single_graph(space, model), "test")
    d, lo, hi = paired_bootstrap(gt.scores, st.scores, seed=0)
    if space.budget_dollars is not None:
        ratio = gt.dollars / st.dollars if st.dollars > 0 else float("inf")
    else:
        ratio = gt.cost / st.cost if st.cost > 0 else float("inf")
    return d, (lo, hi), ratio


async def run_one(
    pool_name: str,
    label: str,
    name: str,
    opts: dict[str, Any],
    seed: int,
    evals: int,
    setup: Any,
    best_open: str,
    args: argparse.Namespace,
) -> Row:
    ev, space = setup.evaluator, setup.space
    base = name.split("[")[0]
    kw = dict(opts)
    if base == "agent-reinforce":
        kw["task_kind"] = getattr(setup.task, "kind", None)
        probe = get_optimizer(base, space, seed=seed, **kw)
        kw["guided_iterations"] = max(1, evals - int(probe.planned_prior_evaluations))
    opt = get_optimizer(base, space, seed=seed, **kw)
    study = Study.open(None, f"{pool_name}-{label}-{name}-s{seed}-e{evals}", {"seed": seed})
    t0 = time.perf_counter()
    res = await run_study(study, opt, ev, evals)
    wall = time.perf_counter() - t0
    await opt.aclose()
    row = await _row(setup, pool_name, label, name, seed, res.n_trials, res.best_graph, best_open)
    row.wall_s = wall
    console.print(
        f"  {name:38s} s{seed} e{evals}: test {row.test:.3f} cost {row.cost:6.2f} "
        f"vs fit-single {100 * row.diff_fit:+.1f} [{100 * row.diff_fit_ci[0]:+.1f}, "
        f"{100 * row.diff_fit_ci[1]:+.1f}] vs best {100 * row.diff_best:+.1f} at {row.ratio_best:.2f}x ({wall:.1f}s)",
        highlight=False,
    )
    return row


async def _row(
    setup: Any,
    pool_name: str,
    label: str,
    name: str,
    seed: int,
    evals: int,
    graph: Any,
    best_open: str,
) -> Row:
    """One table row: the picked graph on test against the three static choices."""
    ev, space = setup.evaluator, setup.space
    t = await ev.evaluate(graph, "test")
    cmp = await compare_best_single(ev, space, graph, seed=seed)
    assert cmp is not None
    d, ci, ratio = await test_against(ev, space, graph, best_open)
    ds, dsci, static = await against_static(ev, space, graph)
    return Row(
        pool_name,
        label,
        name,
        seed,
        evals,
        cmp.graph_test,
        t.cost,
        t.worst_cost,
        t.escalated,
        cmp.diff,
        cmp.diff_ci,
        cmp.single.model,
        ds,
        dsci,
        static,
        d,
        ci,
        ratio,
        graph_text(graph).replace("\n", "; "),
        0.0,
    )


async def exhaustive_row(
    pool_name: str, label: str, graphs: list[Any], setup: Any, best_open: str
) -> Row:
    """The optimum on train among graphs whose expected train cost fits, then reported on
    test like the others (picked on train + validation among the top 3)."""
    ev = setup.evaluator
    t0 = time.perf_counter()
    scored = []
    for g in graphs:
        r = await ev.evaluate(g, "train")
        if not r.over_budget:
            scored.append((r.reward, -r.cost, g))
    scored.sort(key=lambda x: (x[0], x[1]), reverse=True)
    top = scored[:3]
    picks = []
    for tr, _, g in top:
        h = await ev.evaluate(g, "heldout")
        picks.append((h.reward if not h.over_budget else -1.0, tr, g))
    g = max(picks, key=lambda x: (x[0], x[1]))[2]
    row = await _row(
        setup, pool_name, label, f"exhaustive ({len(graphs)} graphs)", 0, len(graphs), g, best_open
    )
    row.wall_s = time.perf_counter() - t0
    d, ratio = row.diff_best, row.ratio_best
    console.print(
        f"  exhaustive ({len(graphs)}): test {row.test:.3f} cost {row.cost:.2f} vs best "
        f"{100 * d:+.1f} at {ratio:.2f}x",
        highlight=False,
    )
    return row


async def frontier_points(
    pool_name: str,
    label: str,
    setup: Any,
    rows: list[Row],
    best_open: str,
    args: argparse.Namespace,
) -> None:
    """Singles, top-k flat votes (k by train accuracy) and this budget's found graphs, on
    test: accuracy vs expected cost; accumulated per pool into one PNG."""
    ev, space = setup.evaluator, setup.space
    pts = FRONTIER.setdefault(pool_name, {"single": {}, "vote": {}, "found": [], "dollars": False})
    pts["dollars"] = space.budget_dollars is not None
    key = "dollars" if pts["dollars"] else "cost"
    train_acc = {}
    for m in space.model_names:
        g = single_graph(space, m)
        train_acc[m] = (await ev.evaluate(g, "train")).reward
        t = await ev.evaluate(g, "test")
        pts["single"][m] = (getattr(t, key), t.reward)
    ranked = sorted(space.model_names, key=lambda m: -train_acc[m])
    for k in (2, 3, 4):
        if k > len(ranked) or k > space.max_nodes:
            continue
        counts = [1 if m in ranked[:k] else 0 for m in space.model_names]
        t = await ev.evaluate(space.flat_graph(counts), "test")
        pts["vote"][f"top-{k} vote"] = (getattr(t, key), t.reward)
    for r in rows:
        if r.pool == pool_name and r.budget == label:
            t_cost = r.cost if key == "cost" else None
            pts["found"].append((r.optimizer, label, t_cost, r.test, r.graph))


FRONTIER: dict[str, dict[str, Any]] = {}


def draw_frontier(pool_name: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = FRONTIER[pool_name]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    xs = [c for c, _ in pts["single"].values()]
    ys = [a for _, a in pts["single"].values()]
    ax.scatter(xs, ys, marker="o", c="0.55", label="single model", zorder=2)
    for m, (c, a) in pts["single"].items():
        ax.annotate(
            m[:18], (c, a), fontsize=6, color="0.4", xytext=(3, -3), textcoords="offset points"
        )
    vx = [c for c, _ in pts["vote"].values()]
    vy = [a for _, a in pts["vote"].values()]
    ax.scatter(vx, vy, marker="s", c="tab:orange", label="flat vote (top-k on train)", zorder=3)
    found = [(c, a) for _, _, c, a, _ in pts["found"] if c is not None]
    if found:
        ax.scatter(
            [c for c, _ in found],
            [a for _, a in found],
            marker="*",
            s=80,
            c="tab:blue",
            alpha=0.6,
            label="found conditional graphs",
            zorder=4,
        )
        front = _upper_front(found)
        ax.plot([c for c, _ in front], [a for _, a in front], c="tab:blue", lw=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("expected cost per question (normalised FLOPs, log)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{pool_name}: accuracy vs expected compute (test questions)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / f"cascade_frontier_{pool_name}.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _upper_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    best = -1.0
    out = []
    for c, a in sorted(points):
        if a > best:
            out.append((c, a))
            best = a
    return out


def summary(rows: list[Row]) -> Table:
    t = Table(
        title="Conditional-graph search: test accuracy and expected cost (mean ± sd over seeds)"
    )
    for col in (
        "pool",
        "budget",
        "optimizer",
        "evals",
        "seeds",
        "test acc",
        "exp. cost",
        "escalated",
        "vs best single that fits (pts)",
        "seeds CI>0",
        "vs static choice that fits (pts)",
        "seeds CI>0 ",
        "vs best single on train (pts)",
        "cost ratio",
        "goal met",
    ):
        t.add_column(col)
    groups: dict[tuple[str, str, str, int], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.pool, r.budget, r.optimizer, r.evals), []).append(r)
    for (pool, budget, opt, evals), rs in groups.items():
        t.add_row(
            pool,
            budget,
            opt,
            str(evals),
            str(len(rs)),
            msd([r.test for r in rs]),
            msd([r.cost for r in rs], fmt=".2f"),
            msd([r.escalated or 0.0 for r in rs], fmt=".2f"),
            msd([r.diff_fit for r in rs], 100, ".1f"),
            f"{sum(r.diff_fit_ci[0] > 0 for r in rs)}/{len(rs)}",
            msd([r.diff_static for r in rs], 100, ".1f") + f" ({rs[0].static})",
            f"{sum(r.diff_static_ci[0] > 0 for r in rs)}/{len(rs)}",
            msd([r.diff_best for r in rs], 100, ".1f")
            + f" [{100 * min(r.diff_best_ci[0] for r in rs):+.1f}, {100 * max(r.diff_best_ci[1] for r in rs):+.1f}]",
            msd([r.ratio_best for r in rs], fmt=".2f"),
            f"{sum(GOALS[r.pool][1](r) for r in rs)}/{len(rs)}",
        )
    return t


def msd(xs: list[float], scale: float = 1.0, fmt: str = ".3f") -> str:
    if not xs:
        return "-"
    m = statistics.mean(xs) * scale
    sd = statistics.stdev(xs) * scale if len(xs) > 1 else 0.0
    return f"{m:{fmt}} ± {sd:{fmt}}" if len(xs) > 1 else f"{m:{fmt}}"


def markdown(rows: list[Row]) -> str:
    """The summary as a Markdown table (the README's)."""
    t = summary(rows)
    head = [c.header for c in t.columns]
    lines = ["| " + " | ".join(str(h) for h in head) + " |", "|" + "---|" * len(head)]
    cols = [list(c.cells) for c in t.columns]
    for i in range(len(cols[0])):
        lines.append("| " + " | ".join(str(c[i]) for c in cols) + " |")
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pools", default=",".join(POOLS), help="Comma-separated bundled pools.")
    ap.add_argument("--budgets", default="4,8,12", help="Paper budgets b (paper:b).")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--evals", default="30", help="Evaluations per run, comma-separated.")
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--max-nodes", type=int, default=3)
    ap.add_argument("--train-n", type=int, default=200)
    ap.add_argument("--heldout-n", type=int, default=100)
    ap.add_argument("--exhaustive-limit", type=int, default=60_000)
    ap.add_argument("--live-agent", action="store_true", help="Also run the local Qwen agent.")
    ap.add_argument("--live-seeds", type=int, default=4)
    ap.add_argument("--only-live", action="store_true", help="Only the live-agent rows.")
    ap.add_argument(
        "--sampled-pretest",
        action="store_true",
        help="Also Agent-REINFORCE with the official sampled pretest graph (pretest='sample').",
    )
    ap.add_argument(
        "--live-budgets", default="", help="Budgets b with the live agent (default: all)."
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    ap.add_argument("--png-dir", type=Path, default=Path("docs/img"))
    ap.add_argument(
        "--from-json",
        default="",
        help="Comma-separated bench_cascade.json files: print their rows' table (no search).",
    )
    a = ap.parse_args()
    a.pools = [p.strip() for p in a.pools.split(",") if p.strip()]
    a.budgets = [int(b) for b in a.budgets.split(",") if b.strip()]
    a.evals = [int(e) for e in a.evals.split(",") if e.strip()]
    a.live_budgets = [int(b) for b in a.live_budgets.split(",") if b.strip()]
    return a


def load_rows(paths: str) -> list[Row]:
    rows = []
    for p in paths.split(","):
        for d in json.loads(Path(p.strip()).read_text(encoding="utf-8")):
            d["diff_fit_ci"] = tuple(d["diff_fit_ci"])
            d["diff_best_ci"] = tuple(d["diff_best_ci"])
            d["diff_static_ci"] = tuple(d["diff_static_ci"])
            rows.append(Row(**d))
    return rows


async def main() -> None:
    args = parse()
    if args.from_json:
        rows = load_rows(args.from_json)
        console.print(summary(rows))
        print(markdown(rows))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    agent = None
    runtimes = []
    if args.live_agent:
        from moagraph.models.cache import CallCache
        from moagraph.models.pool import load_pool
        from moagraph.models.runtime import PoolRuntime
        from moagraph.search.agent import RuntimeAgent

        rt = PoolRuntime(load_pool("local"), cache=CallCache(args.out / "agent_cache.sqlite"))
        runtimes.append(rt)
        agent = RuntimeAgent(rt, "qwen-coder-1.5b")
    rows: list[Row] = []
    try:
        for p in args.pools:
            rows += await run_pool(p, args, agent)
    finally:
        for rt in runtimes:
            await rt.aclose()
    console.print(summary(rows))
    md = (
        markdown(rows)
        + "\n\nGoals (vs the best single open model chosen on train, any cost): "
        + "; ".join(f"{p}: {GOALS[p][0]}" for p in args.pools)
    )
    (args.out / "bench_cascade.md").write_text(md + "\n", encoding="utf-8")
    (args.out / "bench_cascade.json").write_text(
        json.dumps([r.__dict__ for r in rows], indent=1, default=str), encoding="utf-8"
    )
    if args.png_dir:
        args.png_dir.mkdir(parents=True, exist_ok=True)
        for p in FRONTIER:
            if not FRONTIER[p]["dollars"]:
                console.print(f"wrote {draw_frontier(p, args.png_dir)}", highlight=False)
    console.print(f"wrote {args.out / 'bench_cascade.md'}", highlight=False)


if __name__ == "__main__":
    asyncio.run(main())
