"""Turn an OpenAI conversation into one task query, keeping earlier turns.

The last user message is the query (``Example.question``, which is what a
router scores). Every node's prompt starts from ``task.prompt(example)``
(see graph/prompts.py), so :class:`ConversationTask` returns the whole
conversation there: earlier turns and the client's system message reach
every node, with the task's own formatting applied to the last turn.
"""

from __future__ import annotations

from typing import Any

from moagraph.models.base import ChatMessage
from moagraph.serve.schemas import MessageIn
from moagraph.tasks.base import Example, Task


def _role(m: MessageIn) -> str:
    if m.role == "developer":
        return "system"
    if m.role == "tool":
        return "user"
    return m.role


def to_example(example_id: str, messages: list[MessageIn]) -> Example:
    """The query an executor answers for this conversation."""
    msgs: list[ChatMessage] = [{"role": _role(m), "content": m.text} for m in messages]
    last = msgs[-1]["content"]
    system = "\n\n".join(m["content"] for m in msgs if m["role"] == "system" and m["content"])
    history = [m for m in msgs[:-1] if m["role"] != "system"]
    meta: dict[str, Any] = {"last": last, "history": history, "system": system}
    return Example(id=example_id, question=last, meta=meta)


class ConversationTask(Task):
    """Wraps a task (normally ``chat``) so first-layer prompts carry the conversation."""

    def __init__(self, base: Task) -> None:
        self.base = base
        # Instance attributes shadow the ClassVars: the wrapper reads as its base.
        self.name = base.name  # type: ignore[misc]
        self.kind = base.kind  # type: ignore[misc]
        self.avg_input_tokens = base.avg_input_tokens  # type: ignore[misc]
        self.avg_output_tokens = base.avg_output_tokens  # type: ignore[misc]
        self.system_prompt = base.system_prompt  # type: ignore[misc]

    def load(self, split: str = "test", n: int | None = None, seed: int = 0) -> list[Example]:
        return self.base.load(split, n, seed)

    def prompt(self, example: Example) -> list[ChatMessage]:
        if "last" not in example.meta:  # not a served conversation
            return self.base.prompt(example)
        single = Example(id=example.id, question=example.meta["last"], reference=example.reference)
        msgs = list(self.base.prompt(single))
        system = example.meta.get("system") or ""
        if system:
            msgs = [m for m in msgs if m["role"] != "system"]
            msgs.insert(0, {"role": "system", "content": system})
        at = len(msgs) - 1  # before the final (query) message
        return msgs[:at] + list(example.meta.get("history", [])) + msgs[at:]

    def format_question(self, example: Example) -> str:
        return self.base.format_question(example)

    def extract(self, text: str) -> Any:
        return self.base.extract(text)

    def equivalent(self, a: Any, b: Any) -> bool:
        return self.base.equivalent(a, b)

    def grade(self, text: str, example: Example) -> float:
        return self.base.grade(text, example)
