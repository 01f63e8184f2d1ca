"""Math answer extraction and equivalence (what vote nodes cluster with)."""

from __future__ import annotations

import pytest

from moagraph.tasks.grading import equivalent, extract_boxed, extract_math_answer, normalize_answer
from moagraph.tasks.registry import get_task

SAME = [
    ("\\frac{1}{2}", "0.5"),
    ("1/2", "\\dfrac{1}{2}"),
    ("\\frac12", "0.5"),
    ("\\tfrac{3}{4}", "0.75"),
    ("1,000", "1000"),
    ("1,234,567", "1234567"),
    ("x = 3", "3"),
    ("5 dollars", "5"),
    ("\\$18.00", "18"),
    ("5 \\text{cm}", "5"),
    ("\\text{5 cm}", "5"),
    ("12\\text{ inches}^2", "12"),
    ("5 \\text{m}^2", "5"),
    ("50\\%", "50"),
    ("30^\\circ", "30"),
    ("30^{\\circ}", "30 degrees"),
    ("[1,2)", "[1, 2)"),
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("\\left(1,2\\right)", "(1,2)"),
    ("\\left( \\frac12, -3 \\right)", "(0.5,-3)"),
    ("-3", "-3.0"),
    ("-\\frac{2}{3}", "-2/3"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("3\\sqrt3", "\\sqrt{27}"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"),
    ("\\pi/2", "\\frac{\\pi}{2}"),
    ("x^2+2x+1", "(x+1)^2"),
    ("(45x + 28)(x + 2)", "45x^2+118x+56"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("0.333333", "\\frac{1}{3}"),
    ("$\\boxed{7}$", "7"),
]

DIFFERENT = [
    ("3", "4"),
    ("-3", "3"),
    ("(1,2)", "(2,1)"),
    ("[1,2)", "(1,2)"),
    ("(1,2)", "(1,2,3)"),
    ("-1", "-\\frac{2010012}{2010013}"),
    ("0.33", "\\frac{1}{3}"),
    ("x^2+2x+2", "(x+1)^2"),
    ("2x", "2y"),
    ("\\sqrt{2}", "1.41"),
    ("1,000", "1,001"),
    ("50\\%", "5"),
    ("3", "3s^2"),  # a single letter after a number is a variable, not a unit
    ("52", "52_8"),  # a base-8 numeral
    (
        "\\begin{pmatrix} 0 & 0 \\\\ 0 & 1 \\end{pmatrix}",
        "\\begin{pmatrix} 1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
    ),
]


@pytest.mark.parametrize(("a", "b"), SAME)
def test_equivalent_pairs(a: str, b: str) -> None:
    assert equivalent(a, b) and equivalent(b, a)


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different_pairs(a: str, b: str) -> None:
    assert not equivalent(a, b) and not equivalent(b, a)


def test_none_and_empty_match_nothing() -> None:
    assert not equivalent(None, None)
    assert not equivalent(None, "3")
    assert not equivalent("", "")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("so the area is \\boxed{\\frac{1}{\\sqrt{2}}}.", "\\frac{1}{\\sqrt{2}}"),
        ("first \\boxed{1} then \\boxed{\\{a, \\{b\\}\\}}", "\\{a, \\{b\\}\\}"),
        ("\\boxed 5 apples", "5"),
        ("\\fbox{12}", "12"),
        ("cut off \\boxed{\\frac{1", None),
        ("no box here", None),
    ],
)
def test_extract_boxed(text: str, want: str | None) -> None:
    assert extract_boxed(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Janet sells 9 eggs.\n#### 1,234", "1,234"),
        ("Thus the answer is $\\frac12$.", "\\frac12"),
        ("The final answer is: 42.", "42"),
        ("We get 3 apples and 4.5 pears.", "4.5"),
        ("It costs -7 dollars", "-7"),
        ("x \\boxed{3} #### 4", "3"),  # boxed wins
        ("I do not know.", None),
        ("", None),
    ],
)
def test_extract_math_answer(text: str, want: str | None) -> None:
    assert extract_math_answer(text) == want


def test_normalize_is_idempotent() -> None:
    for a, b in SAME:
        for s in (a, b):
            n = normalize_answer(s)
            assert normalize_answer(n) == n


def test_reference_solutions_grade_correct_and_others_not() -> None:
    """Real data: each reference solution scores 1 on its own problem; the solution
    of a problem with a different answer scores 0."""
    for name in ("gsm8k", "math"):
        task = get_task(name)
        exs = task.load("sample")
        assert len(exs) == 40
        for i, ex in enumerate(exs):
            assert task.grade(ex.meta["solution"], ex) == 1.0, (ex.id, ex.reference)
            other = exs[(i + 1) % len(exs)]
            if not equivalent(other.reference, ex.reference):
                assert task.grade(other.meta["solution"], ex) == 0.0, (ex.id, other.id)


def test_distinct_math_references_stay_distinct() -> None:
    """Vote clustering must not merge different answers: the sample's 37 distinct
    references (integers, radicals, intervals, expressions) stay apart."""
    refs = sorted({ex.reference for ex in get_task("math").load("sample")})
    assert len(refs) > 30
    merged = [(a, b) for i, a in enumerate(refs) for b in refs[i + 1 :] if equivalent(a, b)]
    assert merged == []
