"""What happened when a policy answered one query: per node and in total.

Graphs and routers both produce a :class:`Trace`, so evaluation, the run
store and the server treat them alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from moagraph.tasks.base import Example, Task


@dataclass
class NodeTrace:
    node_id: str
    role: str
    model: str | None
    prompt: list[dict[str, str]] = field(default_factory=list)
    output: str = ""
    answer: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    flops: float = 0.0
    dollars: float = 0.0
    latency_s: float = 0.0
    start_s: float = 0.0  # relative to the query's start
    end_s: float = 0.0
    cached: bool = False
    error: str | None = None
    meta: dict[str, Any] = field(
        default_factory=dict
    )  # e.g. sample_index, votes, judge choice, replay score, why it was skipped
    skipped: bool = False  # its condition was false (or no input ran): no call, no cost


@dataclass
class Trace:
    query_id: str
    policy: str
    nodes: list[NodeTrace] = field(default_factory=list)
    output: str = ""
    answer: Any = None
    score: float | None = None
    flops: float = 0.0
    dollars: float = 0.0
    latency_s: float = 0.0  # critical path: what a user waits with unlimited parallelism
    wall_s: float = 0.0  # measured wall time of this query
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. routing decisions, stop reason

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def prompt_tokens(self) -> int:
        return sum(n.prompt_tokens for n in self.nodes)

    @property
    def completion_tokens(self) -> int:
        return sum(n.completion_tokens for n in self.nodes)

    @property
    def cache_hits(self) -> int:
        return sum(1 for n in self.nodes if n.cached)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["answer"] = _jsonable(self.answer)
        for n in d["nodes"]:
            n["answer"] = _jsonable(n["answer"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        d = dict(d)
        d["nodes"] = [NodeTrace(**n) for n in d.get("nodes", [])]
        return cls(**d)


def _jsonable(x: Any) -> Any:
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return str(x)


class Policy(Protocol):
    """Anything that answers a query: a fixed graph or a per-query router."""

    name: str

    async def answer(self, example: Example, task: Task, on_token: Any = None) -> Trace:
        """Answer ``example`` and return the full trace (not graded)."""
        ...
