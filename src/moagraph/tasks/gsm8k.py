"""GSM8K: grade-school word problems with a numeric final answer."""

from __future__ import annotations

from typing import Any, ClassVar

from moagraph.tasks._common import FileTask, iter_bundled, read_jsonl, read_rows
from moagraph.tasks.base import Example, TaskError
from moagraph.tasks.grading.math_equiv import (
    equivalent,
    extract_math_answer,
    gsm8k_reference,
    numeric_answer,
)

MATH_INSTRUCTION = (
    "Solve the following math problem step by step. "
    "Write the final answer at the end as \\boxed{{ANSWER}}.\n\n"
)


class MathLikeTask(FileTask):
    """Shared by GSM8K and MATH: boxed final answer, math-verify equivalence."""

    kind: ClassVar = "math"

    def format_question(self, example: Example) -> str:
        return MATH_INSTRUCTION.replace("{ANSWER}", "answer") + example.question

    def extract(self, text: str) -> str | None:
        return extract_math_answer(text)

    def equivalent(self, a: Any, b: Any) -> bool:
        return equivalent(a, b)

    def grade(self, text: str, example: Example) -> float:
        return 1.0 if equivalent(self.extract(text), example.reference) else 0.0

    def _zeroeval_split(self, sub: str, pool: str, kind: str) -> list[Example]:
        """ZeroEval's questions (the ones its replay pool recorded).

        From ``<data_dir>/zeroeval/<sub>/questions.jsonl`` when present (all of
        them, however many), else from the bundled pool ``pool``'s queries, so
        ``--split zeroeval`` works offline; ids match the pool's query ids.
        """
        from moagraph.pools.ground_truth import zeroeval_query_id, zeroeval_reference

        base = self.data_dir
        qfile = base / "zeroeval" / sub / "questions.jsonl" if base is not None else None
        if qfile is not None and qfile.exists():
            return [
                Example(
                    id=zeroeval_query_id(kind, r["id"]),
                    question=r["question"],
                    reference=zeroeval_reference(kind, r["answer"]),
                    meta={"zeroeval_id": r["id"]},
                )
                for r in read_jsonl(qfile)
            ]
        from moagraph.pools import resolve_pool

        rows = read_jsonl(resolve_pool(pool).parent / "queries.jsonl")
        return [
            Example(
                id=r["query_id"],
                question=r["question"],
                reference=r["reference"],
                meta=r.get("meta", {}),
            )
            for r in rows
        ]


class GSM8KTask(MathLikeTask):
    """GSM8K (openai/grade-school-math, MIT).

    (A, B) = (194, 121) Gemma-3 tokens, estimated from the data because the
    papers give none: A = mean question tokens (60.7) + the prompt overhead
    implied by MATH's A (202 - 68.8 question tokens); B = mean reference
    solution tokens without calculator annotations (93.7) x 1.29, the ratio of
    MATH's B (275) to its mean reference solution (213.0 tokens).
    """

    name: ClassVar[str] = "gsm8k"
    avg_input_tokens: ClassVar[int] = 194
    avg_output_tokens: ClassVar[int] = 121
    splits: tuple[str, ...] = ("sample", "train", "test", "zeroeval")

    def extract(self, text: str) -> str | None:
        """The final answer; a worded one ("84 grains", "= 40") is reduced to its number."""
        ans = extract_math_answer(text)
        num = numeric_answer(ans)
        return num if num is not None else ans

    def _load_split(self, split: str) -> list[Example]:
        if split == "zeroeval":
            return self._zeroeval_split("gsm", "zeroeval-gsm8k", "gsm")
        if split == "sample":
            return [
                self._example("test", r["idx"], r) for r in iter_bundled("gsm8k_test_sample.jsonl")
            ]
        path = self.data_file("gsm8k", f"{split}.jsonl", what="GSM8K {question, answer} JSONL")
        rows = read_rows(path, {"question": str, "answer": str}, "GSM8K")
        out = []
        for i, (lineno, r) in enumerate(rows):
            try:
                out.append(self._example(split, i, r))
            except ValueError:  # the answer lacks its final "#### N" line
                raise TaskError(
                    f"{path}:{lineno}: GSM8K field `answer` has no final '#### N' line (the "
                    f"reference answer), got {r['answer'][-60:]!r}; end the answer with "
                    "'#### <number>' as in openai/grade-school-math, or remove that line"
                ) from None
        return out

    @staticmethod
    def _example(split: str, idx: int, r: dict[str, Any]) -> Example:
        return Example(
            id=f"gsm8k/{split}/{idx}",
            question=r["question"],
            reference=gsm8k_reference(r["answer"]),
            meta={"solution": r["answer"]},
        )
