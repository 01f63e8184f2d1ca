"""What a task is: examples, the prompt a node sees, answer extraction, grading.

A task knows nothing about graphs: the executor asks it for the first
prompt, and for ``extract``/``equivalent`` when a vote node clusters answers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from moagraph.errors import ConfigError, DataError
from moagraph.models.base import ChatMessage

TaskKind = Literal["math", "choice", "code", "chat", "exact"]
"""``exact``: short answers compared as strings (a JSONL task with the exact grader)."""


class TaskDataError(FileNotFoundError, DataError):
    """The task's data file is missing; the message says where to put it.

    Also a ``ValueError`` so the CLI prints it without a traceback."""


class TaskError(ConfigError):
    """A user error about a task (unknown name or split, bad file); says how to fix it."""


class NotGradableError(TaskError):
    """This output cannot be graded without a judge or a recorded score."""


@dataclass(frozen=True)
class Example:
    """One query of a task. ``reference`` is whatever the grader needs."""

    id: str
    question: str
    reference: Any = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class Task(ABC):
    """A benchmark: loader + prompt + answer extraction + grader.

    ``avg_input_tokens`` / ``avg_output_tokens`` are the task averages (A, B)
    that the cost model uses to plan budgets before anything runs.
    """

    name: ClassVar[str]
    kind: ClassVar[TaskKind]
    avg_input_tokens: ClassVar[int]
    avg_output_tokens: ClassVar[int]
    system_prompt: ClassVar[str] = ""
    gradable: ClassVar[bool] = True
    """False for open-ended tasks (chat) that need a judge or a recorded score."""

    @abstractmethod
    def load(self, split: str = "test", n: int | None = None, seed: int = 0) -> list[Example]:
        """Examples of a split; ``n`` takes a seeded random sample."""

    def prompt(self, example: Example) -> list[ChatMessage]:
        """Messages for a node that answers the query from scratch."""
        msgs: list[ChatMessage] = []
        if self.system_prompt:
            msgs.append({"role": "system", "content": self.system_prompt})
        msgs.append({"role": "user", "content": self.format_question(example)})
        return msgs

    def format_question(self, example: Example) -> str:
        return example.question

    @abstractmethod
    def extract(self, text: str) -> Any:
        """The final answer in a model's output (None if there is none)."""

    def equivalent(self, a: Any, b: Any) -> bool:
        """Whether two extracted answers are the same answer (vote clustering)."""
        return a is not None and a == b

    @abstractmethod
    def grade(self, text: str, example: Example) -> float:
        """Score in [0, 1] of a model's full output on ``example``."""

    async def agrade(self, text: str, example: Example) -> float:
        """Async :meth:`grade`; code tasks run their sandbox in a worker thread."""
        return self.grade(text, example)
