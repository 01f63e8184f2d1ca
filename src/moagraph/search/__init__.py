"""Compute-optimal graph search: spaces, distributions, optimisers (ask/tell), studies."""

from moagraph.search.base import Candidate, Optimizer, get_optimizer, optimizer_names
from moagraph.search.distribution import GraphDistribution
from moagraph.search.evaluator import EvalResult, ExactReplayEvaluator, ExecutorEvaluator
from moagraph.search.space import SearchSpace, SearchSpaceError
from moagraph.search.study import Study, StudyResult, pareto_front, run_study

__all__ = [
    "Candidate", "EvalResult", "ExactReplayEvaluator", "ExecutorEvaluator", "GraphDistribution",
    "Optimizer", "SearchSpace", "SearchSpaceError", "Study", "StudyResult", "get_optimizer",
    "optimizer_names", "pareto_front", "run_study",
]
