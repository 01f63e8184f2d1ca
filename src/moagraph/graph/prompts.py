"""The prompt each role sees.

Every prompt starts from ``task.prompt(example)``, so the task's system
prompt and answer-format instruction ("end with #### <number>", "put the
final answer in \\boxed{}") reach every node, and the role's text is added to
the last user message. That keeps answers extractable whatever the role.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from moagraph.graph.spec import Role
from moagraph.models.base import ChatMessage
from moagraph.tasks.base import Example, Task

__all__ = [
    "aggregator_messages",
    "fuser_messages",
    "judge_messages",
    "node_messages",
    "parse_judge_choice",
    "refine_messages",
]


def _with_user_suffix(task: Task, example: Example, suffix: str) -> list[ChatMessage]:
    msgs = [ChatMessage(role=m["role"], content=m["content"]) for m in task.prompt(example)]
    for m in reversed(msgs):
        if m["role"] == "user":
            m["content"] = f"{m['content']}\n\n{suffix}"
            return msgs
    msgs.append({"role": "user", "content": suffix})
    return msgs


def _numbered(responses: Sequence[str]) -> str:
    return "\n\n".join(f"Response {i}:\n{r.strip()}" for i, r in enumerate(responses, 1))


def refine_messages(task: Task, example: Example, responses: Sequence[str]) -> list[ChatMessage]:
    """Assistant with inputs: the paper's "synthesise these responses" refinement."""
    return _with_user_suffix(
        task,
        example,
        "You have been given responses to this question from other assistants:\n\n"
        f"{_numbered(responses)}\n\n"
        "Synthesise these responses into a single, improved answer. Some of them may be "
        "wrong: check each step, keep what is correct, fix what is not, and do not just copy "
        "one. Give your final answer in exactly the format the question asks for.",
    )


def fuser_messages(task: Task, example: Example, responses: Sequence[str]) -> list[ChatMessage]:
    """Fuser: told it is a fusion agent combining assistants' candidate answers."""
    return _with_user_suffix(
        task,
        example,
        "You are a fusion agent. Several assistants answered this question:\n\n"
        f"{_numbered(responses)}\n\n"
        "Fuse them into one answer: where they agree, keep the shared answer; where they "
        "disagree, work out which reasoning is correct. Give your final answer in exactly the "
        "format the question asks for.",
    )


def aggregator_messages(
    task: Task, example: Example, responses: Sequence[str]
) -> list[ChatMessage]:
    """MoA aggregate-and-synthesise prompt (Wang et al. 2024)."""
    return _with_user_suffix(
        task,
        example,
        "You have been provided with a set of responses from various open-source models to "
        "the latest user query. Your task is to synthesize these responses into a single, "
        "high-quality response. It is crucial to critically evaluate the information provided "
        "in these responses, recognizing that some of it may be biased or incorrect. Your "
        "response should not simply replicate the given answers but should offer a refined, "
        "accurate, and comprehensive reply to the instruction.\n\n"
        f"Responses from models:\n\n{_numbered(responses)}\n\n"
        "Give your final answer in exactly the format the question asks for.",
    )


def judge_messages(task: Task, example: Example, responses: Sequence[str]) -> list[ChatMessage]:
    """Best-of-n judge: answer with the number of the best response only."""
    return _with_user_suffix(
        task,
        example,
        f"Here are {len(responses)} candidate responses to this question:\n\n"
        f"{_numbered(responses)}\n\n"
        "Which response is the best (correct, and in the format the question asks for)? "
        f"Reply with its number only, 1 to {len(responses)}, as: Best response: <number>",
    )


_CHOICE_PATTERNS = (
    re.compile(r"best\s+response\s*(?:is|:|=)?\s*(?:response\s*)?#?\s*(\d+)", re.IGNORECASE),
    re.compile(r"response\s*#?\s*(\d+)", re.IGNORECASE),
    re.compile(r"#\s*(\d+)"),
    re.compile(r"\b(\d+)\b"),
)


def parse_judge_choice(text: str, n: int) -> int | None:
    """0-based index of the response a judge chose, or None if it named none in range.

    Tries the asked-for form first ("Best response: 2"), then "Response 2",
    "#2", then any bare number in range, so chatty judges still parse.
    """
    for pat in _CHOICE_PATTERNS:
        for m in pat.finditer(text):
            k = int(m.group(1))
            if 1 <= k <= n:
                return k - 1
    return None


def node_messages(
    role: Role, task: Task, example: Example, responses: Sequence[str]
) -> list[ChatMessage]:
    """Messages for an LLM node with the given role and input texts."""
    if role is Role.ASSISTANT:
        return (
            refine_messages(task, example, responses) if responses else list(task.prompt(example))
        )
    if role is Role.FUSER:
        return fuser_messages(task, example, responses)
    if role is Role.AGGREGATOR:
        return aggregator_messages(task, example, responses)
    if role is Role.JUDGE:
        return judge_messages(task, example, responses)
    raise ValueError(f"role {role.value!r} makes no LLM call")
