"""Compute-optimal graph search: spaces, distributions, optimisers (ask/tell), studies.

:func:`optimize` runs a whole search in one call (also ``moagraph.optimize``);
:data:`OPTIMIZERS` is the registry of optimisers by name (add yours to it, or
pass its class to :func:`get_optimizer`'s users); studies live in a pluggable
storage (:func:`create_study`, :func:`load_study`: SQLite or in memory).
"""

from typing import Any

from moagraph.search._optimize import (
    SearchEstimate,
    SearchSetup,
    aoptimize,
    create_study,
    estimate_search,
    load_study,
    optimize,
    prepare_search,
    run_search,
)
from moagraph.search.agent_reinforce import AgentReinforce
from moagraph.search.base import (
    Candidate,
    Optimizer,
    SearchExhaustedError,
    UnknownCandidateError,
    UnknownOptimizerError,
)
from moagraph.search.bayesopt import BayesOpt
from moagraph.search.distribution import GraphDistribution
from moagraph.search.evaluator import EvalResult, ExactReplayEvaluator, ExecutorEvaluator
from moagraph.search.exhaustive import Exhaustive
from moagraph.search.maao import MaAO
from moagraph.search.random import RandomSearch
from moagraph.search.reinforce import Reinforce
from moagraph.search.space import SearchSpace, SearchSpaceError
from moagraph.search.storage import InMemoryStorage, SQLiteStorage, StudyStorage, get_storage
from moagraph.search.study import Study, StudyError, StudyResult, TrialRow, pareto_front, run_study
from moagraph.search.textgrad import TextGrad

OPTIMIZERS: dict[str, type[Optimizer]] = {
    AgentReinforce.name: AgentReinforce,
    Reinforce.name: Reinforce,
    RandomSearch.name: RandomSearch,
    BayesOpt.name: BayesOpt,
    TextGrad.name: TextGrad,
    Exhaustive.name: Exhaustive,
    MaAO.name: MaAO,
}
"""Every optimiser by its ``--optimizer`` name (the one registry: CLI, library, tests)."""

AGENT_OPTIMIZERS = ("agent-reinforce", "textgrad", "maao")
"""Optimisers that take an ``agent`` (an LLM proposing graphs; MaAO also runs without one)."""


def optimizer_names() -> list[str]:
    return list(OPTIMIZERS)


def get_optimizer(name: str, space: SearchSpace, seed: int = 0, **kwargs: Any) -> Optimizer:
    """Build an optimiser by name: agent-reinforce, reinforce, random, bayesopt, textgrad,
    exhaustive, maao."""
    if name not in OPTIMIZERS:
        raise UnknownOptimizerError(
            f"--optimizer {name!r} is unknown; use one of: {', '.join(OPTIMIZERS)}"
        )
    return OPTIMIZERS[name](space, seed=seed, **kwargs)


__all__ = [
    "AGENT_OPTIMIZERS", "OPTIMIZERS", "AgentReinforce", "BayesOpt", "Candidate", "EvalResult",
    "ExactReplayEvaluator", "ExecutorEvaluator", "Exhaustive", "GraphDistribution",
    "InMemoryStorage", "MaAO", "Optimizer", "RandomSearch", "Reinforce", "SQLiteStorage", "SearchEstimate",
    "SearchExhaustedError", "SearchSetup", "SearchSpace", "SearchSpaceError", "Study",
    "StudyError", "StudyResult", "StudyStorage", "TextGrad", "TrialRow", "UnknownCandidateError",
    "UnknownOptimizerError", "aoptimize", "create_study", "estimate_search", "get_optimizer",
    "get_storage", "load_study", "optimize", "optimizer_names", "pareto_front", "prepare_search",
    "run_search", "run_study",
]  # fmt: skip
