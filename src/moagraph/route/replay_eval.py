"""Offline evaluation of routing policies on a labelled replay pool (AlpacaEval).

What can be measured from the recordings, and what cannot:

- Each model's one recorded answer per query and its judge label (win
  probability) exist; no aggregator, refinement or judge outputs do. So an
  aggregated answer's quality is NOT measured. Every policy is scored under
  the same two explicit final-answer models:
  * ``oracle``: the best label among the layer-1 answers the policy collects
    (an upper bound on what a perfect aggregator could pick);
  * ``selected``: the label of the layer-1 answer the policy itself ranks
    first (scorer prior for RouteMoA, best-by-training-label for MoA baselines).
- Cost is estimated with the cost model (:mod:`moagraph.models.cost`):
  layer 1 from recorded lengths (tokens = chars / 4); a refinement layer or
  aggregator reads the query plus its inputs' recorded answers and is assumed
  to write as many tokens as that model's recorded answer; a judge call reads
  query + answer + 60 template tokens and writes ``judge_max_tokens``.
  RouteMoA's judges cannot run on a replay, so no early stop is simulated:
  its cost here is the upper bound of ``max_layers`` layers + judges.
- Latency is the documented model of :func:`moagraph.route.ranking.model_latency_s`
  (params x tokens), summed along the critical path: per layer the slowest
  node, then judges, then the aggregator.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moagraph.models.cost import call_dollars, call_flops, unit_flops
from moagraph.models.pool import Pool
from moagraph.route.base import RoutePlan, Router
from moagraph.route.data import LabelTable, estimate_tokens
from moagraph.route.ranking import model_latency_s
from moagraph.tasks.base import Example

JUDGE_TEMPLATE_TOKENS = 60

FINAL_ANSWER_MODEL = (
    "final answer quality = label (AlpacaEval 2.0 win prob.) of a recorded layer-1 answer: "
    "oracle = best answer the policy collects, selected = the answer it ranks first; "
    "aggregated answers are not measured (no recordings)"
)


@dataclass
class PolicyResult:
    policy: str
    n: int
    oracle: float
    selected: float
    flops_norm: float
    dollars: float
    latency_s: float
    calls: float
    decision_ms: dict[str, float] = field(default_factory=dict)
    per_query: list[dict[str, Any]] = field(default_factory=list, repr=False)


@dataclass
class ReplayCost:
    flops: float = 0.0
    dollars: float = 0.0
    latency_s: float = 0.0
    calls: int = 0


def plan_cost(
    plan: RoutePlan,
    pool: Pool,
    prompt_tokens: float,
    out_tokens: dict[str, float],
    n_inputs: int | None = None,
) -> ReplayCost:
    """Cost-model estimate of a plan on one query given recorded answer lengths."""
    cost = ReplayCost()

    def add(model: str, n_p: float, n_d: float) -> float:
        spec = pool[model]
        cost.flops += call_flops(spec, n_p, n_d)
        cost.dollars += call_dollars(spec, n_p, n_d)
        cost.calls += 1
        return model_latency_s(spec, n_p, n_d)

    prev: list[str] = []
    for li, models in enumerate(plan.layers):
        inputs = [m for m in plan.ranked if m in prev][:n_inputs] if li else []
        n_p = prompt_tokens + sum(out_tokens[m] for m in inputs)
        cost.latency_s += max(add(m, n_p, out_tokens[m]) for m in models)
        if plan.judges_per_layer:
            pairs = [(j, a) for j in models for a in models][: plan.judges_per_layer]
            cost.latency_s += max(
                add(j, prompt_tokens + out_tokens[a] + JUDGE_TEMPLATE_TOKENS, plan.judge_max_tokens)
                for j, a in pairs
            )
        prev = list(models)
    if plan.aggregator is not None and len(plan.ranked) > 1:
        inputs = [m for m in plan.ranked if m in prev][:n_inputs]
        n_p = prompt_tokens + sum(out_tokens[m] for m in inputs)
        cost.latency_s += add(
            plan.aggregator,
            n_p,
            out_tokens.get(plan.aggregator, float(np.mean(list(out_tokens.values())))),
        )
    return cost


def _n_inputs(pol: Any) -> int | None:
    cfg = getattr(pol, "config", None)
    return getattr(cfg, "n_inputs", None) if cfg is not None else getattr(pol, "n_inputs", None)


def evaluate_policies(
    policies: list[Router],
    table: LabelTable,
    pool: Pool,
    progress: Any = None,
) -> list[PolicyResult]:
    """Plan every query with every policy and score it offline (see module doc)."""
    if table.out_tokens is None:
        raise ValueError(
            "label table has no recorded output lengths; load it with load_alpaca_eval"
        )
    a = float(np.mean([estimate_tokens(t) for t in table.texts]))
    b = float(np.nanmean(table.out_tokens))
    unit = unit_flops(pool.models, a, b)
    results = []
    for pol in policies:
        rows, timings = [], []
        for qi, (qid, text) in enumerate(zip(table.query_ids, table.texts)):
            ex = Example(id=qid, question=text)
            t0 = time.perf_counter()
            plan = pol.plan(ex)
            total_ms = (time.perf_counter() - t0) * 1e3
            timings.append({**plan.meta.get("timing", {}), "total_ms": total_ms})
            lab = {m: table.labels[qi, j] for j, m in enumerate(table.models)}
            outs = {m: float(table.out_tokens[qi, j]) for j, m in enumerate(table.models)}
            outs = {m: (v if np.isfinite(v) else b) for m, v in outs.items()}
            seen = [lab[m] for m in plan.ranked if np.isfinite(lab[m])]
            cost = plan_cost(plan, pool, estimate_tokens(text), outs, _n_inputs(pol))
            rows.append(
                {
                    "query_id": qid,
                    "models": plan.ranked,
                    "oracle": max(seen) if seen else np.nan,
                    "selected": lab[plan.ranked[0]],
                    "flops_norm": cost.flops / unit,
                    "dollars": cost.dollars,
                    "latency_s": cost.latency_s,
                    "calls": cost.calls,
                }
            )
            if progress is not None:
                progress()
        pct = {}
        for key in ("encode_ms", "head_ms", "policy_ms", "total_ms"):
            v = [t[key] for t in timings if key in t]
            if v:
                pct[f"{key}_p50"] = float(np.percentile(v, 50))
                pct[f"{key}_p99"] = float(np.percentile(v, 99))
        results.append(
            PolicyResult(
                policy=pol.name,
                n=len(rows),
                oracle=float(np.nanmean([r["oracle"] for r in rows])),
                selected=float(np.nanmean([r["selected"] for r in rows])),
                flops_norm=float(np.mean([r["flops_norm"] for r in rows])),
                dollars=float(np.mean([r["dollars"] for r in rows])),
                latency_s=float(np.mean([r["latency_s"] for r in rows])),
                calls=float(np.mean([r["calls"] for r in rows])),
                decision_ms=pct,
                per_query=rows,
            )
        )
    return results


def results_table(results: list[PolicyResult], reference: str = "dense", seed: int = 0) -> Any:
    """A rich table with cost/latency reduction vs the ``reference`` policy, the selected
    win probability with a 95% bootstrap CI and its paired difference to the reference."""
    from rich.table import Table

    from moagraph.route.gt_eval import bootstrap_ci, paired_bootstrap

    ref = next((r for r in results if r.policy == reference), None)
    t = Table(
        title="Routing on AlpacaEval replay (held-out queries)",
        caption=FINAL_ANSWER_MODEL + "; CIs: 95% bootstrap, differences paired over the queries",
    )
    for col in (
        "policy",
        "n",
        "oracle win",
        "selected win [95% CI]",
        f"selected - {reference} [CI]",
        "FLOPs (norm)",
        "$ / query",
        "latency s (model)",
        "calls",
        f"cost vs {reference}",
        f"latency vs {reference}",
    ):
        t.add_column(col, justify="left" if col == "policy" else "right")

    def sel(r: PolicyResult) -> np.ndarray:
        return np.nan_to_num(np.asarray([q["selected"] for q in r.per_query], float))

    for r in results:
        dc = f"{100 * (r.flops_norm / ref.flops_norm - 1):+.1f}%" if ref else "-"
        dl = f"{100 * (r.latency_s / ref.latency_s - 1):+.1f}%" if ref else "-"
        ci, dd = "", "-"
        if r.per_query:
            lo, hi = bootstrap_ci(sel(r), seed=seed)
            ci = f" [{lo:.3f}, {hi:.3f}]"
            if ref is not None and len(ref.per_query) == len(r.per_query):
                d = paired_bootstrap(sel(r), sel(ref), seed=seed)
                dd = f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
        t.add_row(
            r.policy,
            str(r.n),
            f"{r.oracle:.3f}",
            f"{r.selected:.3f}{ci}",
            dd,
            f"{r.flops_norm:.1f}",
            f"{r.dollars:.5f}",
            f"{r.latency_s:.1f}",
            f"{r.calls:.1f}",
            dc,
            dl,
        )
    return t


def plot_results(results: list[PolicyResult], path: str | Path) -> Path:
    """Quality vs cost scatter (both final-answer models) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        ax.plot([r.flops_norm, r.flops_norm], [r.selected, r.oracle], "-", color="0.7")
        ax.scatter([r.flops_norm], [r.oracle], marker="^")
        ax.scatter([r.flops_norm], [r.selected], marker="o")
        ax.annotate(
            r.policy,
            (r.flops_norm, r.oracle),
            fontsize=8,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("mean normalised FLOPs per query (cost model)")
    ax.set_ylabel("mean win probability (^ oracle, o selected)")
    ax.set_title("AlpacaEval replay: quality vs cost")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p
