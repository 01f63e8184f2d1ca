"""Letter extraction for multiple-choice answers (MMLU and the like).

Models answer in many shapes: "The answer is (B)", "B.", "**C**",
"Answer: d", or by repeating the option's text. We try the explicit forms
first (last one wins: models often restate their final pick at the end), then
standalone letter markers, then the choice text itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["choice_equivalent", "extract_choice"]


def _letter_class(letters: str) -> str:
    return "[" + letters.upper() + letters.lower() + "]"


def extract_choice(
    text: str, choices: Sequence[str] | None = None, letters: str = "ABCD"
) -> str | None:
    """The chosen option letter (upper case), or None.

    ``choices`` (the option texts, in letter order) enables matching an answer
    that quotes an option instead of naming its letter.
    """
    if not text:
        return None
    letters = letters.upper()
    if choices is not None and len(choices) > len(letters):
        raise ValueError(
            f"{len(choices)} choices but only letters {letters!r}; pass letters= with one per choice"
        )
    L = _letter_class(letters)
    U = "[" + letters + "]"
    s = text.strip()

    # 1. The whole answer is a letter: "B", "(b)", "C.", "**D**"
    m = re.fullmatch(rf"[\s*_(\[]*({L})[\s*_)\].:]*", s)
    if m:
        return m.group(1).upper()

    # 2. Explicit statements; the last one wins.
    explicit = [
        rf"answer\s*(?:is|:|=)?\s*(?:option|choice)?\s*[:\s]*[*_(\[]*\s*({L})\b(?![^\S\n]*[a-z]{{2}})",
        rf"(?:option|choice)\s+[*_(\[]*({L})\b[*_)\]]*\s+is\s+(?:the\s+)?(?:correct|right|best)",
        rf"(?:correct|right|best)\s+(?:answer|option|choice)\s+is\s*[:\s]*[*_(\[]*({L})\b",
        rf"\\boxed\{{\s*(?:\\text\{{)?({L})\b",
    ]
    best: tuple[int, str] | None = None
    for pat in explicit:
        for m in re.finditer(pat, s, flags=re.IGNORECASE):
            if best is None or m.start(1) > best[0]:
                best = (m.start(1), m.group(1).upper())
    if best:
        return best[1]

    # 3. Letter markers: "**C**", "(B)", "B." / "B)" / "B:" at a line start.
    markers = [
        rf"\*\*\s*\(?({U})\)?[.:)]?\s*\*\*",
        rf"(?<![A-Za-z])\(({U})\)",
        rf"(?m)^\s*({U})\s*[.):]",
    ]
    best = None
    for pat in markers:
        for m in re.finditer(pat, s):
            if best is None or m.start(1) > best[0]:
                best = (m.start(1), m.group(1).upper())
    if best:
        return best[1]

    # 4. The text of exactly one option (the last mentioned wins when several are).
    if choices:
        low = _norm(s)
        hits: list[tuple[int, int, str]] = []  # (end of last mention, length, letter)
        for letter, choice in zip(letters, choices, strict=False):
            c = _norm(str(choice))
            if not c:
                continue
            pat = r"(?<![a-z0-9])" + re.escape(c) + r"(?![a-z0-9])"
            ends = [m.end() for m in re.finditer(pat, low)]
            if ends:
                hits.append((ends[-1], len(c), letter))
        if hits:
            # The option mentioned last wins (models restate their pick at the end);
            # at the same end, the longer option ("New York" over "York").
            return max(hits)[2]

    # 5. A lone capital letter as the last word, e.g. "... so I pick C"
    m = re.search(rf"(?:pick|choose|select|go with)\s+({U})\b[^A-Za-z]*$", s)
    if m:
        return m.group(1)
    return None


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.lower()).strip().rstrip(".")


def choice_equivalent(a: object, b: object) -> bool:
    """Same option letter (case-insensitive); None matches nothing."""
    if a is None or b is None:
        return False
    return str(a).strip().upper() == str(b).strip().upper()
