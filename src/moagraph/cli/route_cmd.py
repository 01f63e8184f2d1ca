"""`moagraph route train` / `moagraph route eval`: the per-query router."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from moagraph.cli import app
from moagraph.cli._errors import fail

route_app = typer.Typer(help="Per-query routing (RouteMoA and baselines): train the scorer, evaluate.",
                        no_args_is_help=True)
app.add_typer(route_app, name="route")
console = Console()

POLICIES = "dense,sparse,single,random,threshold,routemoa,routemoa-1L"



def _pool_and_labels(pool: str | None, data: str | None) -> tuple[Any, Any]:
    from moagraph.models.pool import load_pool
    from moagraph.pools import resolve_pool
    from moagraph.route.data import alpaca_eval_pool, labels_for_pool, load_alpaca_eval

    table = load_alpaca_eval(data)
    p = load_pool(resolve_pool(pool)) if pool is not None else alpaca_eval_pool()
    return p, labels_for_pool(table, p)


@route_app.command("train")
def train(
    data: str = typer.Option(None, "--data", help="AlpacaEval label folder (default: shared data)."),
    pool: str = typer.Option(None, "--pool", help="Pool file/name; default: the bundled `alpaca_eval` pool (21 models)."),
    encoder: str = typer.Option("minilm", "--encoder", help="minilm | hashing"),
    head: str = typer.Option("ridge", "--head", help="ridge | mlp"),
    alpha: float = typer.Option(10.0, "--alpha", help="Ridge regularisation."),
    test_frac: float = typer.Option(0.25, "--test-frac", help="Held-out share of queries."),
    seed: int = typer.Option(0, "--seed"),
    tie_tol: float = typer.Option(0.0, "--tie-tol", help="Labels within this of the best count as best."),
    out: Path = typer.Option(Path("router.pt"), "-o", "--out", help="Where to save the scorer."),
    plot: Path = typer.Option(None, "--plot", help="Write a calibration PNG here."),
    cache: Path = typer.Option(None, "--cache", help="Embedding cache (SQLite)."),
) -> None:
    """Train the scorer on per-query labels; print held-out hit rates and calibration."""
    try:
        from moagraph.route.encoders import make_encoder
        from moagraph.route.evaluate import evaluate_scorer, plot_calibration
        from moagraph.route.scorer import Scorer

        p, table = _pool_and_labels(pool, data)
        tr, te = table.split(test_frac, seed)
        with console.status(f"encoding {len(table)} queries with {encoder} and fitting the head"):
            s = Scorer(make_encoder(encoder, cache_path=cache), table.models, head=head,  # type: ignore[arg-type]
                       alpha=alpha, seed=seed)
            s.fit(tr.texts, tr.labels, p)
            s.meta["split"] = {"test_frac": test_frac, "seed": seed}
            rep = evaluate_scorer(s, tr, te, tie_tol=tie_tol, seed=seed)
        s.meta["report"] = {"rows": rep.rows, "mse": rep.calibration.mse, "ece": rep.calibration.ece}
        s.save(out)
    except ValueError as e:
        raise fail(e) from None
    console.print(
        rep.table(f"Scorer hit rate on {rep.n_test} held-out queries ({rep.n_models} models, {rep.n_train} train)")
    )
    console.print(rep.calibration_line())
    if plot is not None:
        console.print(f"calibration plot: {plot_calibration(rep, plot)}")
    console.print(f"saved {out} (pool {p.name!r}, {len(p.models)} models)")


def build_policies(names: list[str], scorer: Any, runtime: Any, k: int, layers: int, seed: int) -> list[Any]:
    from moagraph.route.base import get_router_class

    out = []
    for n in names:
        if n == "routemoa-1L":
            out.append(get_router_class("routemoa")(scorer, runtime, name=n, k=k, max_layers=1))
        elif n == "routemoa":
            out.append(get_router_class("routemoa")(scorer, runtime, k=k, max_layers=layers))
        elif n in ("sparse", "random"):
            out.append(get_router_class(n)(runtime, scorer, k=k, layers=layers, **({"seed": seed} if n == "random" else {})))
        elif n == "dense":
            out.append(get_router_class(n)(runtime, scorer, layers=layers))
        else:
            out.append(get_router_class(n)(runtime, scorer))
    return out


@route_app.command("eval")
def evaluate(
    router: Path = typer.Option(..., "--router", help="Scorer file from `route train`."),
    data: str = typer.Option(None, "--data"),
    pool: str = typer.Option(None, "--pool"),
    policies: str = typer.Option(POLICIES, "--policies", help="Comma-separated."),
    k: int = typer.Option(3, "--k", help="Models per layer (routemoa, sparse, random)."),
    layers: int = typer.Option(2, "--layers", help="Answering layers before the aggregator."),
    plot: Path = typer.Option(None, "--plot", help="Write a quality-vs-cost PNG here."),
    json_out: Path = typer.Option(None, "--json", help="Write per-policy results here."),
    cache: Path = typer.Option(None, "--cache", help="Embedding cache (SQLite)."),
) -> None:
    """Evaluate policies offline on the held-out queries of the replay labels."""
    try:
        from moagraph.models.runtime import PoolRuntime
        from moagraph.route.replay_eval import evaluate_policies, plot_results, results_table
        from moagraph.route.scorer import Scorer

        p, table = _pool_and_labels(pool, data)
        s = Scorer.load(router, pool=p, cache_path=cache)
        split = s.meta.get("split", {"test_frac": 0.25, "seed": 0})
        _, te = table.split(split["test_frac"], split["seed"])
        names = [n.strip() for n in policies.split(",") if n.strip()]
        pols = build_policies(names, s, PoolRuntime(p), k, layers, split["seed"])
        from rich.progress import Progress

        with Progress(console=console, transient=True) as prog:
            task = prog.add_task("planning", total=len(te) * len(pols))
            res = evaluate_policies(pols, te, p, progress=lambda: prog.advance(task))
    except ValueError as e:
        raise fail(e) from None
    console.print(results_table(res))
    dt = Table(title="Router decision time per query (no LLM calls)")
    for c in ("policy", "encoder p50/p99 ms", "head p50/p99 ms", "policy p50/p99 ms", "total p50/p99 ms"):
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
        json_out.write_text(json.dumps([{k: v for k, v in r.__dict__.items() if k != "per_query"}
                                        for r in res], indent=2))
        console.print(f"results: {json_out}")
