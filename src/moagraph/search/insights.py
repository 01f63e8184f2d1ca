"""Written insights the agent starts from (Agent-REINFORCE paper, section on findings).

Kept as plain text per task kind: they go verbatim into the agent's prompt.
"""

from __future__ import annotations

GENERAL = [
    "Width and depth each have a task-dependent optimum, and they interact: a wider "
    "graph shifts the best depth down.",
    "Large models belong at nodes with high in-degree (where answers are combined).",
    "Diverse models feeding one node help more than copies of one model.",
    "Deep chains can overwrite correct answers; keep chains short unless rewards say otherwise.",
]

SINK = {
    "vote": "The sink takes a majority vote over the answers of the nodes feeding it.",
    "llm": "The output node reads the answers of the nodes feeding it and writes the final "
    "answer; its cost counts, and it can ignore weak inputs.",
    "select": "The sink keeps the best-judged answer of the nodes feeding it.",
}

CASCADE = [
    "Escalation saves compute: when two or more cheap models give the same answer they are "
    "usually right, so a large model is needed only on the questions where they disagree.",
    "Put cheap, accurate and diverse models in stage 0 and the strongest model in a later "
    "stage; a later stage runs only on the questions where the earlier answers disagree, "
    "so its cost counts only on those (the budget applies to the expected cost).",
    "A lower escalation threshold escalates less often (cheaper, less accurate); 1 "
    "escalates on any disagreement.",
]

BY_KIND = {
    "math": "Math prefers several mid-size copies (wide, shallow graphs with voting) over one large model.",
    "choice": "Knowledge (multiple choice) prefers one larger model over many small ones.",
    "code": "Code prefers one larger model over many small ones.",
    "chat": "Open-ended chat prefers stronger (larger) models and diverse candidates.",
}


def insights_for(kind: str | None, sink_mode: str = "vote", conditional: bool = False) -> list[str]:
    """Insights for a task kind (math, choice, code, chat), general ones next, then the
    one that describes this space's sink and, for conditional spaces, escalation."""
    first = [BY_KIND[kind]] if kind in BY_KIND else []
    return first + GENERAL + [SINK.get(sink_mode, SINK["vote"])] + (CASCADE if conditional else [])


def insights_text(kind: str | None, sink_mode: str = "vote", conditional: bool = False) -> str:
    return "\n".join(f"- {s}" for s in insights_for(kind, sink_mode, conditional))
