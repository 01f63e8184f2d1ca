"""Judge-reply parsing and the early-stop rule."""

from __future__ import annotations

import pytest

from moagraph.route.judges import JudgeResult, judge_messages, judges_agree, parse_score

NASTY = [
    ("8", 8.0),
    ("  9\n", 9.0),
    ("8.5", 8.5),
    ("Score: 7", 7.0),
    ("score=6 because it is fine", 6.0),
    ("Rating: **9**", 9.0),
    ("**9**", 9.0),
    ("7/10", 7.0),
    ("I would give it 6 out of 10.", 6.0),
    ("Eight.", 8.0),
    ("7-8", 7.5),
    ("10", 10.0),
    ("1", 1.0),
    ("", None),
    (None, None),
    ("   ", None),
    ("11", None),
    ("0", None),
    ("75/100", None),
    ("The response is helpful.", None),
    ("Question: what is the capital", None),
    ("12-15", None),
    ("-3", None),
    ("9000", None),
]


@pytest.mark.parametrize("reply,expected", NASTY)
def test_parse_score_table(reply: str | None, expected: float | None) -> None:
    assert parse_score(reply) == expected


def test_judge_prompt_holds_question_and_cut_answer() -> None:
    msgs = judge_messages("What is 2+2?", "x" * 10_000)
    assert "What is 2+2?" in msgs[-1]["content"]
    assert len(msgs[-1]["content"]) < 5000
    assert msgs[-1]["content"].rstrip().endswith("Score (1-10):")


def test_agreement_rule() -> None:
    good = JudgeResult("a", {"a": 9.0, "b": 8.0, "c": 9.0})
    weak = JudgeResult("b", {"a": 3.0, "b": 9.0, "c": None})
    ok, why = judges_agree([good, weak], threshold=8.0, max_spread=2.0, min_judges=2)
    assert ok and "a mean" in why
    split = JudgeResult("a", {"a": 10.0, "b": 5.0, "c": 10.0})
    ok, why = judges_agree([split], threshold=8.0, max_spread=2.0, min_judges=2)
    assert not ok and "disagree" in why  # mean 8.33 >= 8 but spread 5 > 2
    ok2, why2 = judges_agree([JudgeResult("a", {"a": 7.0, "b": 7.0})], 8.0, 2.0, 2)
    assert not ok2 and "threshold" in why2
    lonely = JudgeResult("a", {"a": 10.0, "b": None})
    assert not judges_agree([lonely], 8.0, 2.0, 2)[0]
    assert not judges_agree([JudgeResult("a", {"a": None})], 8.0, 2.0, 1)[0]
