"""Graph-search optimisers at equal evaluation counts vs the exhaustive optimum, on real replay pools.

Pools: the bundled ground-truth replay pools ``zeroeval-math`` (MATH level 5,
ZeroEval greedy outputs, ZeroEval's 0/1 grade) and ``mmlu-pro`` (the option
letter each model chose, 0/1 correctness), restricted as ``moagraph search``
does by default to open models of known size <= 10B. Budgets: the paper's
rule ``paper:b`` (b = 4/8/12 = the paper's 18/42/80). Graphs are flat
(first-layer assistants into a free majority-vote sink): the pools are
replay-only, so no LLM node could read other answers, and every graph is
scored exactly from the recordings (no LLM call), which makes the exhaustive
optimum of the space known.

Per seed the train and validation questions are drawn as ``moagraph search``
draws them (``split_ids`` on the question ids, then a seeded sample of each
part); test = the whole test part, the same for every seed. For each seed:
the exhaustive optimum on that seed's train questions, every optimiser with
the same number of graph evaluations, and the found graph (picked on
validation) against the best single model that fits the budget (picked on
train + validation) on test, with a paired bootstrap 95% CI
(``moagraph.search.compare``).

Optimisers: ``random``, ``bayesopt``, ``reinforce``, ``exhaustive`` (the
enumeration order cut at the evaluation count), ``maao`` (moagraph's MaAO
baseline, run without an agent: its surrogate picks every mix), and
Agent-REINFORCE once per ``--pilots`` mode (``size``: the default pilot,
``coverage``: every model's own train accuracy; ``coverage/all``: and every
feasible mix offered, not only budget-filling ones). Agent-REINFORCE and TextGrad
need an LLM agent: the live local Qwen2.5-Coder-1.5B-Instruct (llama.cpp on
the CPU), every call cached in ``--out/agent_cache.sqlite``, so a rerun is
free; ``--agent-seeds`` seeds run, only on ``--agent-settings`` (pool:b) and
while ``--agent-minutes`` of wall time remain (the table says how many ran).
With ``--no-llm-agent`` Agent-REINFORCE runs instead with no agent (rows
``agent-reinforce[no LLM, pilot=...]``: the heuristic mix choice from the pilot,
then REINFORCE steps with the moving-average baseline), which isolates the
pilot and pretest; TextGrad, which is only an agent loop, is then left out.

    .venv/bin/python benchmarks/bench_search.py --no-llm-agent                    # replay only: 2 pools x paper:4/8/12
    .venv/bin/python benchmarks/bench_search.py --budgets 8 --agent-settings zeroeval-math:8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from moagraph.cli.search_cmd import DEFAULT_MAX_PARAMS_B, POOL_DEFAULTS
from moagraph.models.pool import load_pool
from moagraph.pools import resolve_pool
from moagraph.pools.splits import split_ids
from moagraph.search import Study, get_optimizer, run_study
from moagraph.search.agent import RuntimeAgent
from moagraph.search.compare import compare_best_single
from moagraph.search.evaluator import ExactReplayEvaluator, pool_replay_records, recorded_copies
from moagraph.search.exhaustive import enumerate_graphs
from moagraph.search.space import SearchSpace
from moagraph.tasks.registry import get_task

AGENT_OPTS = ("agent-reinforce", "textgrad")
"""Optimisers that need an LLM agent (MaAO runs without one here)."""
console = Console()


class Variant:
    """One table row kind: an optimiser with its options, and whether it calls the live agent."""

    def __init__(self, opt: str, live: bool = False, **options: Any) -> None:
        self.opt, self.live, self.options = opt, live, options
        pilot = options.get("pilot")
        extra = ", mixes=all" if options.get("mixes") == "all" else ""
        if opt == "agent-reinforce" and not live:
            self.label = f"agent-reinforce[no LLM, pilot={pilot}{extra}]"
        elif pilot is not None:
            self.label = f"{opt}[pilot={pilot}{extra}]"
        elif opt == "maao":
            self.label = "maao[no agent]"
        else:
            self.label = opt


class Setting:
    """One pool at one budget: space, records, fixed test questions."""

    def __init__(self, pool_name: str, b: int, args: argparse.Namespace) -> None:
        task_name, split = POOL_DEFAULTS[pool_name]
        self.pool = load_pool(resolve_pool(pool_name))
        self.task = get_task(task_name)
        self.pool_name, self.b = pool_name, b
        self.models = [
            m.name
            for m in self.pool.models
            if m.params_b <= args.max_params_b and not (m.extra or {}).get("size_estimated")
        ]
        recs = pool_replay_records(self.pool, self.models)
        have: dict[str, set[str]] = {}
        for r in recs:
            have.setdefault(str(r["model"]), set()).add(str(r["query_id"]))
        common = set.intersection(*(have.get(m, set()) for m in self.models))
        exs = [e for e in self.task.load(split) if e.id in common]
        self.by_id = {e.id: e for e in exs}
        self.parts = split_ids([e.id for e in exs], seed=0)
        self.test = [self.by_id[i] for i in self.parts["test"]][: args.test_n]
        self.records = recs
        qids = [e.id for e in exs]
        copies = recorded_copies(recs, self.models, qids)
        kw: dict[str, Any] = dict(
            models=self.models,
            max_nodes=b if str(args.max_nodes) == "b" else int(args.max_nodes),
            flat=True,
            sink_mode="vote",
            max_copies=copies,
        )
        probe = SearchSpace.from_pool(self.pool, self.task, budget=None, **kw)
        self.budget = probe.paper_budget(b)
        self.space = SearchSpace.from_pool(self.pool, self.task, budget=self.budget, **kw)
        self.graphs = enumerate_graphs(self.space)
        self._optimum: dict[tuple[int, int, int], tuple[float, Any, float]] = {}

    def optimum(self, seed: int, train_n: int, heldout_n: int) -> tuple[float, Any, float]:
        """The exhaustive optimum on this seed's train questions: (train, graph, test);
        computed once per seed (every optimiser row of the seed compares with it)."""
        key = (seed, train_n, heldout_n)
        if key not in self._optimum:
            ev = self.evaluator(seed, train_n, heldout_n)
            scored = [(ev.evaluate_sync(g, "train").reward, g) for g in self.graphs]
            tr, g = max(scored, key=lambda x: x[0])
            self._optimum[key] = (tr, g, ev.evaluate_sync(g, "test").reward)
        return self._optimum[key]

    def evaluator(self, seed: int, train_n: int, heldout_n: int) -> ExactReplayEvaluator:
        def draw(part: str, n: int, salt: int) -> list[Any]:
            ids = list(self.parts[part])
            random.Random(seed * 1000 + salt).shuffle(ids)
            return [self.by_id[i] for i in ids[:n]]

        return ExactReplayEvaluator.from_records(
            self.records,
            self.space,
            draw("train", train_n, 1),
            draw("validation", heldout_n, 2),
            mode="vote",
            task=self.task,
            test=self.test,
        )


def agent_usage(stats: dict[str, Any]) -> tuple[int, int]:
    """(replies used as written, prompts asked): a reply is used as written when it
    parsed on the first attempt and did not try to change the fixed model mix; the
    mix-choice reply counts when it parsed."""
    ok = int(stats.get("agent_replies_ok", 0))
    pf = int(stats.get("parse_failures", 0))
    retried_ok = max(0, int(stats.get("retries", 0)) - pf)
    asked_updates = ok + pf
    mix_asked = (
        1 if int(stats.get("agent_calls", 0)) > int(stats.get("retries", 0)) + asked_updates else 0
    )
    used = (
        ok
        - retried_ok
        - int(stats.get("mix_changes_ignored", 0))
        + int(stats.get("mix_choice_parsed", 0))
    )
    return max(0, used), asked_updates + mix_asked


async def run_seed(
    st: Setting,
    var: Variant,
    seed: int,
    evals: int,
    args: argparse.Namespace,
    agent: Any,
    studies: Path,
) -> dict[str, Any]:
    name = var.opt
    ev = st.evaluator(seed, args.train_n, args.heldout_n)
    opt_train, opt_graph, opt_test = st.optimum(seed, args.train_n, args.heldout_n)
    kw: dict[str, Any] = dict(var.options)
    if name in AGENT_OPTS or name == "maao":
        kw.update(agent=agent if var.live else None, task_kind=getattr(st.task, "kind", None))
    opt = get_optimizer(name, st.space, seed=seed, **kw)
    if name == "agent-reinforce":
        guided = max(1, evals - int(opt.planned_prior_evaluations))
        opt = get_optimizer(name, st.space, seed=seed, guided_iterations=guided, **kw)
        evals = guided + int(opt.planned_prior_evaluations)
    slug = var.label.replace("[", "-").replace("]", "").replace(", ", "-").replace(" ", "")
    sname = f"{st.pool_name}-paper{st.b}-{slug}-s{seed}-e{evals}-t{args.train_n}"
    study = Study.open(
        studies, sname, {"optimizer": name, "seed": seed, "pool": st.pool_name, "b": st.b}
    )
    curve: list[float] = []
    t0 = time.perf_counter()
    res = await run_study(
        study, opt, ev, evals, on_trial=lambda d, t, row, best: curve.append(best)
    )
    wall = time.perf_counter() - t0
    study.close()
    await opt.aclose()
    cmp = await compare_best_single(ev, st.space, res.best_graph, seed=seed)
    assert cmp is not None
    within = next((i + 1 for i, v in enumerate(curve) if v >= opt_train - 0.02 - 1e-12), None)
    used, asked = agent_usage(res.stats) if var.live else (0, 0)
    return {
        "optimizer": var.label,
        "live_agent": var.live,
        "seed": seed,
        "evals": len(curve),
        "prior": res.phases.get("prior", 0),
        "guided": res.phases.get("guided", 0),
        "gap_pts": 100 * (opt_train - max(curve)),
        "within_at": within,
        "test": cmp.graph_test,
        "graph": st.space.describe_mix(st.space.mix_of(res.best_graph)),
        "opt_train": opt_train,
        "opt_test": opt_test,
        "opt_graph": st.space.describe_mix(st.space.mix_of(opt_graph)),
        "single": cmp.single.model,
        "single_test": cmp.single_test,
        "diff": cmp.diff,
        "diff_ci": cmp.diff_ci,
        "used": used,
        "asked": asked,
        "stats": {k: v for k, v in res.stats.items() if isinstance(v, (int, float))},
        "wall_s": wall,
    }


def msd(xs: list[float], scale: float = 1.0, fmt: str = ".3f") -> str:
    if not xs:
        return "-"
    m = statistics.mean(xs) * scale
    sd = statistics.stdev(xs) * scale if len(xs) > 1 else 0.0
    return f"{m:{fmt}} ± {sd:{fmt}}"


def table(st: Setting, rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """A markdown table (what the README shows)."""
    head = (
        f"**{st.pool_name}, paper:{st.b}** = {st.budget:.1f} normalised FLOPs, {len(st.models)} open "
        f"models <= {args.max_params_b:g}B, at most {st.space.max_nodes} nodes, "
        f"{len(st.graphs)} flat graphs, train {args.train_n} / "
        f"validation {args.heldout_n} questions per seed, test {len(st.test)} questions\n\n"
    )
    cols = (
        "optimiser",
        "evals (pilot+pretest / guided)",
        "seeds",
        "test acc",
        "gap to exhaustive optimum (train, pts)",
        "runs within 2 pts (median evals)",
        "graph - best single, test (pts)",
        "graph better / worse (paired 95% CI)",
        "agent replies used as written",
    )
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    keys = sorted(dict.fromkeys((r["evals"], r["optimizer"]) for r in rows))
    for e, n in keys:
        rs = [r for r in rows if r["optimizer"] == n and r["evals"] == e]
        hit = [r["within_at"] for r in rs if r["within_at"] is not None]
        used, asked = sum(r["used"] for r in rs), sum(r["asked"] for r in rs)
        cells = (
            n,
            f"{e} ({statistics.mean(r['prior'] for r in rs):g} / {statistics.mean(r['guided'] for r in rs):g})",
            str(len(rs)),
            msd([r["test"] for r in rs]),
            msd([r["gap_pts"] for r in rs], fmt=".1f"),
            f"{len(hit)}/{len(rs)}" + (f" ({statistics.median(hit):g})" if hit else ""),
            msd([r["diff"] for r in rs], 100, ".1f"),
            f"{sum(r['diff_ci'][0] > 0 for r in rs)} / {sum(r['diff_ci'][1] < 0 for r in rs)} of {len(rs)}",
            f"{used}/{asked} ({100 * used / asked:.0f}%)" if asked else "-",
        )
        lines.append("| " + " | ".join(cells) + " |")
    first: dict[int, dict[str, Any]] = {}
    for r in rows:
        first.setdefault(r["seed"], r)
    ex = list(first.values())
    lines.append(
        f"| exhaustive optimum (train) | {len(st.graphs)} | {len(ex)} | {msd([r['opt_test'] for r in ex])} "
        f"| 0 | - | - | - | - |"
    )
    singles = sorted({r["single"] for r in rows})
    lines.append(
        f"\nBest single model that fits the budget (picked on train+validation per seed): "
        f"{', '.join(singles)}; its test accuracy {msd([r['single_test'] for r in ex])}."
    )
    return head + "\n".join(lines)


SUMMARY_ROWS: tuple[tuple[str, int, str], ...] = (
    ("agent-reinforce[pilot=coverage, mixes=all]", 8,
     "**Agent-REINFORCE**, live Qwen agent, `auto` (= coverage/all here)"),
    ("textgrad", 8, "TextGrad, live Qwen agent, random fixed mix"),
    ("agent-reinforce[no LLM, pilot=coverage, mixes=all]", 30,
     "Agent-REINFORCE, no LLM, coverage/all"),
    ("agent-reinforce[no LLM, pilot=size]", 30,
     "Agent-REINFORCE, no LLM, the paper's size/maximal"),
    ("maao[no agent]", 8, "MaAO (moagraph's reading), no agent"),
    ("maao[no agent]", 30, "MaAO (moagraph's reading), no agent"),
    ("bayesopt", 8, "Bayesian optimisation (Optuna TPE)"),
    ("bayesopt", 30, "Bayesian optimisation (Optuna TPE)"),
    ("random", 8, "random"),
    ("random", 30, "random"),
    ("reinforce", 8, "REINFORCE (GPTSwarm style)"),
    ("reinforce", 30, "REINFORCE (GPTSwarm style)"),
)  # fmt: skip
"""The README's matrix: (row label, evaluations, name shown); every row is in the full tables."""


