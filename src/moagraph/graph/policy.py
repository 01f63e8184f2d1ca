"""A fixed graph as a :class:`~moagraph.graph.trace.Policy`, so evaluation, the
server and comparisons treat it exactly like a per-query router."""

from __future__ import annotations

from typing import Any

from moagraph.graph.executor import Budget, GraphExecutor
from moagraph.graph.spec import Graph
from moagraph.graph.trace import Trace
from moagraph.tasks.base import Example, Task

__all__ = ["GraphPolicy"]


class GraphPolicy:
    """Answers every query with the same graph (validated against the pool at once)."""

    def __init__(
        self, graph: Graph, executor: GraphExecutor, *, budget: Budget | None = None
    ) -> None:
        self.graph = graph
        self.executor = executor
        self.budget = budget
        self.name = graph.name or "graph"
        self._other: dict[int, GraphExecutor] = {}  # executors for tasks other than executor.task
        executor.plan(graph)  # fail now, not on the first query
        if budget is not None:
            why = budget.over_estimate(executor.estimate(graph))
            if why:
                from moagraph.graph.executor import BudgetExceeded

                raise BudgetExceeded(
                    f"graph {self.name!r}: {why}; raise the budget or use a cheaper graph"
                )

    @property
    def unit_flops(self) -> float:
        return self.executor.unit_flops

    async def answer(self, example: Example, task: Task, on_token: Any = None) -> Trace:
        ex = self.executor
        if task is not ex.task:
            ex = self._other.get(id(task)) or self._other.setdefault(
                id(task), GraphExecutor(ex.runtime, task, default_params=ex.default_params)
            )
        return await ex.run(self.graph, example, budget=self.budget, on_token=on_token)
