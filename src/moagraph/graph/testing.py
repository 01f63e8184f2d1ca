"""In-process stand-ins for tests and benchmarks of orchestration logic.

:class:`ScriptedBackend` answers from a function and records when each call
ran (to check concurrency); :class:`ArithmeticTask` is a tiny math task with
a numeric grader. Neither is for real evaluation: use a real pool and task.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from moagraph.models.base import BackendError, Completion, LLMRequest, TokenCallback, emit
from moagraph.models.pool import ModelSpec, Pool
from moagraph.tasks.base import Example, Task

__all__ = ["ArithmeticTask", "CallRecord", "ScriptedBackend", "fake_pool"]


@dataclass
class CallRecord:
    model: str
    start: float
    end: float
    query_id: str | None
    sample_index: int
    prompt: str


@dataclass
class ScriptedBackend:
    """Answers ``respond(request)`` after ``latency_s``; fails for models in ``fail_models``."""

    respond: Callable[[LLMRequest], str] = lambda r: "The answer is 42."
    latency_s: float = 0.0
    fail_models: set[str] = field(default_factory=set)
    kind: str = "scripted"
    calls: list[CallRecord] = field(default_factory=list)
    record: bool = True

    def identity(self, model: ModelSpec) -> str:
        return f"scripted:{model.name}"

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        start = time.perf_counter()
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        end = time.perf_counter()
        prompt = "\n".join(m["content"] for m in request.messages)
        if self.record:
            self.calls.append(
                CallRecord(
                    request.model.name, start, end, request.query_id, request.sample_index, prompt
                )
            )
        if request.model.name in self.fail_models:
            raise BackendError(
                f"endpoint for {request.model.name} refused the call", model=request.model.name
            )
        text = self.respond(request)
        await emit(on_token, text)
        return Completion(
            text=text,
            prompt_tokens=max(1, len(prompt.split())),
            completion_tokens=max(1, len(text.split())),
            latency_s=end - start,
            model=request.model.name,
            backend=self.kind,
        )

    async def aclose(self) -> None:
        return None


def fake_pool(*names: str, max_concurrency: int = 4, prices: bool = True) -> Pool:
    """A pool of small scripted models (sizes grow with position: 1B, 2B, ...)."""
    models = [
        ModelSpec(
            name=n,
            backend="openai",
            base_url=f"http://127.0.0.1:9/{n}",
            params_b=float(i + 1),
            layers=16 + 4 * i,
            hidden_size=2048 + 512 * i,
            max_concurrency=max_concurrency,
            price_in=0.1 * (i + 1) if prices else 0.0,
            price_out=0.2 * (i + 1) if prices else 0.0,
        )
        for i, n in enumerate(names or ("m1",))
    ]
    return Pool(name="fake", models=models)


_NUM = re.compile(r"-?\d+(?:\.\d+)?")


class ArithmeticTask(Task):
    """Questions "What is a + b?"; the answer is the last number of the output."""

    name: ClassVar[str] = "arith"
    kind: ClassVar[Any] = "math"
    avg_input_tokens: ClassVar[int] = 100
    avg_output_tokens: ClassVar[int] = 50

    def load(self, split: str = "test", n: int | None = None, seed: int = 0) -> list[Example]:
        exs = [
            Example(id=f"q{i}", question=f"What is {i} + {i + 1}?", reference=2 * i + 1)
            for i in range(50)
        ]
        return exs[:n] if n is not None else exs

    def extract(self, text: str) -> Any:
        nums = _NUM.findall(text)
        return float(nums[-1]) if nums else None

    def equivalent(self, a: Any, b: Any) -> bool:
        return a is not None and b is not None and abs(float(a) - float(b)) < 1e-9

    def grade(self, text: str, example: Example) -> float:
        return 1.0 if self.equivalent(self.extract(text), example.reference) else 0.0
