"""Does moagraph's math grader agree with ZeroEval's recorded 0/1 labels?

    python benchmarks/bench_grader_agreement.py [--n 300] [--seed 0] [--data-dir DIR] [--show 20]

For GSM8K and MATH level 5, draws ``--n`` recorded outputs (seeded, over all
models), grades each full output text with the task's grader
(``moagraph.tasks.get_task("gsm8k"|"math").grade``) against the reference,
and compares with ZeroEval's label. Prints one table (agreement rate, with a
95% Wilson interval) and the disagreements by kind:

* ``upstream: first-number rule`` — ZeroEval compares only the first number
  of the answer field: it accepts "-4, 1, -5" for "-4" and rejects
  "4 * 4 * 4 * 4 = 256" for "256". The label is wrong there.
* ``upstream: no JSON answer`` — ZeroEval found no ``"answer"`` field and
  counts the output wrong; moagraph's grader finds a correct final answer.
* ``grader: worded answer`` / ``grader: picked another answer field`` — the
  label is right and moagraph's grader misses a sentence answer ("John makes
  $1260 in a full 7-day week.") or reads another ``"answer"`` field.
* ``grader?`` — everything else: read it; either a grader bug or an answer
  the two rules legitimately disagree on.

Needs ``shared/data/zeroeval`` (full output texts); without it, falls back to
the bundled pools' recordings of the open <=10B models (full texts only).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from collections import Counter
from pathlib import Path

from moagraph.graph.evaluate import wilson_interval
from moagraph.pools import resolve_pool
from moagraph.pools.ground_truth import zeroeval_query_id, zeroeval_reference
from moagraph.tasks import registry
from moagraph.tasks.base import Example
from moagraph.tasks.grading.math_equiv import extract_json_answer
from moagraph.tasks.registry import shared_data_dir

_FIRST_NUM = re.compile(r"-?\d+(\.\d+)?")


def _first_number(s: str | None) -> float | None:
    if s is None:
        return None
    s = s.replace("$", "").replace(",", "")
    m = _FIRST_NUM.search(s)
    return float(m.group()) if m else None


def load_rows(kind: str, data_dir: Path | None) -> tuple[list[dict], str]:
    """(rows of {qid, model, text, label, upstream_answer, reference}, source)."""
    sub = "gsm" if kind == "gsm8k" else "math-l5"
    d = data_dir / "zeroeval" / sub if data_dir is not None else None
    if d is not None and (d / "outputs.jsonl.gz").exists():
        with open(d / "questions.jsonl", encoding="utf-8") as fh:
            qs = {str(q["id"]): q for q in map(json.loads, fh)}
        rows = []
        with gzip.open(d / "outputs.jsonl.gz", "rt", encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                q = qs.get(str(r["id"]))
                if q is None:
                    continue
                rows.append(
                    {
                        "qid": zeroeval_query_id("gsm" if kind == "gsm8k" else "math", r["id"]),
                        "model": r["model"],
                        "text": r["output"],
                        "label": int(r["correct"]),
                        "upstream_answer": r.get("extracted_answer"),
                        "reference": zeroeval_reference(
                            "gsm" if kind == "gsm8k" else "math", q["answer"]
                        ),
                    }
                )
        return rows, str(d)
    pool_dir = resolve_pool("zeroeval-gsm8k" if kind == "gsm8k" else "zeroeval-math").parent
    with open(pool_dir / "queries.jsonl", encoding="utf-8") as fh:
        refs = {q["query_id"]: q["reference"] for q in map(json.loads, fh)}
    rows = []
    with gzip.open(pool_dir / "records.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("meta", {}).get("text_truncated"):
                continue
            rows.append(
                {
                    "qid": r["query_id"],
                    "model": r["model"],
                    "text": r["text"],
                    "label": int(r["score"]),
                    "upstream_answer": r.get("meta", {}).get("extracted_answer"),
                    "reference": refs[r["query_id"]],
                }
            )
    return rows, f"bundled pool {pool_dir.name} (open <=10B models only)"


def classify(row: dict, grade: int) -> str:
    up, ref = row["upstream_answer"], row["reference"]
    if row["label"] == 0 and grade == 1 and up is None and extract_json_answer(row["text"]) is None:
        return "upstream: no JSON answer"
    mine = extract_json_answer(row["text"])
    if up is not None and mine is not None and mine.strip() != str(up).strip():
        return "grader: picked another answer field"
    fu, fr = _first_number(up), _first_number(ref)
    if row["label"] == 1 and grade == 0 and fu is not None and fu == fr:
        if len(re.findall(r"[A-Za-z]{2,}", str(up))) >= 3:
            return "grader: worded answer (label right)"
        return "upstream: first-number rule"
    if row["label"] == 0 and grade == 1 and up is not None and fu != fr:
        return "upstream: first-number rule"
    return "grader?"


def run(kind: str, n: int, seed: int, data_dir: Path | None) -> dict:
    task = registry.get_task(kind)
    rows, source = load_rows(kind, data_dir)
    sample = random.Random(seed).sample(rows, min(n, len(rows))) if n > 0 else rows
    agree = 0
    kinds: Counter[str] = Counter()
    examples: list[tuple[str, dict, int]] = []
    for r in sample:
        ex = Example(id=r["qid"], question="", reference=r["reference"])
        g = int(task.grade(r["text"], ex))
        if g == r["label"]:
            agree += 1
        else:
            k = classify(r, g)
            kinds[k] += 1
            examples.append((k, r, g))
    lo, hi = wilson_interval(agree, len(sample))
    return {
        "task": kind,
        "source": source,
        "n": len(sample),
        "models": len({r["model"] for r in sample}),
        "agree": agree,
        "rate": agree / len(sample),
        "ci": (lo, hi),
        "kinds": kinds,
        "examples": examples,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="outputs per task (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--show", type=int, default=20, help="disagreements to print per task")
    a = ap.parse_args(argv)
    data = a.data_dir or shared_data_dir()
    results = [run(k, a.n, a.seed, data) for k in ("gsm8k", "math")]
    print(
        "| task | outputs | models | agree | rate [95% CI] | upstream mistakes | grader misses | grader? | source |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        up = sum(v for k, v in r["kinds"].items() if k.startswith("upstream"))
        gm = sum(v for k, v in r["kinds"].items() if k.startswith("grader:"))
        lo, hi = r["ci"]
        print(
            f"| {r['task']} | {r['n']} | {r['models']} | {r['agree']} | {r['rate']:.3f} "
            f"[{lo:.3f}, {hi:.3f}] | {up} | {gm} | {r['kinds'].get('grader?', 0)} | {r['source']} |"
        )
    for r in results:
        print(f"\n{r['task']}: disagreements by kind: {dict(r['kinds'])}")
        for k, row, g in r["examples"][: a.show]:
            ans = extract_json_answer(row["text"]) or "(no JSON answer)"
            print(
                f"  [{k}] {row['model']} {row['qid']}: label {row['label']} grader {g}; "
                f"upstream answer {row['upstream_answer']!r}, text answer {ans[:60]!r}, "
                f"reference {row['reference']!r}"
            )


if __name__ == "__main__":
    main()
