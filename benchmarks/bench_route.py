"""RouteMoA and its baselines on ground-truth replay pools (0/1 labels), test split by question id.

    .venv/bin/python benchmarks/bench_route.py                       # all four settings, hashing encoder
    .venv/bin/python benchmarks/bench_route.py --pools zeroeval-math --encoder minilm
    .venv/bin/python benchmarks/bench_route.py --live 30             # + live aggregator sample (see --help)

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
from moagraph.route.gt import GroundTruth, load_ground_truth, small_open_models
from moagraph.route.gt_eval import (
    FINAL_ANSWER_NOTE,
    bootstrap_ci,
    evaluate_gt,
    live_routemoa,
    paired_bootstrap,
    single_model_results,
)
from moagraph.route.scorer import Scorer

console = Console(width=200)
OUT = Path(__file__).parent / "out"
SETTINGS = {
    "mmlu-pro-small": ("mmlu-pro", 8.6),
    "mmlu-pro": ("mmlu-pro", None),
    "zeroeval-math": ("zeroeval-math", None),
    "zeroeval-gsm8k": ("zeroeval-gsm8k", None),
}


def setting(name: str) -> GroundTruth:
    pool, max_b = SETTINGS[name]
    gt = load_ground_truth(pool)
    if max_b is not None:
        gt = gt.subset_models(small_open_models(gt, max_b))
    return gt


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
    gt = setting(name)
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


def live_sample(n: int, seed: int, cache: Path) -> dict[str, Any]:
    """RouteMoA with a live aggregator (local qwen-coder-1.5b) over recorded round-1 answers."""
    res = asyncio.run(live_routemoa(n, seed, str(cache)))
    console.print(
        f"live aggregator sample ({res['n']} zeroeval-math test queries, {res['aggregator']}): "
        f"{json.dumps(res['mean'])}"
    )
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
        "--live", type=int, default=0, help="live aggregator sample of N zeroeval-math test queries"
    )
    ap.add_argument("--cache", type=Path, default=OUT / "route_live_cache.sqlite")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    out = [
        run_setting(p.strip(), args.encoder, args.seed) for p in args.pools.split(",") if p.strip()
    ]
    path = OUT / "bench_route.json"
    path.write_text(json.dumps(out, indent=1, default=float))
    console.print(f"results: {path}")
    if args.live:
        live = live_sample(args.live, args.seed, args.cache)
        (OUT / "bench_route_live.json").write_text(json.dumps(live, indent=1, default=float))


if __name__ == "__main__":
    main()
