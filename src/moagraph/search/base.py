"""The optimiser interface: ask for a graph, tell its reward (Optuna-style).

An outer loop (``study.run_study``) owns the expensive part, evaluating a
graph on training questions, so every optimiser is a small state machine
driven by ``ask()``/``tell()``. Both are async because the agent optimisers
call an LLM while proposing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from moagraph.errors import MoagraphError, UnknownNameError
from moagraph.graph.spec import Graph
from moagraph.search.space import SearchSpace, graph_key


class UnknownOptimizerError(UnknownNameError):
    """No optimiser of that name; the message lists the known ones."""


class UnknownCandidateError(MoagraphError):
    """``tell``/``fail`` of a candidate this optimiser never asked, or already told."""


class SearchExhaustedError(MoagraphError):
    """``ask()`` on an optimiser whose ``finished`` is True (nothing left to propose).

    Not ``StopIteration``: raised inside a coroutine that becomes
    ``RuntimeError: coroutine raised StopIteration``, which names nothing.
    """


@dataclass
class Candidate:
    """One graph an optimiser wants evaluated."""

    number: int
    graph: Graph
    phase: str = "search"  # pilot | pretest | search | proposal
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Told:
    candidate: Candidate
    reward: float
    info: dict[str, Any] = field(default_factory=dict)


class Optimizer(ABC):
    """Base class: keeps the history and the best graph seen."""

    name: ClassVar[str] = "base"

    def __init__(self, space: SearchSpace, seed: int = 0, **kwargs: Any) -> None:
        if kwargs:
            raise UnknownOptimizerError(
                f"optimizer {self.name!r} got unknown options {sorted(kwargs)}; remove them"
            )
        self.space = space
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.history: list[Told] = []
        self._asked = 0
        self._pending: dict[int, Candidate] = {}

    # --- interface ------------------------------------------------------------
    @abstractmethod
    async def _propose(self) -> tuple[Graph, str, dict[str, Any]]:
        """The next graph to evaluate, with its phase label and notes."""

    async def _observe(self, told: Told) -> None:
        """Learn from one result (default: nothing beyond the history)."""

    @property
    def finished(self) -> bool:
        """True when the optimiser has nothing left to propose (exhaustive)."""
        return False

    async def ask(self) -> Candidate:
        if self.finished:
            raise SearchExhaustedError(
                f"optimizer {self.name!r} has proposed every graph of its space "
                f"({self._asked} asked); stop when `finished` is True or lower --iterations"
            )
        graph, phase, info = await self._propose()
        graph = self.space.trim(graph)
        cand = Candidate(self._asked, graph, phase, info)
        self._asked += 1
        self._pending[cand.number] = cand
        return cand

    def _take(self, candidate: Candidate | int, verb: str) -> Candidate:
        number = candidate if isinstance(candidate, int) else candidate.number
        if number not in self._pending:
            state = "already told" if number < self._asked else "never asked"
            raise UnknownCandidateError(
                f"{verb}: candidate {number} of optimizer {self.name!r} is {state}; "
                f"pending: {sorted(self._pending) or 'none'}"
            )
        return self._pending.pop(number)

    async def tell(
        self, candidate: Candidate | int, reward: float, info: dict[str, Any] | None = None
    ) -> None:
        """Report a candidate's reward (higher is better); each asked candidate once."""
        cand = self._take(candidate, "tell")
        told = Told(cand, float(reward), dict(info or {}))
        self.history.append(told)
        await self._observe(told)

    async def fail(self, candidate: Candidate | int, error: str = "") -> None:
        """The candidate's evaluation failed: forget it (no reward, not in the history).

        Raises :class:`UnknownCandidateError` for a candidate that was never asked or was already told.
        """
        cand = self._take(candidate, "fail")
        await self._observe_failure(cand, error)

    async def _observe_failure(self, candidate: Candidate, error: str) -> None:
        """React to a failed evaluation (default: nothing; it is simply not learnt from)."""

    # --- results --------------------------------------------------------------
    def best(self) -> Told | None:
        if not self.history:
            return None
        return max(self.history, key=lambda t: (t.reward, -t.candidate.number))

    def final_candidates(self) -> list[Graph]:
        """Extra graphs worth a held-out look (e.g. REINFORCE's thresholded argmax)."""
        return []

    def snapshot(self) -> dict[str, Any]:
        """JSON state after the latest tell (stored per trial, for inspection)."""
        return {}

    def stats(self) -> dict[str, Any]:
        """Counters to report (e.g. agent parse failures)."""
        return {}

    def seen(self, graph: Graph) -> bool:
        key = graph_key(graph)
        return any(graph_key(t.candidate.graph) == key for t in self.history)

    async def aclose(self) -> None:
        """Release resources (agent runtimes)."""


def __getattr__(name: str) -> Any:
    """``get_optimizer`` / ``optimizer_names`` moved to :mod:`moagraph.search` (the registry);
    old imports from here keep working."""
    if name in ("get_optimizer", "optimizer_names", "OPTIMIZERS"):
        import moagraph.search

        return getattr(moagraph.search, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
