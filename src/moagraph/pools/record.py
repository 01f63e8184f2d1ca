"""Record a replay pool: run every model of a live pool on a task, several samples each.

Why: graph search and router training evaluate thousands of calls; with a
recording (S samples per model and query) vote graphs and first-layer nodes
replay exactly and for free. Every call goes through
:meth:`PoolRuntime.complete`, so a local GGUF model and any OpenAI-compatible
endpoint record the same way.

Recording is append-only: each finished (model, query, sample) is one line
in ``records.partial.jsonl``, flushed and fsynced, so a killed recording
loses at most the call in flight and a rerun skips what is done. Finishing
merges everything into ``records.jsonl.gz`` and writes ``pool.yaml``
(``backend: replay``), ``queries.jsonl``, ``summary.json`` and ``README.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from moagraph._sqlite import private_umask
from moagraph.errors import ConfigError
from moagraph.models.base import SamplingParams, prompt_hash
from moagraph.models.pool import ModelSpec, Pool
from moagraph.models.redact import redact_url
from moagraph.models.runtime import PoolRuntime
from moagraph.pools.importers import write_pool_dir
from moagraph.pools.schema import (
    QUERIES_FILE,
    RECORDS_FILE,
    SUMMARY_FILE,
    ModelSummary,
    PoolSummary,
    QueryRecord,
    ReplayRecord,
    read_queries,
    read_records,
    write_jsonl,
)
from moagraph.tasks.base import Example, Task

PARTIAL_FILE = "records.partial.jsonl"
STATE_FILE = "record_state.json"
QUERIES_PARTIAL_FILE = "queries.partial.jsonl"
NOTES_MARK = "<!-- notes: kept when the README is regenerated -->"


class RecordSettingsError(ConfigError):
    """A recording option is invalid; the message names the option."""


# What makes two pool entries of one name the same model for a resumed recording.
_IDENTITY = ("backend", "model", "base_url", "replay", "replay_model", "prompt_format")


class RecordSettings(BaseModel):
    """What to record. Stored in summary.json so a pool says how it was made."""

    task: str
    split: str = "test"
    n: int | None = Field(None, description="Number of queries (seeded sample); None = all.")
    seed: int = 0
    samples: int = Field(4, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(192, gt=0)
    concurrency: int = Field(4, gt=0)
    models: list[str] | None = Field(None, description="Subset of the pool's models; None = all.")


@dataclass
class RecordResult:
    out_dir: Path
    pool: Pool
    new_records: int
    skipped: int
    total_records: int
    wall_s: float
    models: list[ModelSummary]


def _reference_json(ref: Any) -> Any:
    try:
        json.dumps(ref)
        return ref
    except TypeError:
        return str(ref)


def _load_done(out: Path) -> list[ReplayRecord]:
    """Records already made (finished pool + partial appends), repairing a cut last line."""
    done: list[ReplayRecord] = []
    final = out / RECORDS_FILE
    if final.exists():
        done.extend(read_records(final))
    partial = out / PARTIAL_FILE
    if partial.exists():
        recs = read_records(partial, tolerate_truncated_tail=True)
        # Rewrite so the next append starts on a fresh line even if the last was cut short.
        tmp = partial.with_name(partial.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(r.model_dump_json(exclude_none=True) + "\n" for r in recs)
        tmp.replace(partial)
        done.extend(recs)
    dedup: dict[tuple[str, str, int], ReplayRecord] = {}
    for r in done:
        dedup.setdefault(r.key, r)
    return list(dedup.values())


def _existing_queries(out: Path) -> list[QueryRecord]:
    found: list[QueryRecord] = []
    for name in (QUERIES_FILE, QUERIES_PARTIAL_FILE):
        if (out / name).exists():
            found = _merge_queries(found, read_queries(out / name))
    return found


def _merge_queries(old: list[QueryRecord], new: list[QueryRecord]) -> list[QueryRecord]:
    merged = {q.query_id: q for q in old}
    for q in new:
        merged.setdefault(q.query_id, q)
    return list(merged.values())


def _identity(spec: ModelSpec) -> dict[str, Any]:
    ident = {k: getattr(spec, k) for k in _IDENTITY}
    if ident.get("base_url"):
        ident["base_url"] = redact_url(ident["base_url"])
    return ident


def _check_same_queries(out: Path, examples: list[Example], settings: RecordSettings) -> None:
    """Every query already in ``out`` must be one of this run's, with the same question and
    reference. Otherwise a resume would mix two samples of queries (another --n, a changed
    data set) into one pool; a larger sample that contains the recorded one is fine."""
    known = _existing_queries(out)
    if not known:
        return
    ours = {ex.id: ex for ex in examples}
    outside = [q.query_id for q in known if q.query_id not in ours]
    if outside:
        raise RecordSettingsError(
            f"--n/--seed/--split: {out} already holds {len(known)} queries, {len(outside)} of "
            f"which this run would not draw (e.g. {outside[0]!r}; this run draws {len(ours)} "
            f"with --n {settings.n} --seed {settings.seed}): resuming would mix two samples. "
            "Resume with the original --n, --seed and data, or record into a new folder (--out)"
        )
    changed = [
        q.query_id
        for q in known
        if q.question != ours[q.query_id].question
        or json.dumps(q.reference, sort_keys=True, default=str)
        != json.dumps(_reference_json(ours[q.query_id].reference), sort_keys=True, default=str)
    ]
    if changed:
        raise RecordSettingsError(
            f"--task data: {len(changed)} queries of {out} were recorded with another question "
            f"or reference than the data has now (e.g. {changed[0]!r}): the data set changed "
            "under the same ids. Resume with the original data (--data-dir / "
            "$MOAGRAPH_DATA_DIR), or record into a new folder (--out)"
        )


def _read_state(out: Path) -> dict[str, Any]:
    p = out / STATE_FILE
    if p.exists():
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def _write_state(out: Path, state: dict[str, Any]) -> None:
    tmp = out / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(out / STATE_FILE)


def replay_spec(spec: ModelSpec) -> ModelSpec:
    """The replay twin of a live model: same size and prices, recorded provenance in extra."""
    live = {"backend": spec.backend, "model": spec.endpoint_model}
    if spec.base_url:  # never a password (http://user:pass@host): the pool is shared
        live["base_url"] = redact_url(spec.base_url)
    return spec.model_copy(
        update={
            "backend": "replay",
            "replay": RECORDS_FILE,
            "model": "",
            "base_url": None,
            "api_key_env": None,
            "ray": None,  # a recording replays locally; place it with `ray:` again if wanted
            "extra": {**spec.extra, "recorded_from": live},
        }
    )


async def record_pool(
    pool: Pool,
    task: Task,
    out_dir: str | Path,
    settings: RecordSettings,
    *,
    runtime: PoolRuntime | None = None,
    show_progress: bool = True,
    pool_name: str | None = None,
) -> RecordResult:
    """Record (or resume recording) ``settings.samples`` samples of every model on the task.

    What it creates is private (files 0600, folders 0700: umask 077 while it runs), since
    a recording holds prompts, answers and endpoints; ``chmod`` it to share it."""
    with private_umask():
        return await _record_pool(
            pool,
            task,
            out_dir,
            settings,
            runtime=runtime,
            show_progress=show_progress,
            pool_name=pool_name,
        )


async def _record_pool(
    pool: Pool,
    task: Task,
    out_dir: str | Path,
    settings: RecordSettings,
    *,
    runtime: PoolRuntime | None,
    show_progress: bool,
    pool_name: str | None,
) -> RecordResult:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = settings.models or pool.names
    for m in names:
        if m not in pool:
            raise RecordSettingsError(
                f"--model {m!r}: not in pool {pool.name!r}; known: {', '.join(pool.names)}"
            )
    if any(pool[m].backend == "replay" for m in names):
        bad = [m for m in names if pool[m].backend == "replay"]
        raise RecordSettingsError(
            f"--pool: models {', '.join(bad)} already replay a recording; record from a live pool "
            "(backend openai or llamacpp)"
        )
    examples: list[Example] = task.load(settings.split, settings.n, settings.seed)
    if not examples:
        raise RecordSettingsError(
            f"--task {settings.task}: split {settings.split!r} has no examples"
        )
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        raise RecordSettingsError(f"--task {settings.task}: example ids are not unique")

    state = _read_state(out)
    prev = state.get("settings")
    if prev is not None:
        # seed: picks the queries and seeds sample k with seed+k, so a resume under another
        # seed would mix two samples of queries (and of answers) in one recording.
        for k in ("task", "split", "seed", "temperature", "top_p", "max_tokens"):
            if k in prev and prev.get(k) != getattr(settings, k):
                raise RecordSettingsError(
                    f"--{k.replace('_', '-')}: {out} was recorded with {k}={prev.get(k)!r}, "
                    f"this run asks for {getattr(settings, k)!r}; resume with "
                    f"--{k.replace('_', '-')} {prev.get(k)!r} or record into a new folder (--out)"
                )
    _check_same_queries(out, examples, settings)
    # A model name recorded before must still be the same model (endpoint, file, format),
    # or its old samples would be mixed with another model's under one name. URLs are
    # compared (and stored) without their credentials.
    identity = {m: _identity(pool[m]) for m in names}
    for m, old_id in (state.get("models") or {}).items():
        for k, old_v in old_id.items():
            if isinstance(old_v, str):
                old_v = redact_url(old_v)
            if m in identity and identity[m].get(k) != old_v:
                raise RecordSettingsError(
                    f"--pool: model {m!r} in {out} was recorded with {k}={old_v!r}, the pool "
                    f"now has {k}={identity[m].get(k)!r}; resume with the same pool file or "
                    "record into a new folder (--out)"
                )
    models_state = {**(state.get("models") or {}), **identity}
    queries = [
        QueryRecord(
            query_id=ex.id,
            question=ex.question,
            reference=_reference_json(ex.reference),
            task=task.name,
        )
        for ex in examples
    ]
    # Pending queries go to a side file: queries.jsonl lists only recorded ones,
    # so a pool interrupted mid-way never advertises queries it cannot answer.
    write_jsonl(out / QUERIES_PARTIAL_FILE, _merge_queries(_existing_queries(out), queries))

    done = _load_done(out)
    done_keys = {r.key for r in done}
    jobs = [
        (m, ex, s)
        for ex in examples
        for m in names
        for s in range(settings.samples)
        if (m, ex.id, s) not in done_keys
    ]
    skipped = len(examples) * len(names) * settings.samples - len(jobs)
    params = SamplingParams(
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_tokens=settings.max_tokens,
        seed=settings.seed,
    )
    own_runtime = runtime is None
    rt = runtime or PoolRuntime(pool)
    wall_before = float(state.get("wall_s", 0.0))
    _write_state(
        out, {"settings": settings.model_dump(), "wall_s": wall_before, "models": models_state}
    )
    t0 = time.perf_counter()
    partial = open(out / PARTIAL_FILE, "a", encoding="utf-8")  # noqa: SIM115 - one small append per call
    sem = asyncio.Semaphore(settings.concurrency)
    new: list[ReplayRecord] = []
    scores: dict[str, list[float]] = {
        m: [r.score for r in done if r.model == m and r.score is not None] for m in names
    }

    progress = None
    bar = None
    if show_progress and jobs:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("[bold]record[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        progress.start()
        bar = progress.add_task(f"{settings.task}", total=len(jobs))

    async def one(model: str, ex: Example, s: int) -> None:
        async with sem:
            messages = task.prompt(ex)
            c = await rt.complete(model, messages, params, sample_index=s, query_id=ex.id)
        score = float(task.grade(c.text, ex))
        rec = ReplayRecord(
            model=model,
            query_id=ex.id,
            sample=s,
            text=c.text,
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            latency_s=round(c.latency_s, 4),
            score=min(1.0, max(0.0, score)),
            task=task.name,
            prompt_hash=prompt_hash(messages),
            meta={"finish_reason": c.finish_reason, "seed": settings.seed + s},
        )
        partial.write(rec.model_dump_json(exclude_none=True) + "\n")
        partial.flush()
        os.fsync(partial.fileno())
        new.append(rec)
        scores[model].append(rec.score or 0.0)
        _write_state(
            out,
            {
                "settings": settings.model_dump(),
                "wall_s": wall_before + time.perf_counter() - t0,
                "models": models_state,
            },
        )
        if progress is not None and bar is not None:
            acc = " ".join(f"{m}={sum(v) / len(v):.2f}" for m, v in scores.items() if v)
            progress.update(bar, advance=1, description=f"{settings.task} acc {acc}")

    try:
        # Queries in order: an interrupted recording holds whole queries first.
        await asyncio.gather(*(one(m, ex, s) for m, ex, s in jobs))
    finally:
        partial.close()
        if progress is not None:
            progress.stop()
        if own_runtime:
            await rt.aclose()
    wall_s = wall_before + time.perf_counter() - t0
    _write_state(out, {"settings": settings.model_dump(), "wall_s": wall_s, "models": models_state})
    result_pool = finalize_pool(
        out,
        [pool[m] for m in names],
        settings,
        wall_s=wall_s,
        name=pool_name or out.name,
        task=task,
    )
    summary = PoolSummary.model_validate_json((out / SUMMARY_FILE).read_text())
    return RecordResult(
        out_dir=out,
        pool=result_pool,
        new_records=len(new),
        skipped=skipped,
        total_records=sum(m.n_records for m in summary.models),
        wall_s=wall_s,
        models=summary.models,
    )


def finalize_pool(
    out: Path,
    live_models: list[ModelSpec],
    settings: RecordSettings,
    *,
    wall_s: float | None,
    name: str,
    task: Task | None = None,
    extra_readme: str = "",
) -> Pool:
    """Merge partial appends into records.jsonl.gz and write pool.yaml, summary and README.

    Records without a score are graded with ``task`` if given.
    """
    records = _load_done(out)
    found = _existing_queries(out)
    recorded = {r.query_id for r in records}
    queries = [q for q in found if q.query_id in recorded] if found else None
    if task is not None and queries is not None and any(r.score is None for r in records):
        by_id = {q.query_id: q for q in queries}
        regraded = []
        for r in records:
            if r.score is None and r.query_id in by_id:
                q = by_id[r.query_id]
                ex = Example(id=q.query_id, question=q.question, reference=q.reference)
                r = r.model_copy(
                    update={"score": min(1.0, max(0.0, float(task.grade(r.text, ex))))}
                )
            regraded.append(r)
        records = regraded
    order = {m.name: i for i, m in enumerate(live_models)}
    qorder = {q.query_id: i for i, q in enumerate(queries or [])}
    records.sort(
        key=lambda r: (
            order.get(r.model, 1 << 30),
            qorder.get(r.query_id, 1 << 30),
            r.query_id,
            r.sample,
        )
    )
    specs = [replay_spec(m) for m in live_models if m.name in {r.model for r in records}]
    pool = write_pool_dir(
        out,
        name=name,
        description=(
            f"Recorded with `moagraph record` on {settings.task} ({settings.split}), "
            f"{settings.samples} samples per model and query, temperature {settings.temperature}, "
            f"max_tokens {settings.max_tokens}."
        ),
        models=specs,
        records=records,
        queries=queries,
        source="moagraph record",
        task=settings.task,
        settings=settings.model_dump(),
        wall_s=wall_s,
    )
    for leftover in (PARTIAL_FILE, QUERIES_PARTIAL_FILE):
        if (out / leftover).exists():
            (out / leftover).unlink()
    summary = PoolSummary.model_validate_json((out / SUMMARY_FILE).read_text())
    readme = out / "README.md"
    if not extra_readme and readme.exists() and NOTES_MARK in (text := readme.read_text()):
        extra_readme = text[text.index(NOTES_MARK) :].strip()  # keep hand-written notes
    readme.write_text(_readme(name, settings, summary, specs, extra_readme), encoding="utf-8")
    return pool


def _readme(
    name: str, settings: RecordSettings, summary: PoolSummary, specs: list[ModelSpec], extra: str
) -> str:
    rows = []
    for m in summary.models:
        acc = "-" if m.score_mean is None else f"{m.score_mean:.3f}"
        rows.append(
            f"| {m.model} | {m.n_queries} | {m.n_samples} | {acc} | {m.mean_prompt_tokens:.0f} | "
            f"{m.mean_completion_tokens:.0f} | {m.mean_latency_s:.2f} |"
        )
    live = "\n".join(
        f"- `{s.name}`: {s.extra.get('recorded_from', {})} ({s.params_b:g}B params, {s.layers} layers, "
        f"hidden {s.hidden_size})"
        for s in specs
    )
    wall = (
        "unknown"
        if summary.wall_s is None
        else f"{summary.wall_s:.0f} s ({summary.wall_s / 60:.1f} min)"
    )
    return (
        f"""# {name} replay pool

