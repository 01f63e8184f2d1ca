"""Your own task: a JSONL file of questions plus a grader name.

One row a line: ``{"question": str, "reference": ..., "id"?: str, "choices"?: [str]}``.
The task spec is ``jsonl:PATH:GRADER`` (e.g. ``--task jsonl:my.jsonl:number``), usable
wherever a task name is (``eval``, ``record``, ``search``, ``route``, ``pool import``);
a relative PATH is read from the current folder, else from ``--data-dir``.

Graders (what "the same answer" means):

* ``exact``: the same string after trimming, collapsing whitespace and case-folding;
* ``number``: the same number (``1,000`` = ``1000.0``; ``1/2`` = ``0.5``);
* ``math``: mathematical equivalence (the MATH grader: ``\\frac{1}{2}`` = ``0.5``);
* ``choice``: the same option letter (rows carry ``choices``; ``reference`` a letter
  or a 0-based index);
* ``code``: ``reference`` is Python test code (asserts) run against the answer's code
  in the sandbox; the answer passes if every assert does.

Every split name (``test``, ``all``, ...) is the whole file: ``search`` splits it into
train / validation / test by a hash of the ids itself.
"""

from __future__ import annotations

import asyncio
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

from moagraph.tasks._common import FileTask, read_jsonl_numbered, seeded_sample
from moagraph.tasks.base import Example, TaskError, TaskKind
from moagraph.tasks.grading.choice import choice_equivalent, extract_choice
from moagraph.tasks.grading.code import TestProgram, extract_code, run_test_program
from moagraph.tasks.grading.math_equiv import (
    equivalent as math_equivalent,
)
from moagraph.tasks.grading.math_equiv import (
    extract_math_answer,
    normalize_answer,
    numeric_answer,
)

__all__ = ["GRADERS", "JsonlTask", "is_jsonl_spec", "parse_jsonl_spec"]

GRADERS: dict[str, str] = {
    "exact": "the same string after whitespace and case normalisation",
    "number": "the same number",
    "math": "mathematical equivalence (the MATH grader)",
    "choice": "the same option letter (rows carry `choices`)",
    "code": "`reference` holds Python asserts, run against the answer in the sandbox",
}
"""Grader names of a JSONL task and what each calls the same answer."""

_KINDS: dict[str, TaskKind] = {
    "exact": "exact",
    "number": "math",
    "math": "math",
    "choice": "choice",
    "code": "code",
}
_PREFIX = "jsonl:"
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_INSTRUCTIONS = {
    "exact": "Answer the question. Finish with a last line 'Answer: <your answer>'.\n\n",
    "number": "Answer the question. Finish with a last line 'Answer: <number>'.\n\n",
    "math": (
        "Solve the following problem step by step. Write the final answer at the end as "
        "\\boxed{answer}.\n\n"
    ),
    "code": "Write Python code for the task below. Reply with the code in one ```python block.\n\n",
}
_ANSWER_LINE_RE = re.compile(r"(?im)^\s*\**\s*(?:final\s+)?answer\s*\**\s*[:：]\s*(.+?)\s*$")


def is_jsonl_spec(name: str) -> bool:
    """Whether a task name is a JSONL task spec (``jsonl:PATH:GRADER``)."""
    return name.strip().lower().startswith(_PREFIX)


def _graders() -> str:
    return ", ".join(GRADERS)


def parse_jsonl_spec(name: str) -> tuple[str, str]:
    """``jsonl:PATH:GRADER`` -> (PATH, GRADER); a clear error naming the fix otherwise."""
    body = name.strip()[len(_PREFIX) :]
    path, sep, grader = body.rpartition(":")
    if not sep or not path:
        raise TaskError(
            f"--task {name!r}: name the grader after the file, e.g. "
            f"jsonl:{body or 'questions.jsonl'}:number (graders: {_graders()})"
        )
    g = grader.strip().lower()
    if g not in GRADERS:
        raise TaskError(
            f"--task {name!r}: unknown grader {grader!r}; use one of: {_graders()} "
            f"(e.g. jsonl:{path}:exact)"
        )
    return path, g


