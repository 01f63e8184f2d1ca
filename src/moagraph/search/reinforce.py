"""REINFORCE over edge/role/model logits (the paper's gradient baseline).

Adam (lr 0.1) on the score-function gradient; ``batch`` graphs per step with
the batch mean subtracted as baseline; the final graph keeps edges with
p > 0.55 (offered to the held-out phase via ``final_candidates``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moagraph.graph.spec import Graph
from moagraph.search.base import Optimizer, Told
from moagraph.search.distribution import GraphDistribution
from moagraph.search.space import SearchSpace


class Adam:
    """Adam over a dict of numpy arrays (ascent: maximises)."""

    def __init__(
        self, lr: float = 0.1, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
    ) -> None:
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        for k, g in grads.items():
            m = self.m.get(k, np.zeros_like(g))
            v = self.v.get(k, np.zeros_like(g))
            m = self.b1 * m + (1 - self.b1) * g
            v = self.b2 * v + (1 - self.b2) * g * g
            self.m[k], self.v[k] = m, v
            mhat = m / (1 - self.b1**self.t)
            vhat = v / (1 - self.b2**self.t)
            params[k] += self.lr * mhat / (np.sqrt(vhat) + self.eps)


def reinforce_grads(
    dist: GraphDistribution, batch: list[tuple[Graph, float]], baseline: float | None = None
) -> dict[str, np.ndarray]:
    """Mean of (reward - baseline) * grad log p over a batch."""
    rewards = np.array([r for _, r in batch], dtype=float)
    b = float(rewards.mean()) if baseline is None else baseline
    total = {k: np.zeros_like(v) for k, v in dist.params().items()}
    for g, r in batch:
        for k, gr in dist.grad_log_prob(g).items():
            total[k] += (r - b) * gr
    return {k: v / max(len(batch), 1) for k, v in total.items()}


class Reinforce(Optimizer):
    name = "reinforce"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        lr: float = 0.1,
        batch: int = 3,
        threshold: float = 0.55,
        **kwargs: Any,
    ) -> None:
        super().__init__(space, seed, **kwargs)
        self.dist = GraphDistribution(space)
        self.opt = Adam(lr)
        self.batch_size = batch
        self.threshold = threshold
        self._batch: list[Told] = []

    async def _propose(self) -> tuple[Graph, str, dict[str, Any]]:
        return self.dist.sample(self.rng), "search", {}

    async def _observe(self, told: Told) -> None:
        self._batch.append(told)
        if len(self._batch) >= self.batch_size:
            batch = [(t.candidate.graph, t.reward) for t in self._batch]
            self.opt.step(self.dist.params(), reinforce_grads(self.dist, batch))
            self._batch = []

    def final_candidates(self) -> list[Graph]:
        return [self.dist.argmax_graph(self.threshold)]

    def snapshot(self) -> dict[str, Any]:
        return {"probabilities": self.dist.probabilities()}