def summary(
    settings: dict[str, Setting], all_rows: dict[str, list[dict[str, Any]]], pools: list[str]
) -> str:
    """The README's matrix: optimiser x setting, mean test accuracy over the seeds (graph -
    best single in points; seeds whose paired 95% CI is above / below 0), then the live
    agents' replies used as written."""
    keys = sorted(
        settings,
        key=lambda k: (
            pools.index(settings[k].pool_name) if settings[k].pool_name in pools else len(pools),
            settings[k].pool_name,
            settings[k].b,
        ),
    )
    cols = [f"{settings[k].pool_name} paper:{settings[k].b}" for k in keys]
    lines = ["| optimiser | evals | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]

    def cell(rs: list[dict[str, Any]]) -> str:
        if not rs:
            return "-"
        better = sum(r["diff_ci"][0] > 0 for r in rs)
        worse = sum(r["diff_ci"][1] < 0 for r in rs)
        diff = statistics.mean(r["diff"] for r in rs) * 100
        seeds = "" if len(rs) == 4 else f" [{len(rs)} seeds]"
        return (
            f"{statistics.mean(r['test'] for r in rs):.3f} ({diff:+.1f}; {better}/{worse}){seeds}"
        )

    for label, e, name in SUMMARY_ROWS:
        cells = [
            cell([r for r in all_rows.get(k, []) if r["optimizer"] == label and r["evals"] == e])
            for k in keys
        ]
        lines.append(f"| {name} | {e} | " + " | ".join(cells) + " |")
    for name, field in (
        ("exhaustive optimum of the space (picked on train)", "opt_test"),
        ("best single model that fits the budget", "single_test"),
    ):
        cells = []
        for k in keys:
            first = {r["seed"]: r for r in all_rows.get(k, [])}
            cells.append(
                f"{statistics.mean(r[field] for r in first.values()):.3f}" if first else "-"
            )
        lines.append(f"| {name} | - | " + " | ".join(cells) + " |")
    live = {label for label, _, name in SUMMARY_ROWS if "live" in name}
    shown = [r for k in keys for r in all_rows.get(k, []) if r["optimizer"] in live]
    used, asked = sum(r["used"] for r in shown), sum(r["asked"] for r in shown)
    lines.append(f"\nLive agent replies used as written: {used}/{asked}.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pools", default="zeroeval-math,mmlu-pro")
    ap.add_argument(
        "--budgets", default="4,8,12", help="paper b values (4, 8, 12 = the paper's 18, 42, 80)"
    )
    ap.add_argument(
        "--pilots",
        default="size,coverage,coverage/all",
        help="Agent-REINFORCE pilot modes, one row each; '/all' adds mixes='all' (every "
        "feasible mix offered, not only budget-filling ones); without it mixes='maximal' "
        "(the paper's). 'coverage/all' is what the default 'auto' picks on these vote-sink pools",
    )
    ap.add_argument(
        "--agent-settings",
        default="zeroeval-math:8",
        help="pool:b settings where the live agent runs (comma-separated; 'all' for every one)",
    )
    ap.add_argument(
        "--evals",
        default="8,30",
        help="graph evaluations per run (all phases), comma-separated: every optimiser runs at each "
        "count; agent-reinforce at the first only (pilot + pretest, the rest guided)",
    )
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--agent-seeds", type=int, default=4)
    ap.add_argument(
        "--agent-minutes",
        type=float,
        default=35.0,
        help="wall time for the live agent, shared equally by the --agent-settings and the live "
        "variants; a seed starts only while its share lasts",
    )
    ap.add_argument("--max-params-b", type=float, default=DEFAULT_MAX_PARAMS_B)
    ap.add_argument(
        "--max-nodes",
        default="b",
        help="node cap; 'b' (default): b of paper:b, the node count of the budget's complete DAG "
        "(a fixed cap of 4 makes paper:4/8/12 the same space on these pools: every 4-model mix "
        "fits paper:4)",
    )
    ap.add_argument(
        "--train-n", type=int, default=80, help="training questions per seed (replay: free)"
    )
    ap.add_argument("--heldout-n", type=int, default=40, help="validation questions per seed")
    ap.add_argument("--test-n", type=int, default=1000, help="cap on the test part used")
    ap.add_argument(
        "--optimizers",
        default="random,bayesopt,reinforce,exhaustive,maao,agent-reinforce,textgrad",
    )
    ap.add_argument(
        "--no-llm-agent",
        action="store_true",
        help="no live agent: agent-reinforce without an LLM, textgrad left out",
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    ap.add_argument(
        "--studies",
        type=Path,
        default=None,
        help="study file, rebuilt each run (default --out/bench_search_studies.sqlite)",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows already in --out/bench_search.json that this run does not redo "
        "(e.g. add live agent rows to a replay-only run)",
    )
    ap.add_argument(
        "--textgrad-seeds",
        type=int,
        default=1,
        help="seeds of the live textgrad row (every guided step is an agent call)",
    )
    ap.add_argument(
        "--agent-threads", type=int, default=0, help="CPU threads of the live agent (0 = all cores)"
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.optimizers.split(",")
    pilots = args.pilots.split(",")
    variants: list[Variant] = []
    for n in names:
        if n == "agent-reinforce":
            for p in pilots:  # "coverage/all": pilot=coverage, mixes="all"
                pilot, _, mixes = p.partition("/")
                # explicit mixes: the optimiser's default ("auto") would follow the sink
                opts: dict[str, Any] = {"pilot": pilot, "mixes": mixes or "maximal"}
                variants.append(Variant(n, live=not args.no_llm_agent, **opts))
        elif n == "textgrad":
            if not args.no_llm_agent:
                variants.append(Variant(n, live=True))
        else:
            variants.append(Variant(n))
    eval_counts = [int(x) for x in str(args.evals).split(",")]
    runtime = agent = None
    if any(v.live for v in variants):
        from moagraph.models.cache import CallCache
        from moagraph.models.runtime import PoolRuntime

        local = load_pool(resolve_pool("local"))
        if args.agent_threads:  # CPU threads of the agent (not part of the call cache key)
            local = local.model_copy(
                update={
                    "models": [
                        m.model_copy(update={"n_threads": args.agent_threads}) for m in local.models
                    ]
                }
            )
        runtime = PoolRuntime(local, cache=CallCache(args.out / "agent_cache.sqlite"))
        agent = RuntimeAgent(runtime, "qwen-coder-1.5b")
    settings = [
        Setting(p, int(b), args) for b in args.budgets.split(",") for p in args.pools.split(",")
    ]
    all_rows: dict[str, list[dict[str, Any]]] = {}

    live_at = None if args.agent_settings == "all" else set(args.agent_settings.split(","))
    live_settings = [
        st for st in settings if live_at is None or f"{st.pool_name}:{st.b}" in live_at
    ]
    share = 60 * args.agent_minutes / max(len(live_settings), 1)
    studies = args.studies or args.out / "bench_search_studies.sqlite"
    for f in (studies, Path(f"{studies}-wal"), Path(f"{studies}-shm")):
        f.unlink(missing_ok=True)  # rebuilt each run (agent replies come back from the call cache)

    async def go() -> None:
        for st in settings:
            rows = all_rows.setdefault(f"{st.pool_name}-paper{st.b}", [])
            agent_t0: dict[str, float] = {}  # per live variant: its share of the setting's time
            n_live = max(1, sum(v.live for v in variants))
            jobs = [
                (v, e, s)
                for v in variants
                if not v.live or st in live_settings
                for e in (eval_counts[:1] if v.live else eval_counts)
                for s in range(
                    (args.textgrad_seeds if v.opt == "textgrad" else args.agent_seeds)
                    if v.live
                    else args.seeds
                )
            ]
            for v, e, s in jobs:
                if v.live:
                    t0 = agent_t0.setdefault(v.label, time.perf_counter())
                    if time.perf_counter() - t0 > share / n_live:
                        console.print(
                            f"{v.label} seed {s} on {st.pool_name}: skipped (its share of --agent-minutes is spent)"
                        )
                        continue
                r = await run_seed(st, v, s, e, args, agent, studies)
                rows.append(r)
                console.print(
                    f"{st.pool_name} paper:{st.b} {v.label} e{r['evals']} s{s}: test {r['test']:.3f} "
                    f"gap {r['gap_pts']:.1f} pts, {r['graph']} vs {r['single']} {r['single_test']:.3f}, "
                    f"{r['wall_s']:.0f}s"
                    + (f", agent {r['used']}/{r['asked']} used, {r['stats']}" if v.live else ""),
                    highlight=False,
                )
        if runtime is not None:
            await runtime.aclose()

    asyncio.run(go())
    out = args.out / "bench_search.json"
    by_key = {f"{st.pool_name}-paper{st.b}": st for st in settings}
    if args.merge and out.exists():  # keep the other rows of the file (e.g. replay runs)
        old: dict[str, list[dict[str, Any]]] = json.loads(out.read_text())
        ran = {v.label for v in variants}
        for key, rows in old.items():
            keep = [r for r in rows if key not in all_rows or r["optimizer"] not in ran]
            all_rows[key] = keep + all_rows.get(key, [])
            if key not in by_key:
                pool_name, b = key.rsplit("-paper", 1)
                by_key[key] = Setting(pool_name, int(b), args)
    mds: list[str] = []
    for key in sorted(by_key, key=lambda k: (by_key[k].b, k)):
        md = table(by_key[key], all_rows[key], args)
        print(md + "\n")
        mds.append(md)
    summ = summary(by_key, all_rows, args.pools.split(","))
    print(summ + "\n")
    out.write_text(json.dumps(all_rows, indent=1, default=str))
    (args.out / "bench_search.md").write_text(summ + "\n\n" + "\n\n".join(mds) + "\n")
    console.print(f"rows: {out}; tables: {args.out / 'bench_search.md'}")


if __name__ == "__main__":
    main()
