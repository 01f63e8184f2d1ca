"""Multiple-choice letter extraction."""

from __future__ import annotations

import pytest

from moagraph.tasks.grading import choice_equivalent, extract_choice

CHOICES = ["Paris", "London", "Berlin", "Madrid"]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("The answer is (B)", "B"),
        ("B.", "B"),
        ("**C**", "C"),
        ("Answer: d", "D"),
        ("answer: (c) because it is in Germany", "C"),
        ("b", "B"),
        ("(A)", "A"),
        ("A) Paris", "A"),
        ("A good question. The answer is D.", "D"),
        ("Let me think. A is wrong. B is wrong. So the answer is C", "C"),
        ("The correct answer is C: Berlin", "C"),
        ("Option C is correct.", "C"),
        ("The answer is: **B**", "B"),
        ("\\boxed{B}", "B"),
        ("Answer: A. Paris", "A"),
        ("I would pick C", "C"),
        ("I think it is Berlin.", "C"),  # choice text fallback
        ("London, not Paris? No: Paris.", "A"),  # last mention wins
        ("A lot of people think so", None),  # the article "A" is not an answer
        ("Answer: The capital", None),
        ("", None),
    ],
)
def test_extract_choice(text: str, want: str | None) -> None:
    assert extract_choice(text, CHOICES) == want


def test_longer_option_wins_at_the_same_spot() -> None:
    assert extract_choice("It is New York", ["York", "New York"], letters="AB") == "B"


def test_more_letters() -> None:
    assert extract_choice("The answer is (E)", letters="ABCDE") == "E"
    assert extract_choice("The answer is (E)") is None  # E is not an option of ABCD


def test_too_many_choices_is_a_user_error() -> None:
    with pytest.raises(ValueError, match="letters"):
        extract_choice("A", ["1", "2", "3", "4", "5"])


def test_choice_equivalent() -> None:
    assert choice_equivalent("b", "B")
    assert not choice_equivalent("A", "B")
    assert not choice_equivalent(None, "A")
