"""RouteMoA and its baselines on ground-truth replay pools (0/1 labels), test split by question id.

    .venv/bin/python benchmarks/bench_route.py                       # all four settings, hashing encoder
    .venv/bin/python benchmarks/bench_route.py --pools zeroeval-math --encoder minilm
    .venv/bin/python benchmarks/bench_route.py --live-only --live 30  # live aggregator sample (see --help)
    .venv/bin/python benchmarks/bench_route.py --pools zeroeval-math --test-pool path/to/pool  # external test pool

Settings: ``mmlu-pro-small`` (the 14 open models of at most 8.54B), ``mmlu-pro``
(all 29), ``zeroeval-math`` (40), ``zeroeval-gsm8k`` (42). Queries are split
train / validation / test (0.5 / 0.2 / 0.3) by question id with
``moagraph.pools.splits.split_ids``; the scorer head (logistic vs RouterDC
contrastive) is chosen on validation and every figure is on test. What is
recorded and what is modelled: :mod:`moagraph.route.gt_eval`.

Every figure comes from the one router evaluator (:mod:`moagraph.route.evaluator`, also
behind ``moagraph route eval``): test ids only (the ids the router trained on or was tuned
on are dropped, and counted), baselines (best single model, top-3 vote) chosen on the
training ids, every policy graded by the task's grader, 95% CIs and paired differences.
``routemoa`` assesses each round by agreement between its answers (the default on replay
pools, which record no self/peer scores); ``routemoa-noevidence`` is the official
in-answer assessment, which on a replay reads nothing, so the scorer alone decides its
rounds (the behaviour before answer evidence). Runs with the hashing encoder and no torch
(the RouterDC head is skipped when torch is missing).
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
from moagraph.route import RouteMoA
from moagraph.route.encoders import make_encoder
from moagraph.route.evaluate import evaluate_scorer, top_k
from moagraph.route.evaluator import (
    DEFAULT_POLICIES,
    evaluate_router,
    fit_answer_model,
    hit_rates_with_ci,
)
from moagraph.route.gt import (
    SETTINGS,
    GroundTruth,
    load_ground_truth,
    load_setting,
    small_open_models,
)
from moagraph.route.gt_eval import bootstrap_ci, live_compare, paired_bootstrap
from moagraph.route.scorer import Scorer

console = Console(width=200)
EVAL_POLICIES = DEFAULT_POLICIES  # the same list `route eval` compares
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
        try:
            s = Scorer(enc, gt.models, head=head, alpha=alpha, seed=seed).fit(
                tr.texts, tr.labels, gt.pool
            )  # type: ignore[arg-type]
        except ImportError as e:  # routerdc needs torch; the logistic heads do not
            cands[f"{head}(alpha={alpha})"] = {"skipped": f"{e}"}
            continue
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


def answer_evidence_policies(
    gt: GroundTruth, s: Scorer, split: dict[str, list[str]]
) -> tuple[list[Any], dict[str, Any]]:
    """RouteMoA variants beyond the evaluator's defaults: agreement plus answer-level features
    (a logistic model over prior, agreement and answer length fitted on the validation
    ids), and the separate-judge-calls assessment (which on a replay reads no score)."""
    rt = PoolRuntime(gt.pool)
    coef, rep = fit_answer_model(RouteMoA(s, rt), gt, gt.rows(split["validation"]))
    return [
        RouteMoA(s, rt, name="routemoa (agreement + answer features)", answer_model=coef),
        RouteMoA(s, rt, name="routemoa (judge calls)", assessment="judge"),
    ], rep


def run_setting(
    name: str,
    encoder: str,
    seed: int,
    test_pool: str | None = None,
    ids: list[str] | None = None,
) -> dict[str, Any]:
    """Train on the setting's train ids (head chosen on validation), then evaluate with the
    one router evaluator on its test ids, or on ``test_pool`` / ``ids`` when given."""
    t0 = time.time()
    gt = load_setting(name)
    split = gt.split(seed)
    s, cands = train_scorer(gt, split, encoder, seed)
    extra, feat = answer_evidence_policies(gt, s, split)
    s.meta["selection_ids"] = list(split["validation"])  # head and answer model chosen on them
    target, source = gt, f"{name} test split (split_ids seed {seed})"
    chosen: list[str] | None = ids if ids is not None else list(split["test"])
    if test_pool is not None:
        ext = load_ground_truth(test_pool)
        missing = [m for m in gt.models if m not in ext.models]
        if missing:
            raise SystemExit(f"--test-pool {test_pool} lacks the setting's models {missing}")
        target = ext.subset_models(list(gt.models))
        source, chosen = f"external pool {test_pool}", ids  # the router's pool: same models
    ev = evaluate_router(
        s,
        target,
        chosen,
        EVAL_POLICIES,
        k=3,
        layers=3,
        seed=seed,
        extra=extra,
        setting=name,
        source=source,
    )
    console.print(
        ev.table(f"{name}: {len(gt.models)} models; scorer {s.head} on {encoder}; {ev.ids.line()}")
    )
    for line in ev.summary_lines():
        console.print(line)
    rows = ev.ids.ids
    te = target.table.subset(target.rows(rows))
    tr = gt.table.subset(gt.rows(split["train"]))
    rep = evaluate_scorer(s, tr, te, seed=seed)
    hits = hit_rates_with_ci(s, tr, te, seed=seed)
    ht = Table(title=f"{name}: scorer vs global prior, hit rate on {len(rows)} queries [95% CI]")
    for c in ("k", "scorer", "prior (training accuracy)", "scorer - prior [paired CI]"):
        ht.add_column(c, justify="right")
    for h in hits:
        d = h["scorer_minus_prior"]
        ht.add_row(
            f"top-{h['k']}",
            f"{h['scorer']:.3f} [{h['scorer_ci'][0]:.3f}, {h['scorer_ci'][1]:.3f}]",
            f"{h['prior']:.3f} [{h['prior_ci'][0]:.3f}, {h['prior_ci'][1]:.3f}]",
            f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]",
        )
    console.print(ht)
    console.print(rep.calibration_line() + f" | heads on validation: {json.dumps(cands)}")
    console.print(f"answer-level features (fitted on validation): {json.dumps(feat)}")
    rm, old = ev.get("routemoa"), ev.get("routemoa-noevidence")
    dense = ev.get("dense")
    feats = ev.get("routemoa (agreement + answer features)")
    d_old = ev.diff("routemoa", "routemoa-noevidence")
    d_feat = ev.diff("routemoa (agreement + answer features)", "routemoa")
    goal = {
        "agreement_minus_noevidence": d_old,
        "agreement_flops_vs_noevidence": float(rm.flops.mean() / old.flops.mean()),
        "agreement_flops_le_10pct_dense": bool(rm.flops.mean() <= 0.10 * dense.flops.mean()),
        "agreement_acc_ge_noevidence": bool(rm.vote.mean() >= old.vote.mean()),
        "answer_features_minus_agreement": d_feat,
        "answer_features_flops_vs_agreement": float(feats.flops.mean() / rm.flops.mean()),
    }
    console.print(f"answer evidence (vote, paired over the same queries): {json.dumps(goal)}")
    console.print(f"[{time.time() - t0:.0f}s]")
    return {
        **ev.to_dict(),
        "n_models": len(gt.models),
        "seed": seed,
        "encoder": encoder,
        "head": s.head,
        "heads_validation": cands,
        "hit_rates": rep.rows,
        "hit_rates_ci": hits,
        "answer_features": feat,
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
    ap.add_argument(
        "--test-pool",
        default=None,
        help="evaluate on this ground-truth pool (name or folder: an external test pool) "
        "instead of the setting's test split; ids the router trained on are dropped",
    )
    ap.add_argument(
        "--ids", type=Path, default=None, help="evaluate on these query ids (one a line)"
    )
    args = ap.parse_args()
    ids = [x.strip() for x in args.ids.read_text().splitlines() if x.strip()] if args.ids else None
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.live_only:
        out = [
            run_setting(p.strip(), args.encoder, args.seed, args.test_pool, ids)
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
