"""`moagraph route train` / `moagraph route eval`: the per-query router."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from moagraph.cli import app
from moagraph.cli._errors import fail
from moagraph.cli._options import deprecated, opt

route_app = typer.Typer(
    help="Per-query routing (RouteMoA and baselines): train the scorer, evaluate.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(route_app, name="route")
console = Console()

POLICIES = "dense,smoa,sparse,single,random,threshold,routemoa,routemoa-1r"
GT_POLICIES = "dense,smoa,sparse,single,random,threshold,oracle,routemoa,routemoa-1r"


def _pool_and_labels(pool: str | None, data: str | None) -> tuple[Any, Any]:
    from moagraph.models.pool import load_pool
    from moagraph.pools import resolve_pool
    from moagraph.route.data import alpaca_eval_pool, labels_for_pool, load_alpaca_eval

    table = load_alpaca_eval(data)
    p = load_pool(resolve_pool(pool)) if pool is not None else alpaca_eval_pool()
    return p, labels_for_pool(table, p)


def _pool_and_labels_any(pool: str | None, data: str | None) -> tuple[Any, Any, Any]:
    """(pool, label table, GroundTruth or None): a recorded ground-truth pool's own scores,
    else the AlpacaEval labels from ``--data``."""
    from moagraph.route.gt import is_ground_truth_pool, load_ground_truth

    if pool is not None and is_ground_truth_pool(pool):
        if data is not None:
            raise ValueError(
                f"--data: pool {pool!r} carries its own labels (recorded scores); drop --data"
            )
        gt = load_ground_truth(pool)
        return gt.pool, gt.table, gt
    p, table = _pool_and_labels(pool, data)
    return p, table, None


def _data(pool: str | None, data: str | None, data_dir: Path | None) -> str | None:
    """--data, else --data-dir's alpaca_eval folder (None: the shared data's); a
    ground-truth pool carries its own labels and reads neither."""
    from moagraph.route.gt import is_ground_truth_pool

    if data is None and data_dir is not None and not (pool and is_ground_truth_pool(pool)):
        return str(data_dir / "alpaca_eval")
    return data


DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="AlpacaEval label folder (default: the shared data's alpaca_eval); not with a "
        "ground-truth pool, which carries its own labels.",
    ),
]
RouterPool = Annotated[
    str | None,
    opt(
        "--pool",
        "Default: the bundled alpaca_eval pool (21 models). Ground-truth pools (zeroeval-math, "
        "zeroeval-gsm8k, mmlu-pro) bring their own 0/1 labels.",
    ),
]
EmbedCache = Annotated[Path | None, opt("--embed-cache")]
OldCache = Annotated[
    Path | None, typer.Option("--cache", hidden=True, help="Deprecated: --embed-cache.")
]


def _embed_cache(new: Path | None, old: Path | None) -> Path | None:
    if old is not None:
        deprecated(
            "route --cache (an embedding cache)", "--embed-cache (--cache is the call cache)"
        )
    return new or old


@route_app.command("train")
def train(
    data: DataOpt = None,
    data_dir: Annotated[
        Path | None, opt("--data-dir", "--data defaults to its alpaca_eval folder.")
    ] = None,
    pool: RouterPool = None,
    encoder: Annotated[
        str,
        typer.Option(
            "--encoder",
            help="Query encoder: minilm | mpnet (sentence embeddings) | hashing (fast, no model).",
        ),
    ] = "minilm",
    head: Annotated[
        str,
        typer.Option(
            "--head",
            help="auto (logistic on ground-truth pools, else ridge) | ridge | mlp | logistic | routerdc",
        ),
    ] = "auto",
    alpha: Annotated[float, typer.Option("--alpha", help="Ridge regularisation.")] = 10.0,
    test_frac: Annotated[
        float, typer.Option("--test-frac", help="Held-out share of queries (0 = train on all).")
    ] = 0.3,
    val_frac: Annotated[
        float, typer.Option("--val-frac", help="Validation share (ground-truth pools).")
    ] = 0.2,
    seed: Annotated[int, opt("--seed", "Splits the queries and seeds the head.")] = 0,
    tie_tol: Annotated[
        float, typer.Option("--tie-tol", help="Labels within this of the best count as best.")
    ] = 0.0,
    out: Annotated[Path, opt("--out", "The trained scorer file.")] = Path("router.pt"),
    plot: Annotated[Path | None, opt("--plot", "Calibration of the held-out predictions.")] = None,
    embed_cache: EmbedCache = None,
    cache: OldCache = None,
) -> None:
    """Train the scorer on per-query labels; print held-out hit rates and calibration.

    On a ground-truth pool (``--pool zeroeval-math``, ``zeroeval-gsm8k``, ``mmlu-pro``) the
    labels are the pool's recorded 0/1 scores and the queries are split by question id
    with ``split_ids`` into train / validation / test (``--val-frac``, ``--test-frac``);
    the seed and the train ids are stored in the router file. ``--test-frac 0`` trains on
    everything (no held-out figures are printed)."""
    rep = None
    cache = _embed_cache(embed_cache, cache)
    try:
        from moagraph.route.encoders import make_encoder
        from moagraph.route.evaluate import evaluate_scorer, plot_calibration
        from moagraph.route.scorer import Scorer

        if not 0.0 <= test_frac < 1.0 or not 0.0 <= val_frac < 1.0 or test_frac + val_frac >= 1.0:
            raise ValueError(
                f"--test-frac {test_frac} / --val-frac {val_frac}: each in [0, 1), sum < 1"
            )
        p, table, gt = _pool_and_labels_any(pool, _data(pool, data, data_dir))
        if gt is not None:
            sp = gt.split(seed, (1.0 - val_frac - test_frac, val_frac, test_frac))
            tr, te = gt.table.subset(gt.rows(sp["train"])), gt.table.subset(gt.rows(sp["test"]))
            split_meta = {
                "by": "split_ids(question id)",
                "seed": seed,
                "val_frac": val_frac,
                "test_frac": test_frac,
                "n_validation": len(sp["validation"]),
            }
        elif test_frac > 0:
            tr, te = table.split(test_frac, seed)
            split_meta = {"test_frac": test_frac, "seed": seed}
        else:
            tr, te = table, table.subset([])
            split_meta = {"test_frac": 0.0, "seed": seed}
        if head == "auto":
            head = "logistic" if gt is not None else "ridge"
        with console.status(f"encoding {len(table)} queries with {encoder} and fitting the head"):
            s = Scorer(
                make_encoder(encoder, cache_path=cache),
                table.models,
                head=head,  # type: ignore[arg-type]
                alpha=alpha,
                seed=seed,
            )
            s.fit(tr.texts, tr.labels, p)
            s.meta["split"] = split_meta
            s.meta["train_ids"] = list(tr.query_ids)
            s.meta["labels"] = "pool recorded score" if gt is not None else "alpaca_eval --data"
            if len(te):
                rep = evaluate_scorer(s, tr, te, tie_tol=tie_tol, seed=seed)
                s.meta["report"] = {
                    "rows": rep.rows,
                    "mse": rep.calibration.mse,
                    "ece": rep.calibration.ece,
                }
        s.save(out)
    except ValueError as e:
        raise fail(e) from None
    if rep is None:
        console.print(f"trained on all {len(tr)} queries (--test-frac 0): no held-out figures")
    else:
        console.print(
            rep.table(
                f"Scorer hit rate on {rep.n_test} held-out queries ({rep.n_models} models, {rep.n_train} train; "
                "any tied-best model is a hit)"
            )
        )
        console.print(rep.calibration_line())
    if plot is not None and rep is not None:
        console.print(f"calibration plot: {plot_calibration(rep, plot)}")
    console.print(f"saved {out} (pool {p.name!r}, {len(p.models)} models)")


def held_out(scorer: Any, table: Any, gt: Any) -> tuple[Any, str]:
    """The queries a router file was not trained on, and a sentence saying which they are.

    Ground-truth pools: the test part of the stored ``split_ids`` split; always minus the
    stored train ids. Refuses when nothing held out is left (e.g. ``--test-frac 0``)."""
    split = scorer.meta.get("split", {})
    train_ids = set(scorer.meta.get("train_ids") or [])
    if gt is not None and split.get("by", "").startswith("split_ids"):
        tf, vf = float(split.get("test_frac", 0.3)), float(split.get("val_frac", 0.2))
        if tf <= 0:
            raise ValueError(
                "this router was trained with --test-frac 0 (on every query of the pool): "
                "there are no held-out queries to report; retrain with --test-frac 0.3"
            )
        part = gt.split(int(split["seed"]), (1.0 - vf - tf, vf, tf))["test"]
        ids = [q for q in part if q not in train_ids]
        how = f"test part of split_ids(seed={split['seed']}, test_frac={tf})"
    elif train_ids:
        ids = [q for q in table.query_ids if q not in train_ids]
        how = f"every query not among the router's {len(train_ids)} train ids"
    elif "test_frac" in split and float(split["test_frac"]) > 0:
        _, te0 = table.split(float(split["test_frac"]), int(split.get("seed", 0)))
        ids = list(te0.query_ids)
        how = (
            f"old router file without train ids: the stored split (test_frac={split['test_frac']}, "
            f"seed={split.get('seed', 0)}) re-applied to these labels"
        )
    else:
        raise ValueError(
            "the router file records no split or train ids; cannot tell held-out queries apart"
        )
    overlap = [q for q in ids if q in train_ids]
    if overlap:
        raise ValueError(
            f"{len(overlap)} of the chosen queries were used to train this router; refusing to "
            "report them as held-out"
        )
    if not ids:
        raise ValueError(
            "no held-out queries: every query of these labels was used to train this router"
        )
    pos = {q: i for i, q in enumerate(table.query_ids)}
    return table.subset([pos[q] for q in ids if q in pos]), how


def _print_gt(res: list[Any]) -> None:
    from moagraph.route.gt_eval import FINAL_ANSWER_NOTE

    ref = next((r for r in res if r.policy == "dense"), None)
    t = Table(
        title="Routing on a ground-truth replay pool (held-out queries)", caption=FINAL_ANSWER_NOTE
    )
    for c in (
        "policy",
        "n",
        "vote acc",
        "select acc",
        "FLOPs vs dense",
        "$ / query",
        "calls",
        "rounds",
    ):
        t.add_column(c, justify="left" if c == "policy" else "right")
    for r in res:
        m = r.mean
        rel = f"{100 * m['flops'] / ref.mean['flops']:.1f}%" if ref is not None else "-"
        t.add_row(
            r.policy,
            str(r.n),
            f"{m['vote']:.3f}",
            f"{m['select']:.3f}",
            rel,
            f"{m['dollars']:.5f}",
            f"{m['calls']:.1f}",
            f"{m['rounds']:.2f}",
        )
    console.print(t)


@route_app.command("eval")
def evaluate(
    router: Annotated[Path, opt("--router")],
    data: DataOpt = None,
    data_dir: Annotated[
        Path | None, opt("--data-dir", "--data defaults to its alpaca_eval folder.")
    ] = None,
    pool: RouterPool = None,
    policies: Annotated[
        str | None,
        typer.Option(
            "--policies",
            help=f"Comma-separated; default {POLICIES} (ground-truth pools: {GT_POLICIES}).",
        ),
    ] = None,
    k: Annotated[
        int, typer.Option("--k", min=1, help="Models per layer (routemoa, sparse, random).")
    ] = 3,
    layers: Annotated[
        int, typer.Option("--layers", min=1, help="Answer rounds before the aggregator (paper: 3).")
    ] = 3,
    plot: Annotated[Path | None, opt("--plot", "Quality vs cost per policy.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write per-policy results as JSON here.")
    ] = None,
    embed_cache: EmbedCache = None,
    cache: OldCache = None,
) -> None:
    """Evaluate policies offline on the held-out queries of the replay labels."""
    cache = _embed_cache(embed_cache, cache)
    try:
        from moagraph.models.runtime import PoolRuntime
        from moagraph.route import build_policies
        from moagraph.route.replay_eval import evaluate_policies, plot_results, results_table
        from moagraph.route.scorer import Scorer

        p, table, gt = _pool_and_labels_any(pool, _data(pool, data, data_dir))
        s = Scorer.load(router, pool=p, cache_path=cache)
        te, how = held_out(s, table, gt)
        seed = int(s.meta.get("split", {}).get("seed", 0))
        names = [
            n.strip()
            for n in (policies or (GT_POLICIES if gt is not None else POLICIES)).split(",")
            if n.strip()
        ]
        labels = {
            q: {m: float(v) for m, v in zip(te.models, row) if v == v}
            for q, row in zip(te.query_ids, te.labels)
        }
        pols = build_policies(names, s, PoolRuntime(p), k, layers, seed, labels=labels)
        console.print(f"scoring {len(te)} of {len(table)} queries: {how}")
        from rich.progress import Progress

        if gt is not None:
            from moagraph.route.gt_eval import evaluate_gt

            with Progress(console=console, transient=True) as prog:
                task = prog.add_task("simulating", total=len(te) * len(pols))
                gres = evaluate_gt(
                    pols, gt, gt.rows(te.query_ids), progress=lambda: prog.advance(task)
                )
            _print_gt(gres)
            if json_out is not None:
                json_out.write_text(
                    json.dumps([{"policy": r.policy, "n": r.n, **r.mean} for r in gres], indent=2)
                )
                console.print(f"results: {json_out}")
            return
        with Progress(console=console, transient=True) as prog:
            task = prog.add_task("planning", total=len(te) * len(pols))
            res = evaluate_policies(pols, te, p, progress=lambda: prog.advance(task))
    except ValueError as e:
        raise fail(e) from None
    console.print(results_table(res))
    dt = Table(title="Router decision time per query (no LLM calls)")
    for c in (
        "policy",
        "encoder p50/p99 ms",
        "head p50/p99 ms",
        "policy p50/p99 ms",
        "total p50/p99 ms",
    ):
        dt.add_column(c, justify="left" if c == "policy" else "right")
    for r in res:
        d = r.decision_ms

        def f(key: str, d: dict[str, float] = d) -> str:
            return f"{d[key + '_p50']:.3f} / {d[key + '_p99']:.3f}" if key + "_p50" in d else "-"

        dt.add_row(r.policy, f("encode_ms"), f("head_ms"), f("policy_ms"), f("total_ms"))
    console.print(dt)
    if plot is not None:
        console.print(f"plot: {plot_results(res, plot)}")
    if json_out is not None:
        json_out.write_text(
            json.dumps(
                [{k: v for k, v in r.__dict__.items() if k != "per_query"} for r in res], indent=2
            )
        )
        console.print(f"results: {json_out}")
