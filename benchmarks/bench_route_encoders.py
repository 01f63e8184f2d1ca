"""Which query encoder should the routing scorer use? hashing vs MiniLM vs mpnet, on ground truth.

    .venv/bin/python benchmarks/bench_route_encoders.py                     # everything
    .venv/bin/python benchmarks/bench_route_encoders.py --pools zeroeval-math --encoders hashing,mpnet
    .venv/bin/python benchmarks/bench_route_encoders.py --no-vote --n-boot 500   # quicker
    .venv/bin/python benchmarks/bench_route_encoders.py --pools mmlu-pro --mmlu-frac 1  # all

A run replaces the settings it runs in ``--out`` and keeps the others (``--fresh``: drop them).

Settings: ``mmlu-pro-small`` (the 14 open models of at most 8.54B), ``mmlu-pro`` (all
29), ``zeroeval-math`` (40), ``zeroeval-gsm8k`` (42); labels are the pools' recorded 0/1
scores. MMLU-Pro uses ``--mmlu-frac`` (default 0.1, ~920) of its 8,966 questions, drawn by
question id: encoding all of them with mpnet takes hours on 2 shared CPU cores. Queries
are split train / validation / test (0.5 / 0.2 / 0.3) by question id with
``moagraph.pools.splits.split_ids`` (seed ``--seed``). Every encoder x head
(``logistic``: one L2 logistic regression per model; ``routerdc``: the RouteMoA paper's
contrastive objective on a projection of the frozen embedding) is fitted on train, its
hyper-parameter chosen on validation (top-1 hit rate, ties to the lower Brier score), and
every figure below is on test. ``prior`` ranks every query by the models' training
accuracy (the global-best models; no encoder).

Metrics, per test query: top-1 / top-3 hit (the paper's tie handling: any tied-best
model is a hit; queries no model answers right count too, where every model is
tied-best), Brier score and ECE of the predicted P(correct) over all (query, model)
cells, ``select`` = the label of the top-1 pick, and ``vote`` = RouteMoA (default
settings, 3 rounds; on these replay pools its default assessment is answer agreement,
``RouteMoAConfig.assessment="agreement"``) answered by majority vote of its last round's
recorded answers
(:func:`moagraph.route.gt_eval.evaluate_gt`). Differences are paired over the same
test queries with a bootstrap 95% CI (``gt_eval.paired_bootstrap``), against the prior
and against the hashing encoder with the same head; a CI that covers 0 is no result.

Encode time: the seconds the model spent on cache misses in this run, and a fresh
(uncached) timing of ``--time-sample`` test queries per encoder. Embeddings are cached
(``~/.cache/moagraph/embeddings.sqlite``), so a rerun costs only the heads.
Results: ``benchmarks/out/bench_route_encoders.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from moagraph.models.runtime import PoolRuntime
from moagraph.pools.splits import split_ids
from moagraph.route import RouteMoA
from moagraph.route.encoders import Encoder, make_encoder
from moagraph.route.evaluate import calibration, hit_rate, top_k
from moagraph.route.gt import (
    SETTINGS,
    SPLIT_FRACTIONS,
    GroundTruth,
    load_setting,
)
from moagraph.route.gt_eval import evaluate_gt, paired_bootstrap
from moagraph.route.scorer import Scorer, pool_fingerprint

console = Console(width=220)
OUT = Path(__file__).parent / "out"
ENCODERS = ("hashing", "minilm", "mpnet")
HEAD_GRID: dict[str, list[dict[str, Any]]] = {
    "logistic": [{"alpha": a} for a in (1.0, 10.0, 100.0)],
    "routerdc": [{"hidden": h} for h in (64, 256)],
}
METRICS = ("top1", "top3", "select", "brier", "vote")  # per-query arrays, paired CIs


def setting_split(
    name: str, seed: int, mmlu_frac: float = 1.0
) -> tuple[GroundTruth, dict[str, list[str]]]:
    """The setting and its train / validation / test question ids (``split_ids``).

    ``mmlu_frac`` < 1 keeps that share of MMLU-Pro's 8,966 questions (chosen by
    ``split_ids`` with another seed, so independent of the split) before splitting:
    mpnet encodes ~0.5-3 queries/s on the shared 2-core development machine.
    """
    gt = load_setting(name)
    ids = gt.table.query_ids
    if SETTINGS[name][0] == "mmlu-pro" and mmlu_frac < 1.0:
        keep = split_ids(ids, seed + 7919, (mmlu_frac, 1.0 - mmlu_frac), ("keep", "rest"))
        ids = keep["keep"]
    return gt, split_ids(ids, seed=seed, fractions=SPLIT_FRACTIONS)


def per_query_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """0/1 per query: the top k hold a tied-best model (``evaluate.hit_rate``, unaveraged)."""
    lab = np.where(np.isnan(labels), -np.inf, labels)
    best = lab >= lab.max(axis=1, keepdims=True)
    chosen = top_k(np.where(np.isnan(scores), -np.inf, scores), k)
    hits = np.take_along_axis(best, chosen, axis=1).any(axis=1).astype(float)
    rows = np.isfinite(lab).any(axis=1)
    out = np.where(rows, hits, np.nan)
    assert abs(np.nanmean(out) - hit_rate(scores, labels, k)) < 1e-12  # same definition
    return np.asarray(out)


def per_query_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    pick = top_k(scores, 1)[:, 0]
    sq = (scores - labels) ** 2
    return {
        "top1": per_query_hits(scores, labels, 1),
        "top3": per_query_hits(scores, labels, 3),
        "select": np.nan_to_num(labels[np.arange(len(labels)), pick], nan=0.0),
        "brier": np.nanmean(np.where(np.isnan(labels), np.nan, sq), axis=1),
    }


def fit_best(
    enc: Encoder,
    head: str,
    gt: GroundTruth,
    rows: dict[str, np.ndarray],
    seed: int,
) -> tuple[Scorer, list[dict[str, Any]]]:
    """Fit every grid point on train; keep the best validation top-1 hit (then Brier)."""
    tr, va = gt.table.subset(rows["train"]), gt.table.subset(rows["validation"])
    tried: list[dict[str, Any]] = []
    best: tuple[tuple[float, float], Scorer] | None = None
    for hp in HEAD_GRID[head]:
        t0 = time.perf_counter()
        s = Scorer(enc, gt.models, head=head, seed=seed, **hp).fit(tr.texts, tr.labels, gt.pool)
        pred = s.predict(va.texts)
        m = per_query_metrics(pred, va.labels)
        key = (float(np.nanmean(m["top1"])), -float(np.nanmean(m["brier"])))
        tried.append(
            {**hp, "val_top1": key[0], "val_brier": -key[1], "fit_s": time.perf_counter() - t0}
        )
        if best is None or key > best[0]:
            best = (key, s)
    assert best is not None
    return best[1], tried


def prior_scorer(gt: GroundTruth, train_labels: np.ndarray) -> Scorer:
    """A logistic scorer with zero weights: it outputs the training accuracy on every query."""
    s = Scorer(make_encoder("hashing", n_features=8), gt.models, head="logistic")
    s.prior = np.nan_to_num(np.nanmean(train_labels, axis=0))
    p = np.clip(s.prior, 1e-6, 1 - 1e-6)
    s.weights = [np.zeros((8, len(gt.models)), np.float32), np.log(p / (1 - p)).astype(np.float32)]
    s.fingerprint = pool_fingerprint(gt.pool)
    return s


def vote_of(gt: GroundTruth, s: Scorer, test_rows: np.ndarray) -> np.ndarray:
    """RouteMoA (default config) on every test query, final answer by recorded-answer vote."""
    pol = RouteMoA(s, PoolRuntime(gt.pool))
    return evaluate_gt([pol], gt, test_rows)[0].vote


def time_sample(name: str, texts: list[str]) -> dict[str, float]:
    """Fresh (uncached) encode time of ``texts``: model load excluded, one warm-up text."""
    if not texts:
        return {}
    with tempfile.TemporaryDirectory() as d:
        enc = make_encoder(name, cache_path=Path(d) / "emb.sqlite")
        enc.encode(["warm-up"])  # loads the model
        t0 = time.perf_counter()
        enc.encode(texts)
        dt = time.perf_counter() - t0
    return {"n": len(texts), "seconds": dt, "ms_per_query": 1e3 * dt / len(texts)}


def run_setting(
    name: str,
    encoders: list[str],
    seed: int,
    n_boot: int,
    vote: bool,
    mmlu_frac: float = 1.0,
) -> dict[str, Any]:
    t_start = time.time()
    timing: dict[str, Any] = {}
    gt, split = setting_split(name, seed, mmlu_frac)
    rows = {k: gt.rows(v) for k, v in split.items()}
    tr, te = gt.table.subset(rows["train"]), gt.table.subset(rows["test"])
    y = te.labels
    prior_scores = np.tile(np.nan_to_num(np.nanmean(tr.labels, axis=0)), (len(te), 1))
    results: dict[str, dict[str, Any]] = {}
    per_q: dict[str, dict[str, np.ndarray]] = {}

    prior = per_query_metrics(prior_scores, y)
    if vote:
        prior["vote"] = vote_of(gt, prior_scorer(gt, tr.labels), rows["test"])
    cal = calibration(prior_scores, y)
    per_q["prior"] = prior
    results["prior"] = {"encoder": None, "head": "prior", "ece": cal.ece}

    for enc_name in encoders:
        enc = make_encoder(enc_name)
        n0, s0 = getattr(enc, "encoded", 0), getattr(enc, "encode_seconds", 0.0)
        t0 = time.perf_counter()
        enc.encode([gt.table.texts[i] for r in rows.values() for i in r])  # cache + memo
        enc_wall = time.perf_counter() - t0
        timing[enc_name] = {
            "texts": sum(len(r) for r in rows.values()),
            "misses": getattr(enc, "encoded", 0) - n0,
            "model_s": getattr(enc, "encode_seconds", 0.0) - s0,
            "wall_s": enc_wall,
        }
        for head in HEAD_GRID:
            s, tried = fit_best(enc, head, gt, rows, seed)
            pred = s.predict(te.texts)
            m = per_query_metrics(pred, y)
            t_vote = time.perf_counter()
            if vote:
                m["vote"] = vote_of(gt, s, rows["test"])
            t_vote = time.perf_counter() - t_vote
            key = f"{enc_name}/{head}"
            per_q[key] = m
            results[key] = {
                "encoder": enc_name,
                "head": head,
                "chosen": _chosen(s),
                "validation": tried,
                "ece": calibration(pred, y).ece,
                "vote_s": t_vote,
            }
            fit_s = sum(t["fit_s"] for t in tried)
            console.print(
                f"  {name} {key}: test top-1 {np.nanmean(m['top1']):.3f} "
                f"(fits {fit_s:.0f}s, vote {t_vote:.0f}s)",
                highlight=False,
            )

    for key, m in per_q.items():
        r = results[key]
        r.update({k: float(np.nanmean(v)) for k, v in m.items()})
        r["vs_prior"] = {
            k: _paired(m[k], per_q["prior"][k], n_boot, seed) for k in m if key != "prior"
        }
        base = f"hashing/{r['head']}"
        if r["encoder"] not in (None, "hashing") and base in per_q:
            r["vs_hashing"] = {k: _paired(m[k], per_q[base][k], n_boot, seed) for k in m}
    lab = np.nan_to_num(y, nan=0.0)
    out = {
        "setting": name,
        "n_models": len(gt.models),
        "test_informative": float(np.mean((lab.max(axis=1) > 0) & (lab.min(axis=1) < 1))),
        "n": {k: len(v) for k, v in split.items()},
        "n_questions_in_pool": len(gt.table.query_ids),
        "seed": seed,
        "mmlu_frac": mmlu_frac if SETTINGS[name][0] == "mmlu-pro" else 1.0,
        "results": results,
        "encode": timing,
        "wall_s": time.time() - t_start,
    }
    print_setting(out)
    return out


def _chosen(s: Scorer) -> dict[str, Any]:
    return {"alpha": s.alpha} if s.head == "logistic" else {"hidden": s.hidden}


def _paired(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> list[float]:
    ok = ~(np.isnan(a) | np.isnan(b))
    return list(paired_bootstrap(a[ok], b[ok], n_boot=n_boot, seed=seed))


def _fmt_diff(d: list[float] | None, lower_better: bool = False) -> str:
    if d is None:
        return "-"
    mean, lo, hi = d
    sig = lo > 0 or hi < 0
    good = (mean < 0) if lower_better else (mean > 0)
    mark = ("[green]" if good else "[red]") if sig else ""
    return f"{mark}{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]{'[/]' if mark else ''}"


COLUMNS = (
    ("top1", "top-1 hit"),
    ("top3", "top-3 hit"),
    ("select", "select"),
    ("vote", "vote"),
    ("brier", "Brier"),
    ("ece", "ECE"),
)


def print_setting(out: dict[str, Any]) -> None:
    n = out["n"]
    t = Table(
        title=f"{out['setting']}: {out['n_models']} models; train/val/test {n['train']}/"
        f"{n['validation']}/{n['test']} queries (split_ids seed {out['seed']}); test figures",
        caption="hit: any tied-best model counts; diffs = paired bootstrap 95% CI over test "
        "queries (green/red: CI excludes 0)",
    )
    t.add_column("encoder/head")
    for _, c in COLUMNS:
        t.add_column(c, justify="right")
    for c in ("top-1 - prior", "top-1 - hashing", "vote - prior", "Brier - hashing"):
        t.add_column(c, justify="right")
    for key, r in out["results"].items():
        vp, vh = r.get("vs_prior", {}), r.get("vs_hashing", {})
        t.add_row(
            key,
            *[f"{r[k]:.3f}" if k in r else "-" for k, _ in COLUMNS],
            _fmt_diff(vp.get("top1")),
            _fmt_diff(vh.get("top1")),
            _fmt_diff(vp.get("vote")),
            _fmt_diff(vh.get("brier"), lower_better=True),
        )
    console.print(t)


def markdown(all_out: list[dict[str, Any]], fresh: dict[str, Any]) -> str:
    lines = [
        "# Routing scorer encoders on ground truth (hashing vs MiniLM vs mpnet)",
        "",
        "Commands: " + "; ".join(sorted({f"`{o['command']}`" for o in all_out})) + ". "
        "Test split by question id (`split_ids`, 0.5/0.2/0.3); heads tuned "
        "on validation; figures on test. Hit: any tied-best model counts. Differences: paired "
        "bootstrap 95% CI over test queries; **bold** = CI excludes 0.",
        "",
    ]

    def cell(d: list[float] | None) -> str:
        if d is None:
            return "-"
        s = f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
        return f"**{s}**" if d[1] > 0 or d[2] < 0 else s

    for out in all_out:
        n = out["n"]
        lines += [
            f"## {out['setting']} ({out['n_models']} models; {n['train']}/{n['validation']}/"
            f"{n['test']} train/val/test of {out['n_questions_in_pool']} questions; "
            f"{100 * out['test_informative']:.0f}% of test queries have both right and wrong "
            "models)",
            "",
            "| encoder/head | chosen | top-1 | top-3 | select | vote | Brier | ECE | top-1 - prior "
            "| top-1 - hashing | top-3 - hashing | vote - prior | vote - hashing | Brier - hashing |",
            "|" + "---|" * 14,
        ]
        for key, r in out["results"].items():
            vp, vh = r.get("vs_prior", {}), r.get("vs_hashing", {})
            lines.append(
                f"| {key} | {json.dumps(r.get('chosen', '')) if r.get('chosen') else '-'} | "
                + " | ".join(f"{r[k]:.3f}" if k in r else "-" for k, _ in COLUMNS)
                + f" | {cell(vp.get('top1'))} | {cell(vh.get('top1'))} | {cell(vh.get('top3'))}"
                f" | {cell(vp.get('vote'))} | {cell(vh.get('vote'))} | {cell(vh.get('brier'))} |"
            )
        lines.append("")
    lines += [
        "## Encode time (CPU, 2 shared cores)",
        "",
        "Cache misses = texts run through the model in the run that produced the setting; "
        "fresh = an uncached timing of the same test queries for every encoder, model load "
        "excluded.",
        "",
        "| setting | encoder | texts | cache misses | model s | ms/query (misses) |",
        "|---|---|---|---|---|---|",
    ]
    for out in all_out:
        for name, t in out.get("encode", {}).items():
            per = 1e3 * t["model_s"] / t["misses"] if t["misses"] else float("nan")
            lines.append(
                f"| {out['setting']} | {name} | {t['texts']} | {t['misses']} | "
                f"{t['model_s']:.1f} | {per:.1f} |"
            )
    lines += ["", "| encoder | fresh sample ms/query |", "|---|---|"]
    for name, t in fresh.items():
        lines.append(f"| {name} | {t.get('ms_per_query', float('nan')):.1f} (n={t.get('n', 0)}) |")
    lines += ["", "## Differences whose 95% CI excludes 0", ""]
    for out in all_out:
        for key, r in out["results"].items():
            for vs in ("vs_prior", "vs_hashing"):
                for metric, d in r.get(vs, {}).items():
                    if d[1] > 0 or d[2] < 0:
                        lines.append(
                            f"- {out['setting']}: {key} {metric} {vs.replace('_', ' ')} "
                            f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
                        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pools", default=",".join(SETTINGS), help=f"of {', '.join(SETTINGS)}")
    ap.add_argument("--encoders", default=",".join(ENCODERS), help=f"of {', '.join(ENCODERS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=2000, help="paired bootstrap resamples")
    ap.add_argument("--no-vote", action="store_true", help="skip RouteMoA vote accuracy")
    ap.add_argument(
        "--time-sample", type=int, default=32, help="queries timed uncached per encoder (0 = off)"
    )
    ap.add_argument(
        "--mmlu-frac",
        type=float,
        default=0.1,
        help="share of MMLU-Pro questions used (1 = all 8,966; mpnet encoding is the slow part)",
    )
    ap.add_argument("--out", type=Path, default=OUT / "bench_route_encoders")
    ap.add_argument(
        "--fresh", action="store_true", help="drop settings kept from earlier runs in --out"
    )
    args = ap.parse_args()
    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    cmd = " ".join(["benchmarks/bench_route_encoders.py", *sys.argv[1:]])
    new = []
    for p in [p.strip() for p in args.pools.split(",") if p.strip()]:
        out = run_setting(p, encoders, args.seed, args.n_boot, not args.no_vote, args.mmlu_frac)
        new.append({**out, "command": cmd})
    path_json = args.out.with_suffix(".json")
    old = json.loads(path_json.read_text()) if path_json.exists() and not args.fresh else {}
    by_name = {o["setting"]: o for o in old.get("settings", [])}
    by_name.update({o["setting"]: o for o in new})  # settings not rerun are kept
    merged = [by_name[k] for k in SETTINGS if k in by_name]
    fresh = dict(old.get("fresh_timing", {}))
    if args.time_sample:
        gt, split = setting_split(new[0]["setting"], args.seed, args.mmlu_frac)
        sample = [gt.table.texts[i] for i in gt.rows(split["test"][: args.time_sample])]
        for e in encoders:
            fresh[e] = time_sample(e, sample)
        console.print(f"fresh encode timing: {json.dumps(fresh)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    path_json.write_text(
        json.dumps({"settings": merged, "fresh_timing": fresh}, indent=1, default=float)
    )
    args.out.with_suffix(".md").write_text(markdown(merged, fresh))
    console.print(f"results: {path_json}, {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