Recorded with `moagraph record --task {settings.task} --split {settings.split} --n {settings.n} \
--samples {settings.samples} --seed {settings.seed} --temperature {settings.temperature} \
--max-tokens {settings.max_tokens}`. Sample k uses seed {settings.seed}+k. `score` is the task
grader's verdict (1 correct, 0 wrong). Recording wall time: {wall} (all models, this machine).

Models (live source):
{live}

| model | queries | samples | accuracy | mean prompt tok | mean completion tok | mean latency s |
|---|---|---|---|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
        + (f"\n{extra}\n" if extra else "")
    )


def quantize_gguf(
    src: str | Path, dst: str | Path, qtype: str = "Q3_K_M", threads: int = 0
) -> Path:
    """Requantise a GGUF with llama.cpp's ``llama_model_quantize`` (e.g. Q4_K_M -> Q3_K_M).

    Why: the only generative weights installable offline here are one Gemma 3
    270M file; a requantised copy is a genuinely different (smaller, worse)
    model, which gives a recorded pool a second member with real differences.
    ``src`` may be ``package:<module>`` (a module with ``assemble()``).
    """
    import ctypes
    import importlib

    try:
        import llama_cpp
    except ImportError:
        raise RecordSettingsError(
            "quantize needs llama-cpp-python; pip install 'moagraph[local]'"
        ) from None
    s = str(src)
    if s.startswith("package:"):
        s = str(importlib.import_module(s.removeprefix("package:")).assemble())
    if not Path(s).is_file():
        raise RecordSettingsError(f"SRC {s}: no such GGUF file")
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}", None)
    if ftype is None:
        raise RecordSettingsError(
            f"--type {qtype!r}: unknown; try Q2_K, Q3_K_S, Q3_K_M, Q4_K_S, Q5_K_M, Q8_0"
        )
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = threads
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    rc = llama_cpp.llama_model_quantize(s.encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0:
        raise RecordSettingsError(f"llama_model_quantize failed with code {rc} for --type {qtype}")
    return out
