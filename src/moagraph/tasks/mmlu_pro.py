"""MMLU-Pro (Wang et al. 2024): multiple choice with up to 10 options (A-J).

Split ``test``: ``<data_dir>/mmlu_pro/questions.jsonl`` (``{question_id,
category, question, options, answer}``, as in ``shared/data/mmlu_pro``) when
present, else the questions of the bundled replay pool ``mmlu-pro`` (so
``moagraph eval --pool mmlu-pro --task mmlu-pro`` runs offline). Example ids
are ``mmlu-pro/<question_id>``, the pool's query ids. Graded by the option
letter (:mod:`moagraph.tasks.grading.choice`).
"""

from __future__ import annotations

import gzip
import json
from typing import Any, ClassVar

from moagraph.tasks._common import FileTask, read_jsonl
from moagraph.tasks.base import Example, TaskError
from moagraph.tasks.grading.choice import choice_equivalent, extract_choice

LETTERS = "ABCDEFGHIJ"


class MMLUProTask(FileTask):
    """MMLU-Pro; (A, B) estimated like the ``mmlu-pro`` pool's records: a zero-shot
    prompt of ~250 tokens (question + 10 options) and a ~250-token CoT answer."""

    name: ClassVar[str] = "mmlu-pro"
    kind: ClassVar = "choice"
    avg_input_tokens: ClassVar[int] = 250
    avg_output_tokens: ClassVar[int] = 250
    splits: tuple[str, ...] = ("test",)

    def _load_split(self, split: str) -> list[Example]:
        base = self.data_dir
        qfile = base / "mmlu_pro" / "questions.jsonl" if base is not None else None
        if qfile is not None and qfile.exists():
            return [self._example(i, r) for i, r in enumerate(read_jsonl(qfile))]
        from moagraph.pools import resolve_pool

        pool_dir = resolve_pool("mmlu-pro").parent
        path = pool_dir / "queries.jsonl.gz"
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        return [
            Example(
                id=r["query_id"],
                question=r["question"],
                reference=r["reference"],
                meta={"choices": r["meta"]["options"], "category": r["meta"].get("category")},
            )
            for r in rows
        ]

    @staticmethod
    def _example(i: int, r: dict[str, Any]) -> Example:
        missing = [k for k in ("question_id", "question", "options", "answer") if k not in r]
        if missing:
            raise TaskError(
                f"MMLU-Pro record {i + 1} lacks field(s) {', '.join(missing)}; need "
                "question_id, question, options, answer"
            )
        ans = str(r["answer"]).strip().upper()
        if ans not in LETTERS[: len(r["options"])]:
            raise TaskError(
                f"MMLU-Pro record {i + 1} (question_id {r['question_id']}): answer {ans!r} does "
                f"not name one of its {len(r['options'])} options"
            )
        return Example(
            id=f"mmlu-pro/{r['question_id']}",
            question=r["question"],
            reference=ans,
            meta={"choices": list(r["options"]), "category": r.get("category")},
        )

    def format_question(self, example: Example) -> str:
        opts = "\n".join(
            f"{L}. {c}" for L, c in zip(LETTERS, example.meta["choices"], strict=False)
        )
        cat = example.meta.get("category")
        about = f" about {cat}" if cat else ""
        return (
            f"The following is a multiple choice question{about}. Think step by step and then "
            f'finish your answer with "The answer is (X)" where X is the correct letter choice.'
            f"\n\n{example.question}\n{opts}"
        )

    def extract(self, text: str) -> str | None:
        return extract_choice(text, letters=LETTERS)

    def equivalent(self, a: Any, b: Any) -> bool:
        return choice_equivalent(a, b)

    def grade(self, text: str, example: Example) -> float:
        choices = example.meta.get("choices")
        got = extract_choice(text, choices, letters=LETTERS[: len(choices)] if choices else LETTERS)
        return 1.0 if choice_equivalent(got, example.reference) else 0.0
