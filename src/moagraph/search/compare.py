"""The found graph against the best single model that fits the same budget.

A search result is only interesting next to the obvious alternative: call the
one best model once. :func:`compare_best_single` picks that model the way the
search picks its graph (on the questions the search may look at: train and
validation, never test), among the searched models whose single call fits the
budget (normalised FLOPs, and dollars when capped), then scores it on the same
test questions as the found graph and reports the paired difference with a
bootstrap 95% CI (resampling test questions, both systems together).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moagraph.graph.spec import Graph, Node, Role
from moagraph.search.evaluator import mean_ci
from moagraph.search.space import SearchSpace


@dataclass
class SingleChoice:
    """One candidate single model: its cost and its selection score."""

    model: str
    cost: float
    dollars: float
    select_reward: float  # mean over train + validation questions
    select_n: int


@dataclass
class Comparison:
    """Found graph vs best single model on the same test questions."""

    single: SingleChoice
    candidates: list[SingleChoice]
    graph_test: float
    graph_ci: tuple[float, float]
    single_test: float
    single_ci: tuple[float, float]
    diff: float  # graph - single
    diff_ci: tuple[float, float]  # paired bootstrap 95% CI
    test_n: int
    graph_cost: float  # expected normalised FLOPs per test question (conditional: nodes that ran)
    notes: list[str] = field(default_factory=list)
    graph_worst_cost: float | None = None  # conditional graphs: every node run

    @property
    def cost_ratio(self) -> float:
        """The graph's expected FLOPs over the single model's."""
        return self.graph_cost / self.single.cost if self.single.cost > 0 else float("inf")

    @property
    def matches_cheaper(self) -> bool:
        """Within 1 point (CI lower bound >= -1 point) at no more than half the FLOPs."""
        return self.diff_ci[0] >= -0.01 and self.cost_ratio <= 0.5

    @property
    def graph_better(self) -> bool:
        """True when the whole 95% CI of the difference is above 0."""
        return self.diff_ci[0] > 0

    @property
    def single_better(self) -> bool:
        return self.diff_ci[1] < 0

    def verdict(self) -> str:
        if self.graph_better:
            return "the graph beats the best single model (95% CI of the difference above 0)"
        if self.matches_cheaper:
            return (
                "the graph matches the best single model (95% CI lower bound >= -1 point) at "
                f"{100 * self.cost_ratio:.0f}% of its FLOPs"
            )
        if self.single_better:
            return "the best single model beats the graph (95% CI of the difference below 0)"
        return "no significant difference (the 95% CI of the difference contains 0)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "single_model": self.single.model,
            "single_cost": self.single.cost,
            "single_select_reward": self.single.select_reward,
            "single_test": self.single_test,
            "single_ci": list(self.single_ci),
            "graph_test": self.graph_test,
            "graph_ci": list(self.graph_ci),
            "graph_cost": self.graph_cost,
            "graph_worst_cost": self.graph_worst_cost,
            "cost_ratio": self.cost_ratio,
            "diff": self.diff,
            "diff_ci": list(self.diff_ci),
            "test_n": self.test_n,
            "verdict": self.verdict(),
        }


def single_graph(space: SearchSpace, model: str) -> Graph:
    """The one-call graph of ``model``: a single node (behind a free vote/select
    sink on spaces whose sink is one, so replay evaluators can score it).
    An LLM output node is *not* added: the baseline is the model alone."""
    if space.sink_mode == "llm":
        return Graph(
            name=f"single-{model}",
            nodes=[Node(id="n0", role=Role.ASSISTANT, model=model)],
            sink="n0",
        )
    counts = [1 if m == model else 0 for m in space.model_names]
    return space.flat_graph(counts, name=f"single-{model}")


def single_fits(space: SearchSpace, model: str) -> bool:
    cost = space.node_cost(model, 0)
    if space.budget is not None and cost > space.budget + 1e-9:
        return False
    if (
        space.budget_dollars is not None
        and space.node_dollars(model, 0) > space.budget_dollars + 1e-12
    ):
        return False
    return True


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Mean of ``a - b`` (paired by question) and its percentile bootstrap CI."""
    if len(a) != len(b):
        raise ValueError(f"paired bootstrap: {len(a)} vs {len(b)} scores; pair them by question")
    if not a:
        return 0.0, 0.0, 0.0
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    means = d[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(d.mean()), float(lo), float(hi)


async def choose_best_single(
    evaluator: Any, space: SearchSpace
) -> tuple[SingleChoice, list[SingleChoice]]:
    """Best single model that fits the budget, chosen on train + validation
    (ties: the cheaper one). Raises ValueError when no single call fits."""
    cands: list[SingleChoice] = []
    for m in space.model_names:
        if not single_fits(space, m):
            continue
        g = single_graph(space, m)
        rs = [await evaluator.evaluate(g, "train")]
        if _has(evaluator, "heldout"):
            rs.append(await evaluator.evaluate(g, "heldout"))
        scores = [s for r in rs for s in (r.scores or [r.reward] * r.n)]
        cands.append(
            SingleChoice(
                model=m,
                cost=space.node_cost(m, 0),
                dollars=space.node_dollars(m, 0),
                select_reward=float(np.mean(scores)) if scores else 0.0,
                select_n=len(scores),
            )
        )
    if not cands:
        raise ValueError("no searched model fits the budget with a single call")
    best = max(cands, key=lambda c: (c.select_reward, -c.cost))
    return best, sorted(cands, key=lambda c: -c.select_reward)


async def compare_best_single(
    evaluator: Any, space: SearchSpace, graph: Graph, *, n_boot: int = 10_000, seed: int = 0
) -> Comparison | None:
    """Compare ``graph`` with the best single model on the evaluator's test
    questions; None when the evaluator has no test questions."""
    if not _has(evaluator, "test"):
        return None
    best, cands = await choose_best_single(evaluator, space)
    gt = await evaluator.evaluate(graph, "test")
    st = await evaluator.evaluate(single_graph(space, best.model), "test")
    gm, glo, ghi = mean_ci(gt.scores)
    sm, slo, shi = mean_ci(st.scores)
    d, dlo, dhi = paired_bootstrap(gt.scores, st.scores, n_boot=n_boot, seed=seed)
    return Comparison(
        single=best,
        candidates=cands,
        graph_test=gm,
        graph_ci=(glo, ghi),
        single_test=sm,
        single_ci=(slo, shi),
        diff=d,
        diff_ci=(dlo, dhi),
        test_n=len(gt.scores),
        graph_cost=gt.cost,
        graph_worst_cost=gt.worst_cost,
    )


def _has(evaluator: Any, split: str) -> bool:
    return bool(
        getattr(evaluator, "examples", {}).get(split) or getattr(evaluator, "ids", {}).get(split)
    )


def comparison_table(c: Comparison, *, oracle: bool = False) -> Any:
    """A rich table: found graph vs best single model on test, and the verdict."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    what = "test reward (oracle UB)" if oracle else "test accuracy (95% CI)"
    t = Table(
        title=f"Found graph vs best single model that fits the budget ({c.test_n} test questions)"
    )
    for col in ("system", what, "cost (norm. FLOPs)", "chosen on"):
        t.add_column(col)
    cost = f"{c.graph_cost:.2f}"
    if c.graph_worst_cost is not None:
        cost = f"{c.graph_cost:.2f} expected (worst {c.graph_worst_cost:.2f})"
    t.add_row(
        "found graph",
        f"{c.graph_test:.3f} ({c.graph_ci[0]:.3f}-{c.graph_ci[1]:.3f})",
        cost,
        "train (search) + validation (pick)",
    )
    t.add_row(
        f"best single: {c.single.model}",
        f"{c.single_test:.3f} ({c.single_ci[0]:.3f}-{c.single_ci[1]:.3f})",
        f"{c.single.cost:.2f}",
        f"train + validation ({c.single.select_n} q, {c.single.select_reward:.3f}; "
        f"{len(c.candidates)} models fit)",
    )
    line = Text(
        f"graph - single: {c.diff * 100:+.1f} points (paired bootstrap 95% CI "
        f"{c.diff_ci[0] * 100:+.1f} to {c.diff_ci[1] * 100:+.1f}) at {100 * c.cost_ratio:.0f}% "
        f"of its FLOPs: {c.verdict()}"
    )
    return Group(t, line)
