"""RouteMoA and its baselines on ground-truth replay pools (0/1 labels), test split by question id.

    .venv/bin/python benchmarks/bench_route.py                       # all four settings, hashing encoder
    .venv/bin/python benchmarks/bench_route.py --pools zeroeval-math --encoder minilm
    .venv/bin/python benchmarks/bench_route.py --live-only --live 30  # live aggregator sample (see --help)

Settings: ``mmlu-pro-small`` (the 14 open models of at most 8.54B), ``mmlu-pro``
(all 29), ``zeroeval-math`` (40), ``zeroeval-gsm8k`` (42). Queries are split
train / validation / test (0.5 / 0.2 / 0.3) by question id with
``moagraph.pools.splits.split_ids``; the scorer head (logistic vs RouterDC
contrastive) is chosen on validation and every figure is on test. What is
recorded and what is modelled: :mod:`moagraph.route.gt_eval`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from moagraph.models.runtime import PoolRuntime
from moagraph.route import RouteMoA, build_policies
from moagraph.route.encoders import make_encoder
from moagraph.route.evaluate import evaluate_scorer, top_k
from moagraph.route.gt import (
    SETTINGS,
    GroundTruth,
    load_ground_truth,
    load_setting,
    small_open_models,
)
from moagraph.route.gt_eval import (
    FINAL_ANSWER_NOTE,
    bootstrap_ci,
    evaluate_gt,
    live_compare,
    paired_bootstrap,
    single_model_results,
)
from moagraph.route.scorer import Scorer

console = Console(width=200)
OUT = Path(__file__).parent / "out"


def train_scorer(
    gt: GroundTruth, split: dict[str, list[str]], encoder: str, seed: int
) -> tuple[Scorer, dict[str, Any]]:
    """Fit each head on train, keep the one whose top-1 pick is right most often on validation."""
    tr = gt.table.subset(gt.rows(split["train"]))
    va = gt.table.subset(gt.rows(split["validation"]))
    enc = make_encoder(encoder)
    cands: dict[str, Any] = {}
    best: tuple[float, Scorer] | None = None
    for head, alpha in (("logistic", 10.0), ("logistic", 1.0), ("routerdc", 1.0)):
        s = Scorer(enc, gt.models, head=head, alpha=alpha, seed=seed).fit(
            tr.texts, tr.labels, gt.pool
        )  # type: ignore[arg-type]
        pred = s.predict(va.texts)
        pick = top_k(pred, 1)[:, 0]
        val = float(np.nanmean(va.labels[np.arange(len(va)), pick]))
        cands[f"{head}(alpha={alpha})"] = {
            "val_top1_label": val,
            "val_brier": float(np.nanmean((pred - va.labels) ** 2)),
        }
        if best is None or val > best[0]:
            best = (val, s)
    assert best is not None
    s = best[1]
    s.meta["split"] = {"seed": seed, "fractions": [0.5, 0.2, 0.3], "by": "split_ids(question id)"}
    s.meta["train_ids"] = list(split["train"])
    return s, cands


def policies(
    gt: GroundTruth, s: Scorer, seed: int, labels: dict[str, dict[str, float]]
) -> list[Any]:
    rt = PoolRuntime(gt.pool)
    first, *rest = build_policies(
        ["routemoa", "dense", "smoa", "sparse", "random", "single", "threshold", "oracle"],
        s,
        rt,
        k=3,
        layers=3,
        seed=seed,
        labels=labels,
    )
    return [
        first,
        RouteMoA(s, rt, name="routemoa (judge calls)", assessment="judge"),
        RouteMoA(s, rt, name="routemoa (1 round)", rounds=1),
        *rest,
    ]


def run_setting(name: str, encoder: str, seed: int) -> dict[str, Any]:
    t0 = time.time()
    gt = load_setting(name)
    split = gt.split(seed)
    s, cands = train_scorer(gt, split, encoder, seed)
    test_rows = gt.rows(split["test"])
    te = gt.table.subset(test_rows)
    tr = gt.table.subset(gt.rows(split["train"]))
    rep = evaluate_scorer(s, tr, te, seed=seed)
    labels = {
        q: {m: float(v) for m, v in zip(gt.models, row) if np.isfinite(v)}
        for q, row in zip(te.query_ids, te.labels)
    }
    pols = policies(gt, s, seed, labels)
    res = evaluate_gt(pols, gt, test_rows)
    singles = single_model_results(gt, test_rows)
    dense = next(r for r in res if r.policy == "dense")
    rm = next(r for r in res if r.policy == "routemoa")
    cheap = [x for x in singles if x.flops.mean() <= rm.flops.mean()]
    best_single_cheap = max(cheap, key=lambda x: x.vote.mean()) if cheap else None
    best_single = max(singles, key=lambda x: x.vote.mean())
    t = Table(
        title=f"{name}: {len(gt.models)} models, {len(test_rows)} test queries (split_ids seed {seed}); "
        f"scorer {s.head} on {encoder}",
        caption=FINAL_ANSWER_NOTE,
    )
    for c in (
        "policy",
        "vote acc [95% CI]",
        "select acc",
        "FLOPs vs dense",
        "$ vs dense",
        "calls",
        "rounds",
        "vote - dense [CI]",
        "vote - best single<=cost [CI]",
    ):
        t.add_column(c, justify="left" if c == "policy" else "right")
    rows_out = []
    for r in res:
        lo, hi = bootstrap_ci(r.vote, seed=seed)
        dd = paired_bootstrap(r.vote, dense.vote, seed=seed)
        ds = (
            paired_bootstrap(r.vote, best_single_cheap.vote, seed=seed)
            if best_single_cheap
            else None
        )
        fl = r.flops.mean() / dense.flops.mean()
        dl = r.dollars.mean() / dense.dollars.mean() if dense.dollars.mean() > 0 else float("nan")
        t.add_row(
            r.policy,
            f"{r.vote.mean():.3f} [{lo:.3f}, {hi:.3f}]",
            f"{r.select.mean():.3f}",
            f"{100 * fl:.1f}%",
            "-" if np.isnan(dl) else f"{100 * dl:.1f}%",
            f"{r.calls.mean():.1f}",
            f"{r.rounds.mean():.2f}",
            f"{dd[0]:+.3f} [{dd[1]:+.3f}, {dd[2]:+.3f}]",
            f"{ds[0]:+.3f} [{ds[1]:+.3f}, {ds[2]:+.3f}]" if ds else "-",
        )
        rows_out.append(
            {
                "policy": r.policy,
                **r.mean,
                "vote_ci": [lo, hi],
                "flops_vs_dense": fl,
                "dollars_vs_dense": dl,
                "vote_minus_dense": dd,
                "vote_minus_best_single_cheap": ds,
            }
        )
    console.print(t)
    console.print(
        f"best single (test): {best_single.policy} {best_single.vote.mean():.3f}; best single of "
        f"<= RouteMoA's FLOPs: {best_single_cheap.policy if best_single_cheap else '-'} "
        f"{best_single_cheap.vote.mean() if best_single_cheap else float('nan'):.3f}"
    )
    console.print(
        rep.table(
            f"{name}: scorer hit rate on {rep.n_test} test queries (any tied-best model is a hit)"
        )
    )
    console.print(rep.calibration_line() + f" | heads on validation: {json.dumps(cands)}")
    goal = {
        "flops_le_10pct": bool(rm.flops.mean() <= 0.10 * dense.flops.mean()),
        "acc_ge_dense": bool(rm.vote.mean() >= dense.vote.mean()),
        "acc_gt_best_single_le_cost": bool(
            best_single_cheap is not None and rm.vote.mean() > best_single_cheap.vote.mean()
        ),
    }
    console.print(f"goal checks (vote): {goal}   [{time.time() - t0:.0f}s]")
    return {
        "setting": name,
        "n_models": len(gt.models),
        "n_test": len(test_rows),
        "seed": seed,
        "encoder": encoder,
        "head": s.head,
        "heads_validation": cands,
        "policies": rows_out,
        "best_single": [best_single.policy, float(best_single.vote.mean())],
        "best_single_le_cost": (
            [best_single_cheap.policy, float(best_single_cheap.vote.mean())]
            if best_single_cheap
            else None
        ),
        "hit_rates": rep.rows,
        "calibration": {"mse": rep.calibration.mse, "ece": rep.calibration.ece},
        "goal": goal,
    }


LIVE_ROWS = (
    # (label, policy key, field)
    ("routemoa + live aggregator (top 3)", "routemoa", "aggregated"),
    ("routemoa vote (3 recorded answers)", "routemoa", "vote"),
    ("routemoa select (top-1 recorded)", "routemoa", "select"),
    ("routemoa + live aggregator, MoA prompt", "routemoa-moa", "aggregated"),
    ("dense + live aggregator (reads top {k} of all)", "dense", "aggregated"),
    ("dense vote (all recorded answers)", "dense", "vote"),
    ("best single by training prior (recorded)", "single", "label"),
)


def live_table(res: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """Accuracy [95% CI], paired difference to RouteMoA + live aggregator, cost, latency."""
    pq = res["per_query"]
    n = len(pq)
    if not n:
        return []
    ref = np.array([q["routemoa"]["aggregated"] for q in pq]) if "routemoa" in pq[0] else None
    dense_fl = np.mean([q["dense"]["flops"] for q in pq]) if "dense" in pq[0] else float("nan")
    t = Table(
        title=f"{res['pool']}: live aggregator {res['aggregator']} (max_tokens {res['max_tokens']}) "
        f"on the first {n} test queries (split_ids seed {seed}); {len(res['models'])} recorded models",
        caption="aggregated = the live aggregator's answer graded by the task grader; vote/select/"
        "single = recorded answers on the same queries; FLOPs and $ count every call "
        "(recorded tokens for replayed calls, counted tokens for the aggregator); latency = "
        "the aggregator call as measured on this machine (recorded calls add nothing)",
    )
    for c in (
        "policy",
        "acc [95% CI]",
        "- routemoa+agg [paired CI]",
        "TFLOPs/query",
        "FLOPs vs dense",
        "$/query",
        "agg latency s (median)",
        "agg tokens in/out",
        "agg tok/s",
    ):
        t.add_column(c, justify="left" if c == "policy" else "right")
    rows = []
    for label, key, fld in LIVE_ROWS:
        if key not in pq[0]:
            continue
        label = label.format(k=res.get("dense_inputs") or "all")
        v = np.array([q[key][fld] for q in pq], float)
        lo, hi = bootstrap_ci(v, seed=seed)
        d = paired_bootstrap(v, ref, seed=seed) if ref is not None else None
        fl = float(np.mean([q[key]["flops"] for q in pq]))
        dl = float(np.mean([q[key]["dollars"] for q in pq]))
        live = fld == "aggregated"
        lat = [q[key]["agg_latency_s"] for q in pq] if live else []
        tin = [q[key]["agg_prompt_tokens"] for q in pq] if live else []
        tout = [q[key]["agg_completion_tokens"] for q in pq] if live else []
        tps = float(np.sum(tout) / np.sum(lat)) if live and np.sum(lat) > 0 else float("nan")
        row = {
            "policy": label,
            "n": n,
            "acc": float(v.mean()),
            "acc_ci": [lo, hi],
            "minus_routemoa_agg": d,
            "flops": fl,
            "flops_vs_dense": fl / dense_fl if dense_fl > 0 else float("nan"),
            "dollars": dl,
            "agg_latency_median_s": float(np.median(lat)) if lat else None,
            "agg_latency_mean_s": float(np.mean(lat)) if lat else None,
            "agg_prompt_tokens_mean": float(np.mean(tin)) if tin else None,
            "agg_completion_tokens_mean": float(np.mean(tout)) if tout else None,
            "agg_tokens_per_s": tps if live else None,
            "agg_truncated": (
                int(sum(q[key]["agg_finish"] == "length" for q in pq)) if live else None
            ),
            "agg_failed": int(sum(not q[key]["agg_ok"] for q in pq)) if live else None,
        }
        rows.append(row)
        t.add_row(
            label,
            f"{v.mean():.3f} [{lo:.3f}, {hi:.3f}]",
            "-"
            if d is None or (key == "routemoa" and fld == "aggregated")
            else f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]",
            f"{fl / 1e12:.2f}",
            f"{100 * row['flops_vs_dense']:.1f}%",
            f"{dl:.5f}",
            f"{row['agg_latency_median_s']:.0f}" if live else "-",
            f"{row['agg_prompt_tokens_mean']:.0f}/{row['agg_completion_tokens_mean']:.0f}"
            if live
            else "-",
            f"{tps:.1f}" if live else "-",
        )
    console.print(t)
    half = max((r["acc_ci"][1] - r["acc_ci"][0]) / 2 for r in rows)
    p = max(min(float(np.mean([r["acc"] for r in rows])), 0.99), 0.01)
    need = int(np.ceil((1.96 / 0.05) ** 2 * 0.25))
    console.print(
        f"n={n}: widest 95% CI half-width {100 * half:.1f} points; +-5 points needs about "
        f"{need} queries at p=0.5 ({int(np.ceil((1.96 / 0.05) ** 2 * p * (1 - p)))} at the "
        f"observed mean accuracy {p:.2f})"
    )
    return rows


def live_sample(
    n: int,
    seed: int,
    cache: Path,
    pool: str = "zeroeval-math",
    max_tokens: int = 512,
    dense_inputs: int | None = 6,
    threads: int | None = None,
) -> dict[str, Any]:
    """RouteMoA and dense MoA with a live aggregator (local qwen-coder-1.5b) over recorded
    round-1 answers, next to their vote/select variants and the best single model."""
    name = pool
    base, max_b = SETTINGS[name]
    models = small_open_models(load_ground_truth(base), max_b) if max_b is not None else None
    t0 = time.time()

    def progress(rec: dict[str, Any]) -> None:
        parts = [
            f"{k}: agg={rec[k]['aggregated']:.0f} vote={rec[k]['vote']:.0f} "
            f"{rec[k]['agg_latency_s']:.0f}s{' (cached)' if rec[k]['agg_cached'] else ''}"
            for k in ("routemoa", "routemoa-moa", "dense")
            if k in rec
        ]
        console.print(
            f"[{time.time() - t0:.0f}s] {rec['query_id']} single={rec['single']['label']:.0f} "
            + " | ".join(parts)
        )

    res = asyncio.run(
        live_compare(
            n,
            seed,
            str(cache),
            pool_name=base,
            models=models,
            max_tokens=max_tokens,
            dense_inputs=dense_inputs,
            progress=progress,
            threads=threads,
        )
    )
    res["setting"] = name
    res["table"] = live_table(res, seed)
    res["wall_s"] = time.time() - t0
    return res


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--pools", default=",".join(SETTINGS), help=f"comma-separated of {', '.join(SETTINGS)}"
    )
    ap.add_argument("--encoder", default="hashing", help="hashing | minilm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--live", type=int, default=0, help="live aggregator sample of the first N test queries"
    )
    ap.add_argument(
        "--live-pool",
        default="zeroeval-math",
        help=f"setting for --live: one of {', '.join(SETTINGS)}",
    )
    ap.add_argument("--live-max-tokens", type=int, default=512, help="aggregator max_tokens")
    ap.add_argument(
        "--dense-inputs",
        type=int,
        default=6,
        help="answers the dense aggregator reads (top by prior; 0 = all, overflows 8k on MATH)",
    )
    ap.add_argument("--live-only", action="store_true", help="skip the offline settings (--pools)")
    ap.add_argument(
        "--live-threads", type=int, default=0, help="aggregator CPU threads (0 = all cores)"
    )
    ap.add_argument("--cache", type=Path, default=OUT / "route_live_cache.sqlite")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.live_only:
        out = [
            run_setting(p.strip(), args.encoder, args.seed)
            for p in args.pools.split(",")
            if p.strip()
        ]
        path = OUT / "bench_route.json"
        path.write_text(json.dumps(out, indent=1, default=float))
        console.print(f"results: {path}")
    if args.live:
        live = live_sample(
            args.live,
            args.seed,
            args.cache,
            args.live_pool,
            args.live_max_tokens,
            args.dense_inputs or None,
            args.live_threads or None,
        )
        path = OUT / f"bench_route_live_{args.live_pool}.json"
        path.write_text(json.dumps(live, indent=1, default=float))
        console.print(f"live results: {path}")


if __name__ == "__main__":
    main()
