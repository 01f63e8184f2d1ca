"""Rebuild the bundled samples from the shared data (run from the repo root):

    .venv/bin/python src/moagraph/tasks/data/make_samples.py [DATA_DIR]

Deterministic: random.Random(0) over the source files named in README.md.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).parent


def _jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write(name: str, rows: list[dict]) -> None:
    with open(OUT / name, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(f"{name}: {len(rows)} records")


def _train(key: str) -> bool:  # same rule as moagraph.tasks._common.in_train_fraction
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64 < 0.2


def main(data: Path) -> None:
    rng = random.Random(0)
    gsm = _jsonl(data / "gsm8k" / "test.jsonl")
    idx = sorted(rng.sample(range(len(gsm)), 40))
    _write("gsm8k_test_sample.jsonl", [{"idx": i, **gsm[i]} for i in idx])

    math = _jsonl(data / "math" / "test.jsonl")
    by_subject: dict[str, list[dict]] = {}
    for r in math:
        by_subject.setdefault(r["subject"], []).append(r)
    picked: list[dict] = []
    subjects = sorted(by_subject)
    for k in range(40):  # round-robin over subjects, random level within each
        picked.append(rng.choice(by_subject[subjects[k % len(subjects)]]))
    _write(
        "math_test_sample.jsonl",
        sorted({r["id"]: r for r in picked}.values(), key=lambda r: r["id"]),
    )

    he = [r for r in _jsonl(data / "humaneval" / "humaneval-py.jsonl") if not _train(r["name"])]
    keep = ("name", "prompt", "entry_point", "test", "stop_tokens")
    _write("humaneval_sample.jsonl", [{k: r[k] for k in keep} for r in rng.sample(he, 20)])

    chat = [
        r
        for r in _jsonl(data / "alpaca_eval" / "instructions.jsonl.gz")
        if not _train(f"alpaca/{r['id']}")
    ]
    _write("chat_sample.jsonl", sorted(rng.sample(chat, 40), key=lambda r: r["id"]))

    # MMLU: 2 test questions per subject (cais/mmlu CSV export); ids = split "test" ids.
    import csv

    mmlu = []
    for f in sorted((data / "mmlu" / "test").glob("*_test.csv")):
        subject = f.stem.removesuffix("_test")
        with open(f, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))[1:]
        for i in sorted(rng.sample(range(len(rows)), 2)):
            q, *choices, ans = rows[i]
            mmlu.append(
                {
                    "id": f"mmlu/{subject}/test/{i}",
                    "subject": subject,
                    "question": q,
                    "choices": choices,
                    "answer": "ABCD"[int(ans)],
                }
            )
    _write("mmlu_test_sample.jsonl", mmlu)

    # MBPP: 20 problems of the standard test split (task_id 11-510), verbatim records.
    mbpp = [r for r in _jsonl(data / "mbpp" / "mbpp.jsonl") if 11 <= int(r["task_id"]) <= 510]
    _write("mbpp_test_sample.jsonl", sorted(rng.sample(mbpp, 20), key=lambda r: int(r["task_id"])))


if __name__ == "__main__":
    main(
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parents[5] / "shared" / "data"
    )
