"""The one per-query budget type, for graphs and routers alike.

A budget caps normalised FLOPs (one no-input call of the pool's smallest model
= 1), dollars and wall seconds. Graphs are checked against their estimated cost
before any call (:meth:`Budget.over_estimate`); every LLM call of a graph or a
router is then admitted only if its upper-bound cost still fits
(:class:`moagraph.graph.run.QueryRun`). :func:`budget_scope` tightens the budget
of every query run started in a context: how the server applies its
``--budget`` and a request's ``moagraph.budget_flops`` to routers, which are
built once and shared by all requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pydantic import BaseModel, ConfigDict, Field

from moagraph.graph.cost import GraphCost

__all__ = ["Budget", "budget_scope", "scoped_budget"]


class Budget(BaseModel):
    """Caps per query (None = no cap). FLOPs are normalised (one no-input call of the
    smallest pool model = 1), so a budget means the same thing for any pool."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_flops_norm: float | None = Field(None, gt=0, description="Normalised FLOPs per query.")
    max_dollars: float | None = Field(None, ge=0, description="Dollars per query.")
    max_latency_s: float | None = Field(None, gt=0, description="Wall seconds per query.")

    @property
    def capped(self) -> bool:
        """Whether any cap is set."""
        return (
            self.max_flops_norm is not None
            or self.max_dollars is not None
            or self.max_latency_s is not None
        )

    def tighter(self, other: Budget | None) -> Budget:
        """The budget that respects both (the smaller of each cap)."""
        if other is None:
            return self

        def low(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else min(a, b)

        return Budget(
            max_flops_norm=low(self.max_flops_norm, other.max_flops_norm),
            max_dollars=low(self.max_dollars, other.max_dollars),
            max_latency_s=low(self.max_latency_s, other.max_latency_s),
        )

    def over_estimate(self, est: GraphCost) -> str | None:
        """Why a graph's planned cost is over this budget (None when it fits)."""
        if self.max_flops_norm is not None and est.flops_norm > self.max_flops_norm:
            return f"estimated {est.flops_norm:.3g} normalised FLOPs > max_flops_norm {self.max_flops_norm:g}"
        if self.max_dollars is not None and est.dollars > self.max_dollars:
            return f"estimated ${est.dollars:.3g} > max_dollars {self.max_dollars:g}"
        return None


_SCOPED_BUDGET: ContextVar[Budget | None] = ContextVar("moagraph_scoped_budget", default=None)


@contextmanager
def budget_scope(budget: Budget | None) -> Iterator[None]:
    """Cap every query run started in this context (and tasks created from it) by
    ``budget`` on top of the policy's own budget."""
    token = _SCOPED_BUDGET.set(budget)
    try:
        yield
    finally:
        _SCOPED_BUDGET.reset(token)


def scoped_budget() -> Budget | None:
    """The budget of the innermost :func:`budget_scope` (None outside any)."""
    return _SCOPED_BUDGET.get()
