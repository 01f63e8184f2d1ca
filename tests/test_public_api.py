"""The package's top-level API, used as a script would: a vote graph on a bundled replay pool."""

from __future__ import annotations

import pytest

import moagraph
from moagraph.models.replay import ReplayStore


@pytest.mark.needs_shared_data(
    "gsm8k", "test.jsonl"
)  # the seeded sample is drawn from the full split
def test_vote_graph_on_recorded_pool_through_the_public_api() -> None:
    pool = moagraph.load_pool(moagraph.resolve_pool("gsm8k-local"))
    task = moagraph.get_task("gsm8k")
    model = "gemma-270m-q3km"  # two of its four samples on gsm8k/test/194 are right
    graph = moagraph.builders.parallel_vote(model, 4)
    runtime = moagraph.PoolRuntime(pool)
    policy = moagraph.GraphPolicy(graph, moagraph.GraphExecutor(runtime, task))
    store = ReplayStore(pool.resolve(pool[model].replay or ""))
    recorded = set(store.query_ids(model))
    sample = [e for e in task.load("test", n=40, seed=0) if e.id in recorded]
    examples = [e for e in sample if e.id == "gsm8k/test/194"] + [
        e for e in sample if e.id != "gsm8k/test/194"
    ][:4]
    assert len(examples) == 5  # the pool was recorded on this seeded sample

    report = moagraph.evaluate(policy, task, examples, progress=False)

    assert report.n == 5 and report.errors == 0
    assert runtime.calls == 5 * 4  # every answer replayed, none made live
    # Recompute each vote from the recorded texts: majority of extracted answers, tie -> earliest.
    by_id = {e.id: e for e in examples}
    for row in report.rows:
        answers = [
            task.extract(store.get(model, query_id=row.example_id, sample=k)["text"])
            for k in range(4)
        ]
        votes = [sum(task.equivalent(a, b) for b in answers) for a in answers]
        winner = answers[votes.index(max(votes))]
        expected = (
            1.0
            if winner is not None and task.equivalent(winner, by_id[row.example_id].reference)
            else 0.0
        )
        assert row.score == expected, row.example_id
    assert report.accuracy is not None and report.accuracy > 0  # the vote recovers the right answer
    assert moagraph.estimate_cost(graph, pool, task).flops_norm > 3.5  # four calls, unit = one


# --- the docstring examples of the public API run (bundled replay pools, no live model) ---

DOCUMENTED = [
    "moagraph",
    "moagraph.load_pool",
    "moagraph.get_task",
    "moagraph.evaluate",
    "moagraph.search.optimize",
    "moagraph.search.storage",
    "moagraph.load_router",
    "moagraph.serve.create_app",
    "moagraph.graph.eval_job",
    "moagraph.route",
    "moagraph.errors",
]


def _resolve(dotted: str) -> object:
    import importlib

    mod, _, attr = dotted.rpartition(".")
    if dotted == "moagraph":
        return moagraph
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError):
        return importlib.import_module(dotted)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_docstring_examples_run(name: str) -> None:
    import doctest

    obj = _resolve(name)
    doc = getattr(obj, "__doc__", None) or ""
    assert ">>>" in doc, f"{name} has no docstring example"
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = finder.find(obj, name, globs={})
    assert tests and tests[0].examples
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"


def test_public_api_is_small_and_typed() -> None:
    import inspect

    for name in ("load_pool", "get_task", "evaluate", "load_router"):
        fn = getattr(moagraph, name)
        sig = inspect.signature(fn)
        assert sig.return_annotation is not inspect.Signature.empty, name
    assert callable(moagraph.serve.create_app) and callable(moagraph.search.run_study)
    assert issubclass(moagraph.MoagraphError, ValueError)
    assert set(moagraph.__all__) >= {"load_pool", "get_task", "Graph", "builders", "evaluate"}


def test_optimize_is_exported_next_to_the_search_subpackage() -> None:
    import types

    from moagraph.search import optimize

    assert moagraph.optimize is optimize
    assert isinstance(moagraph.search, types.ModuleType)  # still the subpackage
    assert moagraph.search.optimize is optimize
