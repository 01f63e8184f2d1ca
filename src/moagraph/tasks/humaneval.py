"""HumanEval (MultiPL-E Python form): write a function, graded by its full ``check``."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from moagraph.tasks._common import FileTask, in_train_fraction, iter_bundled, read_rows
from moagraph.tasks.base import Example
from moagraph.tasks.grading.code import (
    TestProgram,
    extract_code,
    humaneval_program,
    humaneval_tests,
    run_test_program,
)
from moagraph.tasks.grading.sandbox import SandboxResult

CODE_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function "
    "in one ```python code block.\n\n```python\n{prompt}```"
)


class CodeTask(FileTask):
    """Shared by HumanEval and MBPP: the answer is code; it is graded by running
    the task's tests in the sandbox (time and memory limits per run)."""

    kind: ClassVar = "code"
    timeout_s: float = 10.0
    memory_mb: int = 512

    def extract(self, text: str) -> str | None:
        code = extract_code(text)
        return code if code.strip() else None

    def equivalent(self, a: Any, b: Any) -> bool:
        # Code is clustered by its normalised text: no cheap semantic equality exists.
        if a is None or b is None:
            return False
        return _squash(str(a)) == _squash(str(b))

    def program(self, text: str, example: Example) -> str:
        """Answer and tests as one program: for trusted code (reference solutions) only."""
        raise NotImplementedError

    def test_program(self, text: str, example: Example) -> TestProgram:
        """The answer split from its tests (the tests run where the answer cannot reach)."""
        raise NotImplementedError

    def run(self, text: str, example: Example) -> SandboxResult:
        """The sandbox result (status, stderr) behind :meth:`grade`."""
        return run_test_program(self.test_program(text, example), self.timeout_s, self.memory_mb)

    def grade(self, text: str, example: Example) -> float:
        return 1.0 if self.run(text, example).passed else 0.0

    async def agrade(self, text: str, example: Example) -> float:
        return await asyncio.to_thread(self.grade, text, example)


def _squash(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())


class HumanEvalTask(CodeTask):
    """HumanEval (161 problems in the shared file); (A, B) = (180, 115) from the Agent-REINFORCE pilot study.

    Published as one file, so ``train``/``test`` are a stable 20/80 split by a
    hash of the problem name (``all`` is every problem); ``sample`` holds 20
    problems of the test part.
    """

    name: ClassVar[str] = "humaneval"
    avg_input_tokens: ClassVar[int] = 180
    avg_output_tokens: ClassVar[int] = 115
    splits: tuple[str, ...] = ("sample", "train", "test", "all")

    def _load_split(self, split: str) -> list[Example]:
        if split == "sample":
            rows = list(iter_bundled("humaneval_sample.jsonl"))
        else:
            path = self.data_file("humaneval", "humaneval-py.jsonl", what="HumanEval JSONL")
            fields: dict[str, type | tuple[type, ...]] = {
                "name": str,
                "prompt": str,
                "test": str,
                "entry_point": str,
            }
            rows = [r for _, r in read_rows(path, fields, "HumanEval")]
            if split != "all":
                rows = [r for r in rows if in_train_fraction(r["name"]) == (split == "train")]
        return [
            Example(
                id=r["name"],
                question=r["prompt"],
                reference=r["test"],
                meta={"entry_point": r["entry_point"], "stop_tokens": r.get("stop_tokens", [])},
            )
            for r in rows
        ]

    def format_question(self, example: Example) -> str:
        return CODE_INSTRUCTION.format(prompt=example.question)

    def extract(self, text: str) -> str | None:
        code = extract_code(text)
        return code if code.strip() else None

    def program(self, text: str, example: Example) -> str:
        code = extract_code(text, example.meta["entry_point"])
        return humaneval_program(
            example.question, code, example.reference, example.meta["entry_point"]
        )

    def test_program(self, text: str, example: Example) -> TestProgram:
        code = extract_code(text, example.meta["entry_point"])
        return humaneval_tests(
            example.question, code, example.reference, example.meta["entry_point"]
        )
