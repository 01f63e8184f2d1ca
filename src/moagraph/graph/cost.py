"""Planned cost of a graph before it runs, from task averages (A, B).

Budgets are checked against this estimate so an over-budget graph is refused
before it spends anything; the executor then checks measured cost as it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from moagraph.graph.spec import Graph
from moagraph.models.cost import call_dollars, node_flops, unit_flops
from moagraph.models.pool import Pool
from moagraph.tasks.base import Task

__all__ = ["GraphCost", "estimate_cost", "graph_flops", "task_unit_flops"]


@dataclass(frozen=True)
class GraphCost:
    flops: float  # absolute
    flops_norm: float  # in units of one no-input call of the smallest pool model
    dollars: float


def task_unit_flops(pool: Pool, task: Task) -> float:
    """FLOPs of the normalisation unit for this pool and task."""
    return unit_flops(pool.models, task.avg_input_tokens, task.avg_output_tokens)


def graph_flops(graph: Graph, pool: Pool, avg_in: float, avg_out: float) -> float:
    """Sum over LLM nodes of node_flops(model, in-degree, A, B); vote nodes cost 0."""
    return sum(
        node_flops(pool[n.model], len(n.inputs), avg_in, avg_out)
        for n in graph.llm_nodes
        if n.model is not None
    )


def estimate_cost(graph: Graph, pool: Pool, task: Task) -> GraphCost:
    a, b = task.avg_input_tokens, task.avg_output_tokens
    flops = graph_flops(graph, pool, a, b)
    dollars = sum(
        call_dollars(pool[n.model], a + len(n.inputs) * b, b) for n in graph.llm_nodes if n.model
    )
    return GraphCost(flops=flops, flops_norm=flops / task_unit_flops(pool, task), dollars=dollars)
