"""Exhaustive enumeration of a small space: the true optimum to measure gaps against.

Flat spaces enumerate every budget-feasible mix (first-layer assistants into
the sink). Other spaces enumerate every slot choice (model or off, role,
edges, sink links) and deduplicate the resulting trimmed graphs; that is
only possible for tiny spaces, so it refuses above ``limit`` raw choices.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from moagraph.graph.spec import Graph
from moagraph.search.base import Optimizer
from moagraph.search.distribution import Choices, GraphDistribution
from moagraph.search.space import SearchSpace, SearchSpaceError, graph_key


def enumerate_graphs(space: SearchSpace, limit: int = 200_000) -> list[Graph]:
    """Every distinct feasible graph of the space (deterministic order)."""
    if space.flat and space.conditional:
        return _cascades(space, limit)
    if space.flat:
        return [space.flat_graph(c) for c in space.iter_mixes(maximal=False, limit=limit)]
    dist = GraphDistribution(space)
    n, k, r = dist.n, len(space.models), len(space.roles)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    raw = (k + 1) ** n * r**n * 2 ** len(pairs) * 2**n
    if raw > limit:
        raise SearchSpaceError(
            f"exhaustive: {raw} raw graphs exceed the limit {limit}; use a flat space "
            "(--flat), fewer models or a smaller --max-nodes"
        )
    seen: dict[str, Graph] = {}
    for models in itertools.product(range(k + 1), repeat=n):
        if all(m == k for m in models):
            continue
        for roles in itertools.product(range(r), repeat=n):
            for ebits in itertools.product((False, True), repeat=len(pairs)):
                edges = np.zeros((n, n), dtype=bool)
                for (i, j), b in zip(pairs, ebits):
                    edges[i, j] = b
                for sbits in itertools.product((False, True), repeat=n):
                    ch = Choices(np.array(models), np.array(roles), edges, np.array(sbits))
                    g = dist.build(ch)
                    if not space.fits(g):
                        continue
                    seen.setdefault(graph_key(g), g)
    return list(seen.values())


def _cascades(space: SearchSpace, limit: int) -> list[Graph]:
    """Every flat cascade: each feasible mix, each assignment of its nodes to stages (up to
    relabelling), each threshold per used stage; graphs that fit structurally (the expected
    cost is the evaluator's to check)."""
    dist = GraphDistribution(space)
    k, n = len(space.models), dist.n
    n_t = len(space.thresholds)
    seen: dict[str, Graph] = {}
    for mix in space.iter_mixes(maximal=False, limit=limit):
        order = [i for i, c in enumerate(mix) for _ in range(c)]
        models = np.array(order + [k] * (n - len(order)))
        m = len(order)
        for st in itertools.product(range(space.stages), repeat=m):
            if 0 not in st or sorted(set(st)) != list(range(max(st) + 1)):
                continue  # stages closed up: the same cascade with other labels
            for th in itertools.product(range(n_t), repeat=max(st)):
                stages = np.array(list(st) + [0] * (n - m))
                thresholds = np.array(list(th) + [0] * (space.stages - 1 - max(st)))
                ch = Choices(
                    models,
                    np.zeros(n, dtype=int),
                    np.zeros((n, n), dtype=bool),
                    np.ones(n, dtype=bool),
                    stages,
                    thresholds,
                )
                g = space.trim(dist.build(ch))
                seen.setdefault(graph_key(g), g)
                if len(seen) > limit:
                    raise SearchSpaceError(
                        f"exhaustive: more than {limit} cascades; lower --max-nodes or --stages, "
                        "or use fewer models"
                    )
    return list(seen.values())


class Exhaustive(Optimizer):
    name = "exhaustive"

    def __init__(
        self, space: SearchSpace, seed: int = 0, limit: int = 200_000, **kwargs: Any
    ) -> None:
        super().__init__(space, seed, **kwargs)
        self.graphs = enumerate_graphs(space, limit)
        self._i = 0

    @property
    def finished(self) -> bool:
        return self._i >= len(self.graphs)

    async def _propose(self) -> tuple[Graph, str, dict[str, Any]]:
        g = self.graphs[self._i]
        self._i += 1
        return g, "search", {"index": self._i - 1, "of": len(self.graphs)}
