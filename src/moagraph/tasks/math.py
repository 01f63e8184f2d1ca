"""MATH (Hendrycks et al. 2021): competition problems, answer in the last \\boxed{}."""

from __future__ import annotations

from typing import Any, ClassVar

from moagraph.tasks._common import iter_bundled, read_jsonl
from moagraph.tasks.base import Example, TaskError
from moagraph.tasks.grading.math_equiv import extract_boxed
from moagraph.tasks.gsm8k import MathLikeTask


class MathTask(MathLikeTask):
    """MATH; (A, B) = (202, 275) from the Agent-REINFORCE pilot study."""

    name: ClassVar[str] = "math"
    avg_input_tokens: ClassVar[int] = 202
    avg_output_tokens: ClassVar[int] = 275
    splits: tuple[str, ...] = ("sample", "train", "test", "zeroeval")

    def _load_split(self, split: str) -> list[Example]:
        if split == "zeroeval":  # MATH level 5 as recorded by ZeroEval (pool zeroeval-math)
            return self._zeroeval_split("math-l5", "zeroeval-math", "math")
        if split == "sample":
            rows = list(iter_bundled("math_test_sample.jsonl"))
        else:
            rows = read_jsonl(self.data_file("math", f"{split}.jsonl", what="MATH JSONL"))
        return [self._example(r) for r in rows]

    @staticmethod
    def _example(r: dict[str, Any]) -> Example:
        ref = extract_boxed(r["solution"])
        if ref is None:
            raise TaskError(f"MATH record {r.get('id')!r} has no \\boxed{{}} answer in `solution`")
        return Example(
            id=r["id"],
            question=r["problem"],
            reference=ref,
            meta={"subject": r.get("subject"), "level": r.get("level"), "solution": r["solution"]},
        )
