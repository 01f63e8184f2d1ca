"""Found graph vs best single model: selection on train+validation only, budget fit, paired bootstrap."""

from __future__ import annotations

import random

import numpy as np
import pytest

from moagraph.graph.testing import ArithmeticTask
from moagraph.models.pool import pool_from_dict
from moagraph.models.replay import write_records
from moagraph.search.compare import (
    choose_best_single,
    compare_best_single,
    paired_bootstrap,
    single_fits,
    single_graph,
)
from moagraph.search.evaluator import ExactReplayEvaluator
from moagraph.search.space import SearchSpace


def _setup(tmp_path, acc_train, acc_test, budget=8.0):
    """Models whose accuracy differs between the train+validation and test questions."""
    task = ArithmeticTask()
    exs = task.load(n=40)
    sel, test = exs[:20], exs[20:]
    rng = random.Random(0)
    recs = []
    for m in acc_train:
        for part, acc in ((sel, acc_train[m]), (test, acc_test[m])):
            for ex in part:
                ok = rng.random() < acc
                ans = ex.reference if ok else ex.reference + rng.choice([1, 2, 3])
                recs.append(
                    {
                        "model": m,
                        "query_id": ex.id,
                        "sample": 0,
                        "text": f"so it is {ans}",
                        "prompt_tokens": 40,
                        "completion_tokens": 10,
                        "latency_s": 0.1,
                    }
                )
    write_records(tmp_path / "rec.jsonl.gz", recs)
    sizes = {"a": 1.0, "b": 2.0, "c": 4.0, "big": 40.0}
    pool = pool_from_dict(
        {
            "name": "rp",
            "models": [
                {
                    "name": m,
                    "backend": "replay",
                    "replay": str(tmp_path / "rec.jsonl.gz"),
                    "params_b": sizes[m],
                    "layers": 16,
                    "hidden_size": 2048,
                }
                for m in acc_train
            ],
        }
    )
    space = SearchSpace.from_pool(pool, task, budget=budget, max_nodes=4, flat=True, max_copies=1)
    ev = ExactReplayEvaluator.from_records(
        recs, space, exs[:12], exs[12:20], mode="vote", task=task, test=test
    )
    return space, ev


async def test_best_single_is_chosen_on_train_and_validation_not_test(tmp_path) -> None:
    # "b" is best on train+validation, "c" on test: the comparison must pick "b".
    space, ev = _setup(tmp_path, {"a": 0.2, "b": 0.9, "c": 0.4}, {"a": 0.2, "b": 0.3, "c": 0.95})
    best, cands = await choose_best_single(ev, space)
    assert best.model == "b"
    assert best.select_n == 20  # 12 train + 8 validation
    assert cands[0].model == "b"
    cmp = await compare_best_single(ev, space, space.flat_graph((0, 0, 1)))
    assert cmp is not None and cmp.single.model == "b"
    assert cmp.test_n == 20
    # the graph (c alone) beats b on test by a wide margin: CI above zero
    assert cmp.diff > 0.3 and cmp.graph_better and "beats the best single" in cmp.verdict()


async def test_only_models_that_fit_the_budget_compete(tmp_path) -> None:
    space, ev = _setup(
        tmp_path, {"a": 0.1, "b": 0.9, "big": 1.0}, {"a": 0.1, "b": 0.9, "big": 1.0}, budget=8.0
    )
    assert not single_fits(space, "big")  # 40B params: ~40x the unit model
    best, cands = await choose_best_single(ev, space)
    assert best.model == "b" and {c.model for c in cands} == {"a", "b"}


async def test_single_graph_is_one_call(tmp_path) -> None:
    space, _ = _setup(tmp_path, {"a": 0.3, "b": 0.5}, {"a": 0.3, "b": 0.5})
    g = single_graph(space, "b")
    assert [n.model for n in space.workers(g)] == ["b"]
    assert space.graph_cost(g) == pytest.approx(space.node_cost("b", 0))


def test_paired_bootstrap() -> None:
    a = [1.0] * 30 + [0.0] * 10
    b = [0.0] * 30 + [1.0] * 10
    d, lo, hi = paired_bootstrap(a, b, n_boot=2000, seed=1)
    assert d == pytest.approx(0.5)
    assert lo < d < hi and lo > 0
    # identical systems: difference exactly 0 with a degenerate interval
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)
    # pairing matters: same marginals, shifted pairs -> wide CI around 0
    rng = np.random.default_rng(0)
    x = list(rng.integers(0, 2, 200).astype(float))
    d2, lo2, hi2 = paired_bootstrap(x, x[1:] + x[:1], n_boot=2000)
    assert lo2 < 0 < hi2
    with pytest.raises(ValueError, match="pair them"):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_cli_defaults_resolve_from_the_bundled_pool() -> None:
    from moagraph.cli.search_cmd import _resolve_defaults

    task, split, models, flat = _resolve_defaults("zeroeval-math", None, None, None, None, None)
    assert (task, split, flat) == ("math", "zeroeval", True)
    names = models.split(",")
    assert "Qwen2.5-7B-Instruct" in names and "gemma-2-2b-it" in names
    assert "gpt-4o-mini-2024-07-18" not in names  # ~8B is an estimate: excluded
    assert "Meta-Llama-3.1-70B-Instruct" not in names
    # explicit options win; another pool keeps the old defaults
    assert _resolve_defaults("zeroeval-math", "math", "zeroeval", "gemma-2-2b-it", False, None) == (
        "math",
        "zeroeval",
        "gemma-2-2b-it",
        False,
    )
    assert _resolve_defaults("local", None, None, None, None, None) == (
        "gsm8k",
        "test",
        None,
        False,
    )


def test_search_cli_prints_the_best_single_comparison(tmp_path) -> None:
    from typer.testing import CliRunner

    from moagraph.cli import _register, app

    _register()
    args = [
        "search",
        "--optimizer",
        "random",
        "--iterations",
        "4",
        "--study",
        str(tmp_path / "s.sqlite"),
        "--cache",
        str(tmp_path / "c.sqlite"),
    ]
    r = CliRunner().invoke(app, args)  # default pool zeroeval-math: replay, no LLM call
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "Found graph vs best single model" in out
    assert "paired bootstrap 95% CI" in out
    assert "exact replay, vote mode" in out
    r2 = CliRunner().invoke(app, args)  # the same command again: a new study, not an error
    assert r2.exit_code == 0, r2.output
    assert "-2" in " ".join(r2.output.split()) and "already in" in r2.output
