"""Bayesian optimisation: Optuna TPE over slot models, roles, edges and sink links, and in a
conditional space each slot's stage and each stage's escalation threshold (seeded)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import optuna

from moagraph.graph.spec import Graph
from moagraph.search.base import Candidate, Optimizer, Told
from moagraph.search.distribution import OFF, Choices, GraphDistribution
from moagraph.search.space import SearchSpace


class BayesOpt(Optimizer):
    name = "bayesopt"

    def __init__(
        self, space: SearchSpace, seed: int = 0, n_startup: int = 5, **kwargs: Any
    ) -> None:
        super().__init__(space, seed, **kwargs)
        self.dist = GraphDistribution(space)
        optuna.logging.get_logger("optuna").setLevel(logging.WARNING)
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=n_startup, multivariate=True
        )
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self._trials: dict[int, optuna.trial.Trial] = {}

    async def _propose(self) -> tuple[Graph, str, dict[str, Any]]:
        t = self.study.ask()
        n, names = self.dist.n, self.space.model_names
        k = len(names)
        choices = names + [OFF]
        models = np.array(
            [choices.index(t.suggest_categorical(f"model_{i}", choices)) for i in range(n)]
        )
        if (models == k).all():
            models[0] = 0
        roles = [r.value for r in self.space.roles]
        role_idx = np.zeros(n, dtype=int)
        edges = np.zeros((n, n), dtype=bool)
        sink = np.zeros(n, dtype=bool)
        if not self.space.flat:
            for i in range(n):
                role_idx[i] = roles.index(t.suggest_categorical(f"role_{i}", roles))
                sink[i] = t.suggest_categorical(f"sink_{i}", [0, 1]) == 1
                for j in range(i + 1, n):
                    edges[i, j] = t.suggest_categorical(f"edge_{i}_{j}", [0, 1]) == 1
        stages = thresholds = None
        if self.dist.conditional:  # the cascade: each slot's stage, each later stage's threshold
            stages = np.array(
                [t.suggest_int(f"stage_{i}", 0, self.space.stages - 1) for i in range(n)]
            )
            labels = list(range(len(self.space.thresholds)))
            thresholds = np.array(
                [
                    t.suggest_categorical(f"threshold_{s}", labels)
                    for s in range(1, self.space.stages)
                ]
            )
        g = self.dist.build(Choices(models, role_idx, edges, sink, stages, thresholds))
        self._next_trial = t
        return g, "search", {}

    async def ask(self) -> Candidate:
        cand = await super().ask()
        self._trials[cand.number] = self._next_trial
        return cand

    async def _observe(self, told: Told) -> None:
        t = self._trials.pop(told.candidate.number)
        self.study.tell(t, told.reward)
