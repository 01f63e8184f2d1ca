"""Importers for multi-model recordings with ground-truth 0/1 labels.

* :func:`import_zeroeval` — ``shared/data/zeroeval/gsm`` or ``.../math-l5``:
  greedy outputs of 40+ LLMs (full text) with ZeroEval's own 0/1 grade.
* :func:`import_mmlu_pro` — ``shared/data/mmlu_pro``: the letter each of 29
  LLMs chose on MMLU-Pro (10 options) with 0/1 correctness. There is **no
  output text**: each record's text is a short synthetic answer
  ("The answer is (C).") and its token counts are estimates.

Both write the usual replay-pool layout (:mod:`moagraph.pools.schema`);
``score`` is the recorded label. Models get their real architecture and list
price from :mod:`moagraph.pools.catalog`. They read every question of the
folder they are given (a folder with more questions than the shipped one
imports the same way). A malformed dump fails with the file, line and field.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moagraph.models.pool import ModelSpec, Pool
from moagraph.pools.catalog import model_info
from moagraph.pools.importers import (
    LATENCY_RULE,
    estimate_latency,
    make_token_counter,
    write_pool_dir,
)
from moagraph.pools.schema import (
    QueryRecord,
    ReplayFormatError,
    ReplayRecord,
    iter_json_objects,
)

__all__ = [
    "MMLU_PRO_COT_TOKENS",
    "MMLU_PRO_PROMPT_OVERHEAD",
    "ZEROEVAL_PROMPT_OVERHEAD",
    "ZEROEVAL_TASKS",
    "detect_zeroeval_task",
    "ground_truth_stats",
    "import_mmlu_pro",
    "import_zeroeval",
    "select_models",
    "summary_line",
    "truncate_keep_answer",
    "zeroeval_query_id",
]

# ZeroEval's prompt wraps the question in a fixed template ("## Question: ...
# ## Instruction ... present your reasoning and answer in this json format
# ..."): about 360 characters, ~90 tokens at chars/4. Estimated.
ZEROEVAL_PROMPT_OVERHEAD = 90
# MMLU-Pro's 5-shot CoT prompt: five worked exemplars of the category plus
# the instruction. Assumed 1,500 tokens (the exemplars are not in the data).
MMLU_PRO_PROMPT_OVERHEAD = 1500
# MMLU-Pro outputs are chain-of-thought answers ending in "The answer is (X)".
# The data has no text, so every record assumes a typical CoT length of 250
# tokens (an assumption, marked in each record's meta and in `pool show`).
MMLU_PRO_COT_TOKENS = 250


def select_models(
    names: Sequence[str],
    *,
    models: Sequence[str] | None = None,
    max_params_b: float | None = None,
    exclude_closed: bool = False,
    where: str = "the data",
) -> list[str]:
    """The models to import, in the data's order.

    ``models`` names them explicitly (unknown names are an error);
    ``max_params_b`` keeps models whose FLOPs size (active parameters) is at
    most that; ``exclude_closed`` drops models of undisclosed size.
    """
    if models:
        unknown = [m for m in models if m not in names]
        if unknown:
            raise ValueError(
                f"--models: {', '.join(unknown)} not in {where}; it has: {', '.join(names)}"
            )
        chosen = [n for n in names if n in set(models)]
    else:
        chosen = list(names)
    out = []
    for n in chosen:
        info = model_info(n)
        if exclude_closed and info.closed:
            continue
        if max_params_b is not None and (info.closed or info.params_b > max_params_b):
            continue
        out.append(n)
    if not out:
        raise ValueError(
            "no model left to import after --models / --max-params-b / --exclude-closed"
        )
    return out


def _specs(names: Sequence[str]) -> list[ModelSpec]:
    specs = []
    for n in names:
        i = model_info(n)
        specs.append(
            ModelSpec(
                name=n,
                backend="replay",
                replay="records.jsonl.gz",
                params_b=i.params_b,
                layers=i.layers,
                hidden_size=i.hidden_size,
                price_in=i.price_in,
                price_out=i.price_out,
                extra=dict(i.extra),
            )
        )
    return specs


def _read_csv(
    path: Path, required: Sequence[str]
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    if not path.exists():
        raise ReplayFormatError(f"{path} does not exist")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        missing = [c for c in required if c not in header]
        if missing:
            raise ReplayFormatError(
                f"{path.name} line 1: header lacks column(s) {', '.join(missing)}; "
                f"expected {', '.join(required)} then one column per model"
            )
        rows = []
        for r in reader:
            if None in r or any(v is None for v in r.values()):
                raise ReplayFormatError(
                    f"{path.name} line {reader.line_num}: has {len(header)} columns in the header "
                    "but a different number on this line"
                )
            rows.append((reader.line_num, r))
    return header, rows


def _label(path: Path, line: int, model: str, v: str) -> int | None:
    v = v.strip()
    if v == "":
        return None
    if v in ("0", "1", "0.0", "1.0"):
        return int(float(v))
    raise ReplayFormatError(
        f"{path.name} line {line}: column `{model}` is {v!r}; use 0, 1 or blank (no output)"
    )


def truncate_keep_answer(text: str, keep: int) -> str:
    """At most ``keep`` characters ending where the final answer is stated.

    The first ``"answer": "..."`` field (what ZeroEval grades) is kept with the
    ``keep`` characters before it; without one, the last ``keep`` characters.
    """
    if len(text) <= keep:
        return text
    m = _ANSWER_FIELD_RE.search(text)
    if m:
        end = m.end()
        close = text.find("}", end, end + 20)
        end = close + 1 if close >= 0 else end
        return "[...] " + text[max(0, end - keep) : end]
    return "[...] " + text[-keep:]


_ANSWER_FIELD_RE = re.compile(r'"answer"\s*:\s*"(?:[^"\\]|\\.)*"')


def zeroeval_query_id(kind: str, raw_id: Any) -> str:
    """Pool query id of a ZeroEval question: ``gsm8k/test/N`` (the GSM8K task's
    own id: ZeroEval's ``gsm8k-main-test-#N`` is test index N) or
    ``zeroeval-math/ID`` for MATH level 5."""
    s = str(raw_id)
    if kind == "gsm":
        m = re.fullmatch(r"gsm8k-main-test-#(\d+)", s)
        return f"gsm8k/test/{m.group(1)}" if m else f"zeroeval-gsm/{s}"
    return f"zeroeval-math/{s}"


ZEROEVAL_TASKS = ("gsm8k", "math")
"""The tasks a ZeroEval dump can be imported as (what ``--task`` takes)."""

_GSM_ID_RE = re.compile(r"gsm8k-main-test-#\d+")
_CODE_Q_RE = re.compile(r"^\s*def \w+\(|\bassert\s+\w+\(", re.MULTILINE)


def detect_zeroeval_task(d: Path, questions: Sequence[dict[str, Any]]) -> tuple[str | None, str]:
    """(task, why) of a ZeroEval dump: ``gsm8k``, ``math``, another benchmark's name
    (``cruxeval``: moagraph has no such task) or None (cannot tell), and the evidence."""
    ids = [str(q.get("id", "")) for q in questions]
    name = d.name.lower()
    n = max(1, len(questions))
    code = sum(1 for q in questions if _CODE_Q_RE.search(str(q.get("question", ""))))
    if ids and all(_GSM_ID_RE.fullmatch(i) for i in ids):
        return "gsm8k", "its ids are gsm8k-main-test-#N"
    if (
        "crux" in name
        or any(i.lower().startswith(("crux", "sample_")) for i in ids[:50])
        or code / n >= 0.5
    ):
        why = [f"folder {d.name!r}"] if "crux" in name else []
        if ids and ids[0].lower().startswith(("crux", "sample_")):
            why.append(f"ids like {ids[0]!r}")
        if code:
            why.append(f"{code} of {len(questions)} questions are Python code (def f(...))")
        return "cruxeval", "CRUXEval-like: " + ", ".join(why)
    ints = all(re.fullmatch(r"\d+", i) for i in ids) if ids else False
    if name.startswith("gsm"):
        return "gsm8k", f"folder {d.name!r}"
    if name.startswith("math") or ints:
        return "math", f"folder {d.name!r}" if name.startswith("math") else "numeric ids (MATH)"
    return None, f"ids like {ids[0]!r}" if ids else "no questions"


def _zeroeval_task(d: Path, questions: list[dict[str, Any]], task: str | None) -> str:
    """The task to import a dump as: ``task`` (--task) if it matches what the dump looks
    like, else the detected one; a mismatch or an unknown benchmark is refused."""
    detected, why = detect_zeroeval_task(d, questions)
    wanted = None
    if task is not None:
        wanted = {"gsm": "gsm8k", "gsm8k": "gsm8k", "math": "math"}.get(task.strip().lower())
        if wanted is None:
            raise ValueError(
                f"--task {task!r}: a ZeroEval dump imports as one of: {', '.join(ZEROEVAL_TASKS)}"
                "; for another benchmark write its questions as your own JSONL task "
                "(docs/own-task.md: --task jsonl:PATH:GRADER) and record your models on it"
            )
    if detected not in ZEROEVAL_TASKS and detected is not None:
        raise ValueError(
            f"zeroeval data dir {d}: this looks like {detected} ({why}), not GSM8K or MATH; "
            f"moagraph has no {detected} task, so its answers would be graded as math (e.g. "
            "'ccwcu' and 'cwcuc' as products of symbols). Import only zeroeval/gsm or "
            "zeroeval/math-l5; for another benchmark write its questions as your own JSONL "
            "task (docs/own-task.md: --task jsonl:PATH:exact) and record your models on it"
        )
    if wanted is not None and detected is not None and wanted != detected:
        raise ValueError(
            f"--task {task}: zeroeval data dir {d} looks like {detected} ({why}); pass "
            f"--task {detected}, or drop --task to use the detected one"
        )
    got = wanted or detected
    if got is None:
        raise ValueError(
            f"zeroeval data dir {d}: cannot tell its task ({why}); pass --task gsm8k or "
            "--task math if it is one of those"
        )
    return got


def zeroeval_reference(kind: str, answer: str) -> str:
    """The reference answer: GSM8K's "# 1,234" -> "1234"; MATH's as is."""
    a = str(answer).strip()
    if kind == "gsm":
        return a.lstrip("#").strip().replace(",", "")
    return a


def import_zeroeval(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    models: Sequence[str] | None = None,
    max_params_b: float | None = None,
    exclude_closed: bool = False,
    full_text_max_b: float | None = None,
    keep_chars: int = 400,
    limit: int | None = None,
    tokens: str = "chars4",
    task: str | None = None,
) -> Pool:
    """Import a ZeroEval folder (``gsm`` or ``math-l5``) as a ground-truth replay pool.

    ``task`` (``gsm8k`` or ``math``) is checked against what the dump looks like
    (:func:`detect_zeroeval_task`); without it the detected task is used, and a dump
    of another benchmark (CRUXEval, ...) is refused. ``name`` defaults to the
    output folder's name.

    ``full_text_max_b``: keep the full output text only for open models of at
    most that many (active) billion parameters; the others keep
    :func:`truncate_keep_answer` (``keep_chars``) with ``meta.text_truncated``.
    Token counts always come from the full text. ``limit``: first N questions.
    """
    d = Path(data_dir)
    qpath, opath, cpath = d / "questions.jsonl", d / "outputs.jsonl.gz", d / "correctness.csv"
    missing = [p.name for p in (qpath, opath, cpath) if not p.exists()]
    if missing:
        raise ValueError(
            f"zeroeval data dir {d}: missing {', '.join(missing)}; pass shared/data/zeroeval/gsm "
            "or shared/data/zeroeval/math-l5 (see its README)"
        )
    questions: list[dict[str, Any]] = []
    for where, raw in iter_json_objects(qpath):
        for f in ("id", "question", "answer"):
            if f not in raw:
                raise ReplayFormatError(
                    f"{where}: field `{f}` is missing; need id, question, answer"
                )
        questions.append(raw)
    task = _zeroeval_task(d, questions, task)
    if limit is not None:
        questions = questions[:limit]
    kind = "gsm" if task == "gsm8k" else "math"
    qids = {str(q["id"]): zeroeval_query_id(kind, q["id"]) for q in questions}
    header, rows = _read_csv(cpath, ["id", "answer"])
    all_models = [c for c in header if c not in ("id", "answer")]
    chosen = select_models(
        all_models,
        models=models,
        max_params_b=max_params_b,
        exclude_closed=exclude_closed,
        where=cpath.name,
    )
    labels: dict[tuple[str, str], int] = {}
    for line, r in rows:
        if r["id"] not in qids:
            continue
        for m in chosen:
            v = _label(cpath, line, m, r[m])
            if v is not None:
                labels[(r["id"], m)] = v
    specs = _specs(chosen)
    by_name = {s.name: s for s in specs}
    counter, method = make_token_counter(tokens)
    qtok = dict(zip(qids, counter([str(q["question"]) for q in questions]), strict=True))
    records: list[ReplayRecord] = []
    seen: set[tuple[str, str]] = set()
    mismatched = 0
    generators: dict[str, str] = {}
    for where, raw in iter_json_objects(opath):
        for f in ("id", "model", "output", "correct"):
            if f not in raw:
                raise ReplayFormatError(
                    f"{where}: field `{f}` is missing; need id, model, output, correct"
                )
        qid, m = str(raw["id"]), raw["model"]
        if qid not in qids or m not in by_name:
            continue
        if not isinstance(raw["output"], str):
            raise ReplayFormatError(f"{where}: field `output` must be a string (the model's text)")
        if raw["correct"] not in (0, 1, True, False):
            raise ReplayFormatError(
                f"{where}: field `correct` is {raw['correct']!r}; must be 0 or 1"
            )
        if (qid, m) in seen:
            raise ReplayFormatError(f"{where}: duplicate output for question {qid!r}, model {m!r}")
        seen.add((qid, m))
        label = labels.get((qid, m))
        if label is None:
            raise ReplayFormatError(
                f"{where}: question {qid!r}, model {m!r} has an output but {cpath.name} has no "
                "label for it (blank cell); the two files disagree"
            )
        if int(raw["correct"]) != label:
            mismatched += 1
        full = raw["output"]
        spec = by_name[m]
        keep_full = full_text_max_b is None or (
            not spec.extra.get("closed") and spec.params_b <= full_text_max_b
        )
        text = full if keep_full else truncate_keep_answer(full, keep_chars)
        ct = counter([full])[0]
        pt = qtok[qid] + ZEROEVAL_PROMPT_OVERHEAD
        meta: dict[str, Any] = {
            "estimated": ["prompt_tokens", "completion_tokens", "latency_s"],
            "extracted_answer": raw.get("extracted_answer"),
            "output_chars": len(full),
        }
        if raw.get("generator"):
            generators.setdefault(m, str(raw["generator"]))
        if text is not full:
            meta["text_truncated"] = True
        records.append(
            ReplayRecord(
                model=m,
                query_id=qids[qid],
                sample=0,
                text=text,
                prompt_tokens=pt,
                completion_tokens=ct,
                latency_s=round(estimate_latency(spec.params_b, pt, ct), 4),
                score=float(label),
                task=task,
                meta=meta,
            )
        )
    n_labels = len(labels)
    if len(records) != n_labels:
        missing_out = sorted(set(labels) - seen)[:3]
        raise ReplayFormatError(
            f"{opath.name}: {n_labels - len(records)} labelled (question, model) pairs of "
            f"{cpath.name} have no output, e.g. {missing_out}"
        )
    specs = [
        s.model_copy(update={"extra": {**s.extra, "generator": generators[s.name]}})
        if s.name in generators
        else s
        for s in specs
    ]
    order = {n: i for i, n in enumerate(chosen)}
    qorder = {v: i for i, v in enumerate(qids.values())}
    records.sort(key=lambda r: (order[r.model], qorder[r.query_id]))
    queries = [
        QueryRecord(
            query_id=qids[str(q["id"])],
            question=str(q["question"]),
            reference=zeroeval_reference(kind, q["answer"]),
            task=task,
            meta={"zeroeval_id": q["id"]},
        )
        for q in questions
    ]
    pool_name = (
        name or Path(out_dir).name or ("zeroeval-gsm8k" if kind == "gsm" else "zeroeval-math")
    )
    stats = ground_truth_stats(records, specs)
    settings = {
        "data_dir": d.name,
        "tokens_method": method,
        "prompt_tokens": f"question tokens ({method}) + {ZEROEVAL_PROMPT_OVERHEAD} for ZeroEval's "
        "prompt template (estimated)",
        "completion_tokens": f"counted from the full recorded output ({method})",
        "latency": LATENCY_RULE,
        "full_text_max_b": full_text_max_b,
        "keep_chars": keep_chars,
        "n_truncated": sum(1 for r in records if r.meta.get("text_truncated")),
        "label_mismatch_outputs_vs_csv": mismatched,
        "ground_truth": stats,
        "limit": limit,
    }
    dataset_label = "GSM8K test" if kind == "gsm" else "MATH level 5"
    pool = write_pool_dir(
        out_dir,
        name=pool_name,
        description=(
            f"ZeroEval greedy outputs of {len(specs)} LLMs on {len(questions)} {dataset_label} questions "
            "with ZeroEval's 0/1 grade as score. Source: yuchenlin/ZeroEval result_dirs/ "
            "(commit 570c6269, Apache-2.0)."
        ),
        models=specs,
        records=records,
        queries=queries,
        source=f"moagraph pool import zeroeval {d.name}",
        task=task,
        settings=settings,
    )
    (Path(out_dir) / "README.md").write_text(
        _readme_zeroeval(pool_name, kind, d, specs, records, queries, settings, method),
        encoding="utf-8",
    )
    return pool


def import_mmlu_pro(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    models: Sequence[str] | None = None,
    max_params_b: float | None = None,
    exclude_closed: bool = False,
    limit: int | None = None,
    tokens: str = "chars4",
) -> Pool:
    """Import ``shared/data/mmlu_pro`` (letters chosen + 0/1 correctness) as a replay pool.

    The data has no output text: each record's ``text`` is synthetic ("The
    answer is (C).", or a no-answer sentence when the model gave none), its
    ``completion_tokens`` the assumed CoT length :data:`MMLU_PRO_COT_TOKENS`
    and ``prompt_tokens`` the question (counted) plus an assumed 5-shot
    overhead; ``meta.synthetic_text`` and ``meta.estimated`` say so.
    """
    d = Path(data_dir)
    qpath, cpath, ppath = d / "questions.jsonl", d / "correctness.csv", d / "predictions.csv"
    missing = [p.name for p in (qpath, cpath, ppath) if not p.exists()]
    if missing:
        raise ValueError(
            f"mmlu-pro data dir {d}: missing {', '.join(missing)}; pass shared/data/mmlu_pro"
        )
    questions: list[dict[str, Any]] = []
    for where, raw in iter_json_objects(qpath):
        for f in ("question_id", "question", "options", "answer"):
            if f not in raw:
                raise ReplayFormatError(
                    f"{where}: field `{f}` is missing; need question_id, question, options, answer"
                )
        if not isinstance(raw["options"], list) or not 2 <= len(raw["options"]) <= 10:
            raise ReplayFormatError(f"{where}: field `options` must be a list of 2-10 option texts")
        questions.append(raw)
    if limit is not None:
        questions = questions[:limit]
    keep = {str(q["question_id"]) for q in questions}
    header, crows = _read_csv(cpath, ["question_id", "answer"])
    meta_cols = {"question_id", "category", "src", "answer"}
    all_models = [c for c in header if c not in meta_cols]
    chosen = select_models(
        all_models,
        models=models,
        max_params_b=max_params_b,
        exclude_closed=exclude_closed,
        where=cpath.name,
    )
    pheader, prows = _read_csv(ppath, ["question_id"])
    absent = [m for m in chosen if m not in pheader]
    if absent:
        raise ReplayFormatError(
            f"{ppath.name} line 1: no column for model(s) {', '.join(absent)} of {cpath.name}"
        )
    preds = {r["question_id"]: (line, r) for line, r in prows}
    specs = _specs(chosen)
    by_name = {s.name: s for s in specs}
    counter, method = make_token_counter(tokens)
    letters = "ABCDEFGHIJ"

    def render(q: dict[str, Any]) -> str:
        opts = "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(q["options"]))
        return f"{q['question']}\n{opts}"

    qtok = dict(
        zip(
            [str(q["question_id"]) for q in questions],
            counter([render(q) for q in questions]),
            strict=True,
        )
    )
    records: list[ReplayRecord] = []
    inconsistent = 0
    for line, r in crows:
        qid = r["question_id"]
        if qid not in keep:
            continue
        if qid not in preds:
            raise ReplayFormatError(
                f"{cpath.name} line {line}: question_id {qid} has no row in {ppath.name}"
            )
        pline, prow = preds[qid]
        for m in chosen:
            label = _label(cpath, line, m, r[m])
            pred = (prow.get(m) or "").strip().upper()
            if label is None:
                continue
            if pred and pred != "NONE" and (len(pred) != 1 or pred not in letters):
                raise ReplayFormatError(
                    f"{ppath.name} line {pline}: column `{m}` is {pred!r}; use a letter A-J, "
                    "NONE (no answer) or blank"
                )
            if (pred == r["answer"].strip().upper()) != bool(label):
                inconsistent += 1
            if pred and pred != "NONE":
                text = f"The answer is ({pred})."
            else:
                text = "No answer could be extracted from this model's output."
            spec = by_name[m]
            pt = qtok[qid] + MMLU_PRO_PROMPT_OVERHEAD
            ct = MMLU_PRO_COT_TOKENS
            records.append(
                ReplayRecord(
                    model=m,
                    query_id=f"mmlu-pro/{qid}",
                    sample=0,
                    text=text,
                    prompt_tokens=pt,
                    completion_tokens=ct,
                    latency_s=round(estimate_latency(spec.params_b, pt, ct), 4),
                    score=float(label),
                    task="mmlu-pro",
                    meta={
                        "synthetic_text": True,
                        "prediction": pred or None,
                        "estimated": ["prompt_tokens", "completion_tokens", "latency_s"],
                    },
                )
            )
    order = {n: i for i, n in enumerate(chosen)}
    qorder = {f"mmlu-pro/{q['question_id']}": i for i, q in enumerate(questions)}
    records.sort(key=lambda x: (order[x.model], qorder[x.query_id]))
    queries = [
        QueryRecord(
            query_id=f"mmlu-pro/{q['question_id']}",
            question=str(q["question"]),
            reference=str(q["answer"]).strip().upper(),
            task="mmlu-pro",
            meta={
                "options": list(q["options"]),
                "category": q.get("category"),
                "src": q.get("src"),
            },
        )
        for q in questions
    ]
    stats = ground_truth_stats(records, specs)
    settings = {
        "data_dir": d.name,
        "synthetic_text": "the source has no output text: text = 'The answer is (X).' with the "
        "recorded letter (or a no-answer sentence for NONE)",
        "tokens_method": method,
        "prompt_tokens": f"question + options ({method}) + {MMLU_PRO_PROMPT_OVERHEAD} assumed for "
        "the 5-shot CoT exemplars (estimated)",
        "completion_tokens": f"{MMLU_PRO_COT_TOKENS} for every record: an assumed typical CoT "
        "length (estimated, not measured)",
        "latency": LATENCY_RULE,
        "inconsistent_prediction_vs_label": inconsistent,
        "ground_truth": stats,
        "limit": limit,
    }
    name = name or Path(out_dir).name or "mmlu-pro"
    pool = write_pool_dir(
        out_dir,
        name=name,
        description=(
            f"MMLU-Pro 5-shot CoT answers (letters) of {len(specs)} LLMs on {len(questions)} "
            "questions with 0/1 correctness as score; synthetic texts, estimated tokens. Source: "
            "TIGER-AI-Lab/MMLU-Pro eval_results/ (commit f418b116)."
        ),
        models=specs,
        records=records,
        queries=queries,
        source=f"moagraph pool import mmlu-pro {d.name}",
        task="mmlu-pro",
        settings=settings,
    )
    (Path(out_dir) / "README.md").write_text(
        _readme_mmlu_pro(name, specs, records, queries, settings), encoding="utf-8"
    )
    return pool


# --------------------------------------------------------------------------- statistics


def ground_truth_stats(
    records: Sequence[ReplayRecord], specs: Sequence[ModelSpec]
) -> dict[str, Any]:
    """Best single model, "some model right" (oracle) and the cost range of a labelled pool.

    Accuracies are over each model's recorded queries; the oracle is over all
    queries (a query counts if any model's label is 1). Dollar cost per call
    uses each model's mean recorded tokens and list price.
    """
    from moagraph.models.cost import call_dollars

    by_model: dict[str, list[ReplayRecord]] = {}
    any_right: dict[str, bool] = {}
    for r in records:
        by_model.setdefault(r.model, []).append(r)
        any_right[r.query_id] = any_right.get(r.query_id, False) or (r.score or 0) >= 1
    acc = {m: sum(r.score or 0 for r in rs) / len(rs) for m, rs in by_model.items()}
    best = max(acc, key=lambda m: acc[m]) if acc else None
    dollars = {}
    for s in specs:
        rs = by_model.get(s.name)
        if rs:
            a = sum(r.prompt_tokens for r in rs) / len(rs)
            b = sum(r.completion_tokens for r in rs) / len(rs)
            dollars[s.name] = call_dollars(s, a, b)
    params = {s.name: s.params_b for s in specs if s.name in by_model}
    return {
        "n_queries": len(any_right),
        "n_models": len(by_model),
        "accuracy": {m: round(v, 6) for m, v in acc.items()},
        "best_single": {"model": best, "accuracy": round(acc[best], 6)} if best else None,
        "some_model_right": round(sum(any_right.values()) / len(any_right), 6)
        if any_right
        else None,
        "params_b_range": [min(params.values()), max(params.values())] if params else None,
        "dollars_per_call_range": [min(dollars.values()), max(dollars.values())]
        if dollars
        else None,
    }


def summary_line(stats: dict[str, Any]) -> str:
    """One line: best single model, some-model-right rate, size and dollar range."""
    b = stats.get("best_single") or {}
    pr = stats.get("params_b_range") or [0, 0]
    dr = stats.get("dollars_per_call_range") or [0, 0]
    return (
        f"best single: {b.get('model')} {b.get('accuracy', 0):.3f}; some model right: "
        f"{stats.get('some_model_right') or 0:.3f} ({stats.get('n_queries')} queries, "
        f"{stats.get('n_models')} models); size {pr[0]:g}-{pr[1]:g}B (FLOPs params); "
        f"$ per call {dr[0]:.2g}-{dr[1]:.2g}"
    )


# --------------------------------------------------------------------------- READMEs


def _model_table(specs: Sequence[ModelSpec], stats: dict[str, Any], extra_col: str = "") -> str:
    from moagraph.models.cost import call_dollars  # noqa: F401  (documented in the header)

    acc = stats["accuracy"]
    lines = [
        "| model | params B (FLOPs) | layers | hidden | $ in / out per 1M | accuracy | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in specs:
        e = s.extra
        notes = []
        if e.get("closed"):
            notes.append(f"size ~estimate ({e.get('size_note')})")
        if e.get("moe"):
            notes.append(f"MoE, {e['params_total_b']:g}B total")
        if e.get("price_approx"):
            notes.append("price approximate")
        pb = f"~{s.params_b:g}" if e.get("size_estimated") else f"{s.params_b:g}"
        arch = "~" if e.get("arch_estimated") else ""
        lines.append(
            f"| {s.name} | {pb} | {arch}{s.layers} | {arch}{s.hidden_size} | "
            f"{s.price_in:g} / {s.price_out:g} | {acc.get(s.name, float('nan')):.4f} | "
            f"{'; '.join(notes)} |"
        )
    return "\n".join(lines)


_COMMON_NOTES = """\
- Architectures (layers, hidden size) come from each family's published
  config.json, parameter counts from the model cards (`moagraph.pools.catalog`,
  `extra.arch_source`); MoE models are costed by active parameters.
- Closed models have no disclosed size: `params_b` is an estimate (`~` above,
  `extra.size_estimated`, `extra.size_note` says whose) and their architecture
  is derived from it (`extra.arch_estimated`). Trust their dollar prices, not
  their FLOPs. Prices are 2024 list prices per 1M input / output tokens;
  self-hosted open models cost $0 (their cost is counted in FLOPs).
- `latency_s` is an estimate (no timings in the source): {latency}.
"""


def _readme_zeroeval(
    name: str,
    kind: str,
    d: Path,
    specs: Sequence[ModelSpec],
    records: Sequence[ReplayRecord],
    queries: Sequence[QueryRecord],
    settings: dict[str, Any],
    method: str,
) -> str:
    stats = settings["ground_truth"]
    what = "GSM8K test" if kind == "gsm" else "MATH level-5 (test)"
    qid = "`gsm8k/test/N` (= the gsm8k task's ids)" if kind == "gsm" else "`zeroeval-math/ID`"
    trunc = (
        f"Full output text is kept for open models of at most {settings['full_text_max_b']:g}B "
        f"parameters (what hybrid graphs re-read); for the other models the text is cut to the "
        f'{settings["keep_chars"]} characters that end with the final `"answer"` field '
        f"(`meta.text_truncated`, {settings['n_truncated']} records) so votes still see the answer; "
        "token counts are from the full text."
        if settings.get("full_text_max_b") is not None
        else "Full output text is kept for every model."
    )
    return (
        f"""# {name} replay pool

Greedy (temperature 0) outputs of {len(specs)} LLMs on {len(queries)} {what} questions,
{len(records)} records, each with ZeroEval's own 0/1 grade as `score`. Imported with
`moagraph pool import zeroeval {d.name}` (rebuild: `python -m moagraph.pools.data.build_bundled`).

Source: yuchenlin/ZeroEval `result_dirs/` (commit 570c6269, Apache-2.0) via
`shared/data/zeroeval/{d.name}` (the questions the project ships; the rest are kept back
for independent evaluation). GSM8K: MIT; MATH: MIT.

**{summary_line(stats)}**

- Query ids: {qid}; evaluate with `--task {"gsm8k" if kind == "gsm" else "math"} --split zeroeval`.
- `score` is ZeroEval's label (its scorer compares the first number of the `answer` field of
  the model's JSON reply with the reference). `meta.extracted_answer` is ZeroEval's parsed answer.
  How moagraph's own grader agrees with the labels: `python benchmarks/bench_grader_agreement.py`.
- {trunc}
- Tokens: {settings["prompt_tokens"]}; completion = {settings["completion_tokens"]}
  (`meta.estimated`; chars/4 is tokenizer-free, ~4 characters a token).
"""
        + _COMMON_NOTES.format(latency=LATENCY_RULE)
        + f"""
Left out: models whose whole column is blank; ZeroEval's
official summaries cover all {"1,319" if kind == "gsm" else "721"} questions, this pool only the shipped
ones, so accuracies differ slightly from them (see summary.json / the project README).

{_model_table(specs, stats)}
"""
    )


def _readme_mmlu_pro(
    name: str,
    specs: Sequence[ModelSpec],
    records: Sequence[ReplayRecord],
    queries: Sequence[QueryRecord],
    settings: dict[str, Any],
) -> str:
    stats = settings["ground_truth"]
    return (
        f"""# {name} replay pool

The option letter each of {len(specs)} LLMs chose on {len(queries)} MMLU-Pro questions (10
options A-J for most), {len(records)} records, with the 0/1 correctness as `score`. Imported with
`moagraph pool import mmlu-pro mmlu_pro` (rebuild: `python -m moagraph.pools.data.build_bundled`).

Source: TIGER-AI-Lab/MMLU-Pro `eval_results/` (commit f418b116; repository Apache-2.0, dataset
MIT per its card) via `shared/data/mmlu_pro` (the questions the project ships).

**{summary_line(stats)}**

**No output text exists in the source.** Each record's `text` is synthetic: "The answer is (C)."
with the recorded letter, or "No answer could be extracted ..." where the model gave none
(`meta.synthetic_text`). Token counts are estimates (`meta.estimated`): {settings["prompt_tokens"]};
completion = {settings["completion_tokens"]}. So: votes over these records are exact (they only
need the letter), but a fuser/aggregator reading them sees no reasoning, and FLOPs/dollars are
estimates. Query ids: `mmlu-pro/QUESTION_ID`; evaluate with `--task mmlu-pro --split test`.
{settings["inconsistent_prediction_vs_label"]} records have a letter that disagrees with the
recorded label (upstream inconsistencies; `score` keeps the label).
"""
        + _COMMON_NOTES.format(latency=LATENCY_RULE)
        + f"""
{_model_table(specs, stats)}
"""
    )
