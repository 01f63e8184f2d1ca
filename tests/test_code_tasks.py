"""Code tasks: extraction from model output, HumanEval and MBPP grading in the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moagraph.tasks.base import TaskDataError
from moagraph.tasks.grading import extract_code, grade_humaneval, grade_mbpp
from moagraph.tasks.registry import get_task

HE = get_task("humaneval")
SAMPLE = {ex.id: ex for ex in HE.load("sample")}
ADD = SAMPLE["HumanEval_53_add"]


def test_extract_fenced_block_that_defines_the_entry_point() -> None:
    text = (
        "Here is a helper:\n```python\nimport math\n```\nand the answer:\n"
        "```python\ndef add(x, y):\n    return x + y\n\nif __name__ == '__main__':\n    print(add(1, 2))\n```\n"
        "Hope this helps!"
    )
    code = extract_code(text, "add")
    assert code.startswith("def add(x, y):")
    assert "__main__" not in code and "Hope" not in code


def test_extract_unlabelled_and_unterminated_fences() -> None:
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("```python\ndef f():\n    return 2\n") == "def f():\n    return 2\n"


def test_extract_raw_continuation_stops_at_prose() -> None:
    text = "    return x + y\n\nThis function adds two numbers.\nprint(add(1, 2))\n"
    assert extract_code(text) == "    return x + y\n"


def test_extract_raw_continuation_keeps_helpers() -> None:
    text = "    return helper(x) + y\n\ndef helper(v):\n    return v\n\nassert add(1, 2) == 3\n"
    code = extract_code(text)
    assert "def helper(v):" in code and "assert" not in code


@pytest.mark.parametrize(
    ("output", "passed"),
    [
        ("```python\ndef add(x: int, y: int) -> int:\n    return x + y\n```", True),
        ("    return x + y\n", True),  # a base model continuing the prompt
        ("    return x - y\n", False),
        ("I cannot solve this.", False),
    ],
)
def test_humaneval_grade(output: str, passed: bool) -> None:
    assert HE.grade(output, ADD) == (1.0 if passed else 0.0)


def test_humaneval_more_real_problems() -> None:
    incr = SAMPLE["HumanEval_42_incr_list"]
    unique = SAMPLE["HumanEval_34_unique"]
    assert HE.grade("    return [e + 1 for e in l]\n", incr) == 1.0
    assert HE.grade("```python\ndef unique(l):\n    return sorted(set(l))\n```", unique) == 1.0
    assert HE.grade("```python\ndef unique(l):\n    return list(set(l))[::-1]\n```", unique) == 0.0


def test_humaneval_run_reports_why() -> None:
    r = HE.run("    return x - y\n", ADD)
    assert r.status == "failed" and "AssertionError" in r.stderr


def test_grade_humaneval_pure_function() -> None:
    r = grade_humaneval("    return x + y\n", ADD.question, ADD.reference, ADD.meta["entry_point"])
    assert r.passed


async def test_agrade_in_a_thread() -> None:
    assert await HE.agrade("    return x + y\n", ADD) == 1.0


def test_code_vote_clustering_ignores_blank_lines() -> None:
    assert HE.equivalent("def f():\n\n    return 1\n", "def f():\n    return 1")
    assert not HE.equivalent("def f():\n    return 1\n", "def f():\n    return 2\n")


@pytest.mark.needs_shared_data("humaneval", "humaneval-py.jsonl")  # bare clone: tests/test_tasks.py
def test_humaneval_splits_are_disjoint_and_cover_all() -> None:
    train = {e.id for e in HE.load("train")}
    test = {e.id for e in HE.load("test")}
    every = {e.id for e in HE.load("all")}
    assert train and test and not (train & test)
    assert train | test == every and len(every) > 150
    assert set(SAMPLE) <= test


MBPP_ROWS = [
    {
        "task_id": 11,
        "text": "Write a function to return the square of a number.",
        "code": "def square(n):\n    return n * n",
        "test_list": ["assert square(3) == 9", "assert square(-2) == 4", "assert square(0) == 0"],
        "test_setup_code": "",
    },
    {
        "task_id": 12,
        "text": "Write a function that adds OFFSET to a number.",
        "code": "def shift(n):\n    return n + OFFSET",
        "test_list": ["assert shift(1) == 11", "assert shift(-10) == 0"],
        "test_setup_code": "OFFSET = 10",
    },
    {
        "task_id": 700,
        "text": "Write a function to negate a number.",
        "code": "def neg(n):\n    return -n",
        "test_list": ["assert neg(1) == -1"],
        "test_setup_code": "",
    },
]


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_mbpp_full_release_split_by_task_id(tmp_path: Path) -> None:
    _write(tmp_path / "mbpp" / "mbpp.jsonl", MBPP_ROWS)
    task = get_task("mbpp", data_dir=tmp_path)
    test = task.load("test")
    assert [e.id for e in test] == ["mbpp/11", "mbpp/12"]
    assert [e.id for e in task.load("train")] == ["mbpp/700"]
    ex = test[1]
    assert ex.meta["entry_point"] == "shift"
    assert "assert shift(1) == 11" in task.format_question(ex)
    # The reference solutions pass, with the setup code; a wrong one fails.
    for e, row in zip(test, MBPP_ROWS, strict=False):
        assert task.grade(f"```python\n{row['code']}\n```", e) == 1.0
    assert task.grade("```python\ndef shift(n):\n    return n + 1\n```", ex) == 0.0


def test_mbpp_split_file_and_pure_grader(tmp_path: Path) -> None:
    _write(tmp_path / "mbpp" / "test.jsonl", MBPP_ROWS[:1])
    task = get_task("mbpp", data_dir=tmp_path)
    assert len(task.load("test")) == 1
    r = grade_mbpp("def square(n):\n    return n ** 2\n", MBPP_ROWS[0]["test_list"])
    assert r.passed


def test_mbpp_missing_file_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(TaskDataError, match=r"mbpp/test\.jsonl") as err:
        get_task("mbpp", data_dir=tmp_path).load("test")
    assert isinstance(err.value, ValueError)
    assert "MOAGRAPH_DATA_DIR" in str(err.value)
