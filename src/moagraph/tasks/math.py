"""MATH (Hendrycks et al. 2021): competition problems, answer in the last \\boxed{}."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from moagraph.tasks._common import iter_bundled, read_rows
from moagraph.tasks.base import Example, TaskError
from moagraph.tasks.grading.math_equiv import equivalent, extract_boxed, normalize_answer
from moagraph.tasks.gsm8k import MathLikeTask

_BASE_REF_RE = re.compile(r"^(-?[0-9A-Z]+)_\{?(\d+)\}?$")


class MathTask(MathLikeTask):
    """MATH; (A, B) = (202, 275) from the Agent-REINFORCE pilot study."""

    name: ClassVar[str] = "math"
    avg_input_tokens: ClassVar[int] = 202
    avg_output_tokens: ClassVar[int] = 275
    splits: tuple[str, ...] = ("sample", "train", "test", "zeroeval")

    def grade(self, text: str, example: Example) -> float:
        """Equivalence with the reference; a reference in base b ("1112112_3") also
        accepts the bare digits, since the question fixes the base ("... in base
        three?"). ``equivalent`` itself keeps 52 and 52_8 apart (vote clustering)."""
        ans = self.extract(text)
        if equivalent(ans, example.reference):
            return 1.0
        m = _BASE_REF_RE.match(normalize_answer(str(example.reference)))
        if m and ans is not None and normalize_answer(ans) == m.group(1):
            return 1.0
        return 0.0

    def _load_split(self, split: str) -> list[Example]:
        if split == "zeroeval":  # MATH level 5 as recorded by ZeroEval (pool zeroeval-math)
            return self._zeroeval_split("math-l5", "zeroeval-math", "math")
        if split == "sample":
            return [self._example(r) for r in iter_bundled("math_test_sample.jsonl")]
        path = self.data_file("math", f"{split}.jsonl", what="MATH JSONL")
        fields: dict[str, type | tuple[type, ...]] = {"id": str, "problem": str, "solution": str}
        return [self._example(r, f"{path}:{line}") for line, r in read_rows(path, fields, "MATH")]

    @staticmethod
    def _example(r: dict[str, Any], where: str = "MATH record") -> Example:
        ref = extract_boxed(r["solution"])
        if ref is None:
            raise TaskError(
                f"{where}: MATH record {r.get('id')!r} has no \\boxed{{}} answer in "
                "`solution`; fix or remove that line"
            )
        return Example(
            id=r["id"],
            question=r["problem"],
            reference=ref,
            meta={"subject": r.get("subject"), "level": r.get("level"), "solution": r["solution"]},
        )
