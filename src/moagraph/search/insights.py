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
    "The sink takes a majority vote over the answers of the nodes feeding it.",
]

BY_KIND = {
    "math": "Math prefers several mid-size copies (wide, shallow graphs with voting) over one large model.",
    "choice": "Knowledge (multiple choice) prefers one larger model over many small ones.",
    "code": "Code prefers one larger model over many small ones.",
    "chat": "Open-ended chat prefers stronger (larger) models and diverse candidates.",
}


def insights_for(kind: str | None) -> list[str]:
    """Insights for a task kind (math, choice, code, chat), general ones last."""
    first = [BY_KIND[kind]] if kind in BY_KIND else []
    return first + GENERAL


def insights_text(kind: str | None) -> str:
    return "\n".join(f"- {s}" for s in insights_for(kind))
