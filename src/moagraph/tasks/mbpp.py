"""MBPP (Austin et al. 2021): short Python problems graded by their asserts.

MBPP is not in the shared data; users bring the standard JSONL
``{task_id, text, code, test_list, test_setup_code}`` as
``<data_dir>/mbpp/<split>.jsonl``, or the single ``<data_dir>/mbpp/mbpp.jsonl``
release, split by the paper's task_id ranges (test 11-510, train 601-974,
validation 511-600, prompt 1-10).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from moagraph.tasks._common import DATA_HINT, iter_bundled, read_rows
from moagraph.tasks.base import Example, TaskDataError, TaskError
from moagraph.tasks.grading.code import TestProgram, extract_code, mbpp_program, mbpp_tests
from moagraph.tasks.humaneval import CodeTask

_RANGES = {"test": (11, 510), "train": (601, 974), "validation": (511, 600), "prompt": (1, 10)}


def _id(r: dict[str, Any], path: Any, line: int) -> int:
    try:
        return int(r["task_id"])
    except ValueError:
        raise TaskError(
            f"{path}:{line}: MBPP field `task_id` is {r['task_id']!r}, expected an integer; "
            "fix or remove that line"
        ) from None


class MBPPTask(CodeTask):
    """MBPP; (A, B) estimated like HumanEval's (180, 115): the prompts are shorter
    but carry three asserts, the solutions are shorter."""

    name: ClassVar[str] = "mbpp"
    avg_input_tokens: ClassVar[int] = 150
    avg_output_tokens: ClassVar[int] = 100
    splits: tuple[str, ...] = ("sample", "train", "test", "validation", "prompt")

    def _load_split(self, split: str) -> list[Example]:
        if split == "sample":  # bundled: 20 test-split problems, verbatim
            return [
                self._example(i, r) for i, r in enumerate(iter_bundled("mbpp_test_sample.jsonl"))
            ]
        base = self.data_dir
        root = base / "mbpp" if base is not None else None
        fields: dict[str, type | tuple[type, ...]] = {
            "task_id": (int, str),
            "text": str,
            "test_list": list,
        }
        if root is not None and (root / f"{split}.jsonl").exists():
            path = root / f"{split}.jsonl"
            rows = read_rows(path, fields, "MBPP")
        elif root is not None and (root / "mbpp.jsonl").exists():
            lo, hi = _RANGES[split]
            path = root / "mbpp.jsonl"
            rows = [
                (ln, r) for ln, r in read_rows(path, fields, "MBPP") if lo <= _id(r, path, ln) <= hi
            ]
        else:
            where = str(root) if root is not None else "<data_dir>/mbpp (no data dir found)"
            raise TaskDataError(
                f"task 'mbpp': no {split!r} data in {where}; put the MBPP JSONL "
                f"({{task_id, text, code, test_list, test_setup_code}}) at "
                f"<data_dir>/mbpp/{split}.jsonl or the full release at <data_dir>/mbpp/mbpp.jsonl; "
                f"{DATA_HINT}"
            )
        return [self._example(i, r, f"{path}:{ln}") for i, (ln, r) in enumerate(rows)]

    @staticmethod
    def _example(i: int, r: dict[str, Any], where: str = "") -> Example:
        missing = [k for k in ("task_id", "text", "test_list") if k not in r]
        if missing:
            raise TaskError(
                f"{where or f'MBPP record {i}'}: lacks field(s) {', '.join(missing)}; "
                "see the MBPP JSONL layout"
            )
        tests = list(r["test_list"])
        m = re.search(r"assert\s+(?:not\s+)?\(?\s*([A-Za-z_]\w*)\s*\(", tests[0]) if tests else None
        return Example(
            id=f"mbpp/{r['task_id']}",
            question=r["text"],
            reference=tests,
            meta={
                "entry_point": m.group(1) if m else None,
                "test_setup_code": r.get("test_setup_code", "") or "",
                "solution": r.get("code", ""),
            },
        )

    def format_question(self, example: Example) -> str:
        shown = "\n".join(example.reference[:3])
        return (
            f"{example.question}\nYour code should pass these tests:\n\n{shown}\n\n"
            "Reply with the Python function in one ```python code block."
        )

    def program(self, text: str, example: Example) -> str:
        code = extract_code(text, example.meta.get("entry_point"))
        return mbpp_program(code, example.reference, example.meta.get("test_setup_code", ""))

    def test_program(self, text: str, example: Example) -> TestProgram:
        entry = example.meta.get("entry_point")
        code = extract_code(text, entry)
        setup = example.meta.get("test_setup_code", "")
        return mbpp_tests(code, example.reference, setup, entry, example.meta.get("solution", ""))