class JsonlTask(FileTask):
    """Questions and references from a JSONL file, graded by a named grader."""

    name: ClassVar[str] = "jsonl"  # replaced per instance by the spec
    kind: ClassVar[TaskKind] = "exact"  # replaced per instance by the grader's answer kind
    avg_input_tokens: ClassVar[int] = 150
    avg_output_tokens: ClassVar[int] = 200
    splits: tuple[str, ...] = ("test", "all", "train", "validation", "sample")
    timeout_s: float = 10.0
    memory_mb: int = 512

    def __init__(self, path: str | Path, grader: str, data_dir: str | Path | None = None) -> None:
        super().__init__(data_dir=data_dir)
        if grader not in GRADERS:
            raise TaskError(f"unknown grader {grader!r}; use one of: {_graders()}")
        self.path = Path(path).expanduser()
        self.grader = grader
        self.name = f"{_PREFIX}{path}:{grader}"  # type: ignore[misc]
        self.kind = _KINDS[grader]  # type: ignore[misc]  # per instance: the grader's kind

    @classmethod
    def from_spec(cls, spec: str, data_dir: str | Path | None = None) -> JsonlTask:
        path, grader = parse_jsonl_spec(spec)
        return cls(path, grader, data_dir=data_dir)

    # ------------------------------------------------------------------ data

    def file(self) -> Path:
        """The JSONL file: PATH as given (absolute or from the cwd), else under --data-dir."""
        if self.path.is_absolute() or self.path.exists():
            cand = self.path
        else:
            base = self.data_dir
            cand = base / self.path if base is not None else self.path
        if not cand.exists():
            where = f"{self.path.resolve()}"
            base = self.data_dir
            if not self.path.is_absolute() and base is not None:
                where += f" or {base / self.path}"
            raise TaskError(
                f"--task {self.name}: the file {where} does not exist; give the JSONL's path "
                "(absolute, from the current folder, or under --data-dir)"
            )
        return cand

    def load(self, split: str = "test", n: int | None = None, seed: int = 0) -> list[Example]:
        if split not in self.splits:
            raise TaskError(
                f"task {self.name!r} has no split {split!r}; use one of: {', '.join(self.splits)} "
                "(each is the whole file)"
            )
        if "all" not in self._cache:
            self._cache["all"] = self._read()
        return seeded_sample(self._cache["all"], n, seed)

    def _read(self) -> list[Example]:
        path = self.file()
        out: list[Example] = []
        seen: dict[str, int] = {}
        for lineno, row in read_jsonl_numbered(path):
            where = f"{path}:{lineno}"
            ex = self._example(row, where, len(out))
            if ex.id in seen:
                raise TaskError(
                    f"{where}: id {ex.id!r} repeats line {seen[ex.id]}; ids must be unique "
                    "(fix one, or drop `id` to number the rows)"
                )
            seen[ex.id] = lineno
            out.append(ex)
        if not out:
            raise TaskError(f"{path}: no questions (one JSON object a line)")
        return out

    def _example(self, row: Any, where: str, i: int) -> Example:
        layout = '{"question": str, "reference": ..., "id"?: str, "choices"?: [str]}'
        if not isinstance(row, dict):
            raise TaskError(
                f"{where}: a row must be a JSON object {layout}, got {type(row).__name__}; "
                "fix or remove that line"
            )
        for field in ("question", "reference"):
            if field not in row or row[field] is None:
                raise TaskError(
                    f"{where}: field `{field}` is missing (rows need {layout}); fix or remove "
                    "that line"
                )
        q = row["question"]
        if not isinstance(q, str) or not q.strip():
            raise TaskError(f"{where}: field `question` must be a non-empty string")
        ref = row["reference"]
        meta: dict[str, Any] = {}
        if self.grader == "choice":
            ref, meta["choices"] = self._choice_ref(row, ref, where)
        elif self.grader == "code":
            if not isinstance(ref, str) or not ref.strip():
                raise TaskError(
                    f"{where}: field `reference` must be Python test code (asserts) for the "
                    "code grader"
                )
            if "entry_point" in row:
                meta["entry_point"] = str(row["entry_point"])
        elif self.grader == "number":
            if isinstance(ref, bool) or not isinstance(ref, (int, float, str)):
                raise TaskError(
                    f"{where}: field `reference` must be a number for the number grader"
                )
            if _number(str(ref)) is None:
                raise TaskError(
                    f"{where}: field `reference` is {ref!r}, not a number (number grader); "
                    "fix it or use another grader (exact, math)"
                )
            ref = str(ref)
        else:
            if isinstance(ref, (dict, list)):
                raise TaskError(
                    f"{where}: field `reference` must be a string or a number for the "
                    f"{self.grader} grader, got {type(ref).__name__}"
                )
            ref = str(ref)
        rid = row.get("id")
        eid = str(rid) if rid is not None and str(rid).strip() else f"{self.path.stem}/{i}"
        for k, v in row.items():
            if k not in ("question", "reference", "id", "choices", "entry_point"):
                meta[k] = v
        return Example(id=eid, question=q, reference=ref, meta=meta)

    @staticmethod
    def _choice_ref(row: dict[str, Any], ref: Any, where: str) -> tuple[str, list[str]]:
        choices = row.get("choices")
        if not isinstance(choices, list) or len(choices) < 2:
            raise TaskError(
                f"{where}: field `choices` (a list of at least 2 option texts) is needed by "
                "the choice grader"
            )
        if len(choices) > len(_LETTERS):
            raise TaskError(f"{where}: field `choices` has more than {len(_LETTERS)} options")
        if isinstance(ref, int) and not isinstance(ref, bool):
            if not 0 <= ref < len(choices):
                raise TaskError(
                    f"{where}: field `reference` index {ref} is out of range for "
                    f"{len(choices)} choices"
                )
            return _LETTERS[ref], [str(c) for c in choices]
        letter = str(ref).strip().strip("()").upper()
        if letter not in _LETTERS[: len(choices)]:
            raise TaskError(
                f"{where}: field `reference` {ref!r} is not a letter A-{_LETTERS[len(choices) - 1]} "
                "or a 0-based index of `choices`"
            )
        return letter, [str(c) for c in choices]

    # ------------------------------------------------------------------ prompt

    def format_question(self, example: Example) -> str:
        if self.grader == "choice":
            opts = "\n".join(
                f"{L}. {c}" for L, c in zip(_LETTERS, example.meta["choices"], strict=False)
            )
            return (
                "The following is a multiple choice question. Think it through briefly, "
                f'then finish with "The answer is (X)" where X is the letter.\n\n'
                f"{example.question}\n{opts}"
            )
        return _INSTRUCTIONS[self.grader] + example.question

    # ------------------------------------------------------------------ answers

    def extract(self, text: str) -> Any:
        if self.grader == "choice":
            return extract_choice(text)
        if self.grader == "code":
            code = extract_code(text)
            return code if code.strip() else None
        if self.grader == "math":
            return extract_math_answer(text)
        if not text or not text.strip():
            return None
        lines = _ANSWER_LINE_RE.findall(text)
        ans = lines[-1] if lines else None
        if self.grader == "number":
            if ans is None:
                ans = extract_math_answer(text)
            num = numeric_answer(ans)
            return num if num is not None else ans
        if ans is None:  # exact: a boxed answer, else the last non-empty line
            boxed = extract_math_answer(text) if "\\boxed" in text else None
            ans = boxed if boxed is not None else text.strip().splitlines()[-1]
        return ans.strip().strip("*").strip() or None

    def equivalent(self, a: Any, b: Any) -> bool:
        if a is None or b is None:
            return False
        if self.grader == "exact":
            return _exact_key(a) == _exact_key(b)
        if self.grader == "number":
            x, y = _number(str(a)), _number(str(b))
            return x is not None and x == y
        if self.grader == "math":
            return math_equivalent(a, b)
        if self.grader == "choice":
            return choice_equivalent(a, b)
        return "\n".join(ln.rstrip() for ln in str(a).strip().splitlines() if ln.strip()) == (
            "\n".join(ln.rstrip() for ln in str(b).strip().splitlines() if ln.strip())
        )

    def test_program(self, text: str, example: Example) -> TestProgram:
        """The answer's code (candidate process) and the row's tests (judge)."""
        code = extract_code(text, example.meta.get("entry_point"))
        entry = example.meta.get("entry_point")
        return TestProgram(code, str(example.reference), "", (entry,) if entry else ())

    def grade(self, text: str, example: Example) -> float:
        if self.grader == "code":
            res = run_test_program(self.test_program(text, example), self.timeout_s, self.memory_mb)
            return 1.0 if res.passed else 0.0
        if self.grader == "choice":
            got = extract_choice(text, example.meta.get("choices"))
            return 1.0 if choice_equivalent(got, example.reference) else 0.0
        return 1.0 if self.equivalent(self.extract(text), example.reference) else 0.0

    async def agrade(self, text: str, example: Example) -> float:
        if self.grader == "code":
            return await asyncio.to_thread(self.grade, text, example)
        return self.grade(text, example)


def _exact_key(s: Any) -> str:
    return " ".join(str(s).split()).casefold()


def _number(s: str) -> Fraction | None:
    """The number a string states (``1,000``, ``-2.50``, ``3/4``, ``$12``, ``45%``), or None."""
    t = normalize_answer(s).replace(",", "").strip()
    t = t.lstrip("$").rstrip("%").strip()
    m = re.fullmatch(r"([-+]?)\\frac\{(-?\d+)\}\{(-?\d+)\}", t)
    try:
        if m:
            v = Fraction(int(m.group(2)), int(m.group(3)))
            return -v if m.group(1) == "-" else v
        if re.fullmatch(r"[-+]?\d+\s*/\s*\d+", t):
            a, b = t.split("/")
            return Fraction(int(a), int(b))
        if re.fullmatch(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", t):
            return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    return None
