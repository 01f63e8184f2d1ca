"""Random search: best of N graphs sampled from the uniform distribution."""

from __future__ import annotations

from typing import Any

from moagraph.graph.spec import Graph
from moagraph.search.base import Optimizer
from moagraph.search.distribution import GraphDistribution
from moagraph.search.space import SearchSpace


class RandomSearch(Optimizer):
    """Each ask is an independent sample (duplicates re-drawn a few times)."""

    name = "random"

    def __init__(self, space: SearchSpace, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(space, seed, **kwargs)
        self.dist = GraphDistribution(space)

    async def _propose(self) -> tuple[Graph, str, dict[str, Any]]:
        g = self.dist.sample(self.rng)
        for _ in range(20):
            if not self.seen(g):
                break
            g = self.dist.sample(self.rng)
        return g, "search", {}
