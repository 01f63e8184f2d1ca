"""Task names -> Task classes, and where the shared data lives.

``get_task("gsm8k")`` is how the CLI, the evaluator, the search and the server
get a task; ``data_dir`` overrides the shared data folder (``--data-dir``).
"""

from __future__ import annotations

from pathlib import Path

from moagraph.errors import UnknownNameError
from moagraph.tasks._common import shared_data_dir
from moagraph.tasks.base import Task, TaskError
from moagraph.tasks.chat import ChatTask
from moagraph.tasks.gsm8k import GSM8KTask
from moagraph.tasks.humaneval import HumanEvalTask
from moagraph.tasks.math import MathTask
from moagraph.tasks.mbpp import MBPPTask
from moagraph.tasks.mmlu import MMLUTask
from moagraph.tasks.mmlu_pro import MMLUProTask

__all__ = ["TASKS", "UnknownTaskError", "get_task", "shared_data_dir", "task_class"]

_CLASSES: dict[str, type[Task]] = {
    "gsm8k": GSM8KTask,
    "math": MathTask,
    "mmlu": MMLUTask,
    "mmlu-pro": MMLUProTask,
    "humaneval": HumanEvalTask,
    "mbpp": MBPPTask,
    "chat": ChatTask,
}
TASKS: tuple[str, ...] = tuple(_CLASSES)
_ALIASES = {
    "alpaca_eval": "chat",
    "alpacaeval": "chat",
    "gsm": "gsm8k",
    "human_eval": "humaneval",
    "mmlu_pro": "mmlu-pro",
    "mmlupro": "mmlu-pro",
}


class UnknownTaskError(TaskError, UnknownNameError):
    """No task by that name."""


def task_class(name: str) -> type[Task]:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return _CLASSES[key]
    except KeyError:
        raise UnknownTaskError(
            f"unknown task {name!r}; use one of: {', '.join(TASKS)}, or jsonl:PATH:GRADER "
            "for your own JSONL file"
        ) from None


def get_task(name: str, data_dir: str | Path | None = None) -> Task:
    """A fresh task instance; ``data_dir`` defaults to :func:`shared_data_dir`.

    ``jsonl:PATH:GRADER`` is your own task: a JSONL file of ``{question, reference}``
    rows and a grader (exact, number, math, choice, code; :mod:`moagraph.tasks.jsonl`).

    >>> from moagraph import get_task
    >>> task = get_task("gsm8k")
    >>> task.kind, task.extract("... so the answer is 42.")
    ('math', '42')
    >>> get_task("nope")
    Traceback (most recent call last):
    ...
    moagraph.tasks.registry.UnknownTaskError: unknown task 'nope'; use one of: gsm8k, math, mmlu, mmlu-pro, humaneval, mbpp, chat, or jsonl:PATH:GRADER for your own JSONL file
    """
    from moagraph.tasks.jsonl import JsonlTask, is_jsonl_spec

    if is_jsonl_spec(name):  # your own task: jsonl:PATH:GRADER
        return JsonlTask.from_spec(name, data_dir=data_dir)
    return task_class(name)(data_dir=data_dir)  # type: ignore[call-arg]
