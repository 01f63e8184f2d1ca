"""Mixture of judges: each answering model rates its own answer and the others'.

Scores are on a fixed 1-10 scale. Judge replies from small models are often
malformed ("Eight.", "**7/10**", "I'd say 11", nothing at all), so parsing is
tolerant and anything it cannot read confidently is *missing* (None), never
an exception and never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from moagraph.models.base import ChatMessage

SCALE_MIN, SCALE_MAX = 1, 10

JUDGE_TEMPLATE = (
    "Rate how well the response answers the question, on a scale of 1 (useless or wrong) "
    "to 10 (excellent, correct and complete). Reply with the number only.\n\n"
    "Question: {question}\n\n"
    "Response: {answer}\n\n"
    "Score (1-10):"
)
"""Plain completion style: a base model without a chat template continues it with a number."""

MAX_JUDGED_CHARS = 4000  # long answers are cut for the judge prompt (keeps judge calls cheap)


def judge_messages(question: str, answer: str) -> list[ChatMessage]:
    text = answer if len(answer) <= MAX_JUDGED_CHARS else answer[:MAX_JUDGED_CHARS] + " [...]"
    return [{"role": "user", "content": JUDGE_TEMPLATE.format(question=question, answer=text)}]


_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_NUM = r"(\d+(?:\.\d+)?)"
# Ordered from most to least explicit; the first pattern that matches decides.
_PATTERNS = [
    re.compile(_NUM + r"\s*(?:/|out of)\s*10\b", re.I),  # "7/10", "7 out of 10"
    re.compile(r"\b(?:score|rating|rate|grade)\w*\s*(?:is|of|:|=)?\s*[*\"'(\[]*\s*" + _NUM, re.I),
    re.compile(r"^[^\w-]*" + _NUM + r"(?![\d.])(?!\s*(?:/|out of)\s*\d)"),  # leading: "8", "**9**"
]
_RANGE = re.compile(r"^\W*(\d+)\s*(?:-|–|to)\s*(\d+)\b")
_WORD = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.I)


def parse_score(reply: str | None) -> float | None:
    """The 1-10 score in a judge reply, or None when there is no confident reading.

    Accepts "8", "8.5", "Score: 7", "7/10", "**9**", "Eight", "7-8" (-> 7.5).
    Rejects out-of-scale numbers ("11", "0", "75/100"), empty replies and prose with no score.
    """
    if not reply:
        return None
    text = reply.strip()
    if not text:
        return None
    head = text[:200]
    value: float | None = None
    m = _RANGE.match(head)
    if m:
        a, b = float(m.group(1)), float(m.group(2))
        if SCALE_MIN <= a <= SCALE_MAX and SCALE_MIN <= b <= SCALE_MAX:
            return (a + b) / 2.0
        return None
    for pat in _PATTERNS:
        m = pat.search(head)
        if m:
            try:
                value = float(m.group(1))
            except ValueError:  # pragma: no cover - regex guarantees a number
                value = None
            break
    if value is None:
        w = _WORD.search(head.split("\n", 1)[0])
        if w:
            value = float(_WORDS[w.group(1).lower()])
    if value is None or not (SCALE_MIN <= value <= SCALE_MAX):
        return None
    return value


@dataclass
class JudgeResult:
    """All judge scores of one answer: judge model -> score (None = unparseable reply)."""

    answer_model: str
    scores: dict[str, float | None] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)

    @property
    def valid(self) -> list[float]:
        return [s for s in self.scores.values() if s is not None]

    @property
    def mean(self) -> float | None:
        v = self.valid
        return sum(v) / len(v) if v else None

    @property
    def spread(self) -> float | None:
        v = self.valid
        return (max(v) - min(v)) if v else None

    @property
    def self_score(self) -> float | None:
        return self.scores.get(self.answer_model)

    def cross_scores(self) -> list[float]:
        return [s for j, s in self.scores.items() if j != self.answer_model and s is not None]


def normalised(score: float | None) -> float | None:
    """1-10 -> [0, 1]."""
    return None if score is None else (score - SCALE_MIN) / (SCALE_MAX - SCALE_MIN)


def judges_agree(
    results: list[JudgeResult], threshold: float, max_spread: float, min_judges: int
) -> tuple[bool, str]:
    """Early-stop rule: the top answer's mean judge score >= threshold, its judges' spread
    (max - min) <= max_spread, and at least ``min_judges`` judges gave a readable score."""
    scored = [r for r in results if r.mean is not None]
    if not scored:
        return False, "no readable judge scores"
    top = max(scored, key=lambda r: r.mean or 0.0)
    n, mean, spread = len(top.valid), top.mean or 0.0, top.spread or 0.0
    if n < min_judges:
        return (
            False,
            f"top answer ({top.answer_model}) has {n} < {min_judges} readable judge scores",
        )
    if mean < threshold:
        return False, f"top mean judge score {mean:.2f} < threshold {threshold}"
    if spread > max_spread:
        return False, f"judges disagree on the top answer (spread {spread:.1f} > {max_spread})"
    return True, (
        f"judges agree: {top.answer_model} mean {mean:.2f} >= {threshold} with spread "
        f"{spread:.1f} <= {max_spread} over {n} judges"
    )
