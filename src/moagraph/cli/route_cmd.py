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
GT_POLICIES = (
    "routemoa,routemoa-noevidence,routemoa-1r,sparse,smoa,dense,single,random,threshold,oracle"
)


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


def held_out(
    scorer: Any, table: Any, gt: Any, ids: list[str] | None = None, source: str = ""
) -> tuple[Any, Any]:
    """The chosen queries (``ids``, default every query of the labels) minus the ones the
    router was trained on (:func:`moagraph.route.evaluator.select_ids`): the label table
    of what is left and the :class:`~moagraph.route.evaluator.EvalIds` saying how many
    were dropped. An old router file without train ids re-applies its stored split."""
    from moagraph.route.evaluator import select_ids

    split = scorer.meta.get("split", {})

    def old_split() -> list[str]:
        if "test_frac" in split and float(split["test_frac"]) > 0:
            _, te0 = table.split(float(split["test_frac"]), int(split.get("seed", 0)))
            return list(te0.query_ids)
        raise ValueError(
            "the router file records no split or train ids; cannot tell held-out queries apart"
        )

    sel = select_ids(scorer, list(table.query_ids), ids, source, fallback=old_split)
    pos = {q: i for i, q in enumerate(table.query_ids)}
    return table.subset([pos[q] for q in sel.ids]), sel


def _read_ids(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    if not path.exists():
        raise ValueError(f"--ids {path} does not exist (one query id a line)")
    ids = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not ids:
        raise ValueError(f"--ids {path} holds no ids")
    return ids


@route_app.command("eval")
def evaluate(
    router: Annotated[Path, opt("--router")],
    data: DataOpt = None,
    data_dir: Annotated[
        Path | None, opt("--data-dir", "--data defaults to its alpaca_eval folder.")
    ] = None,
    pool: RouterPool = None,
    ids: Annotated[
        Path | None,
        typer.Option(
            "--ids",
            help="Evaluate on these query ids only (a file, one id a line); default every "
            "query of --pool. Ids the router was trained on are dropped (and counted).",
        ),
    ] = None,
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
    """Evaluate policies offline on every chosen query the router was not trained on.

    Any pool works, an external test pool (a pool folder) included; a router trained on
    a subset of the pool's models (e.g. the benchmark's mmlu-pro-small) is evaluated on
    those models. On a ground-truth pool every policy is graded by the task's grader,
    the baselines (best single model, top-k vote) are chosen on the router's training
    ids, and accuracies come with 95% CIs and paired differences."""
    cache = _embed_cache(embed_cache, cache)
    try:
        from moagraph.models.runtime import PoolRuntime
        from moagraph.route import build_policies
        from moagraph.route.replay_eval import evaluate_policies, plot_results, results_table
        from moagraph.route.scorer import Scorer

        p, table, gt = _pool_and_labels_any(pool, _data(pool, data, data_dir))
        s = Scorer.load(router, cache_path=cache)
        names_saved = list(s.fingerprint.get("names") or [])
        if gt is not None and names_saved and set(names_saved) < set(gt.models):
            gt = gt.subset_models([m for m in gt.models if m in set(names_saved)])
            p, table = gt.pool, gt.table
            console.print(f"the router covers {len(gt.models)} of the pool's models: using those")
        s.check_pool(p)
        chosen = _read_ids(ids)
        source = f"pool {p.name}" + (f", --ids {ids}" if ids is not None else "")
        seed = int(s.meta.get("split", {}).get("seed", 0))
        default = GT_POLICIES if gt is not None else POLICIES
        names = [n.strip() for n in (policies or default).split(",") if n.strip()]
        from rich.progress import Progress

        if gt is not None:
            from moagraph.route.evaluator import evaluate_router

            with Progress(console=console, transient=True) as prog:
                n_ids = len(chosen) if chosen is not None else len(gt.table)
                task = prog.add_task("simulating", total=n_ids * len(names))
                ev = evaluate_router(
                    s,
                    gt,
                    chosen,
                    names,
                    k=k,
                    layers=layers,
                    seed=seed,
                    source=source,
                    progress=lambda: prog.advance(task),
                )
            console.print(ev.ids.line())
            console.print(ev.table())
            for line in ev.summary_lines():
                console.print(line)
            if json_out is not None:
                json_out.write_text(json.dumps(ev.to_dict(), indent=2, default=float))
                console.print(f"results: {json_out}")
            return
        te, sel = held_out(s, table, gt, chosen, source)
        labels = {
            q: {m: float(v) for m, v in zip(te.models, row) if v == v}
            for q, row in zip(te.query_ids, te.labels)
        }
        pols = build_policies(names, s, PoolRuntime(p), k, layers, seed, labels=labels)
        console.print(sel.line())
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
