"""Budgets that pick: a request budget chooses among the graphs of a served set.

A *set of served graphs* is one served model name backed by several graphs
(``moagraph serve --graph gsm=a.yaml,b.yaml,c.yaml``). Each graph is an
:class:`Option` with a quality and an expected cost; a request's budget
(:class:`RequestBudget`: normalised FLOPs, dollars, seconds) picks the option
:func:`pick` returns: the highest quality whose **expected** cost fits every
cap the request sets (ties: the cheaper). Nothing fits: :class:`NoOptionFits`,
which the server answers with a 400 naming the budget field and the cheapest
option's expected cost.

"Fits" is the expected cost (measured on training questions), not the worst
case: a conditional graph that usually stops early is picked by what it
usually costs. The budget is still a hard cap at run time: the server runs the
chosen graph inside :func:`moagraph.graph.budget.budget_scope`, so the
executor's per-call guard (:class:`moagraph.graph.run.QueryRun`) refuses any
call that might pass it. :attr:`Pick.capped` says when the chosen option's worst
case is over the budget (its run may be cut).

Graph meta keys read here (written by ``moagraph search`` into the best graph's
YAML; write them yourself for hand-made graphs)::

    meta:
      train_accuracy: 0.93          # quality: accuracy on training questions, 0..1
      expected_flops_norm: 12.3     # mean normalised FLOPs per training question
      expected_dollars: 0.0021      # mean dollars per question
      expected_latency_s: 1.8       # mean seconds per question
      worst_flops_norm: 20.5        # every node run (informational; else computed)

With no ``expected_flops_norm`` (``expected_dollars``) the option's planned
worst case is its expected cost (``cost_source: "worst_case"`` in the
response). With no ``expected_latency_s`` nothing is known of its latency, so
it never fits a latency budget. With no ``train_accuracy`` it ranks below
every option that has one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from moagraph.errors import ConfigError
from moagraph.graph.budget import Budget

__all__ = [
    "BUDGET_FIELDS",
    "META_KEYS",
    "NoOptionFits",
    "Option",
    "Pick",
    "RequestBudget",
    "option_from_meta",
    "pick",
]

Dim = Literal["flops_norm", "dollars", "latency_s"]
DIMS: tuple[Dim, ...] = ("flops_norm", "dollars", "latency_s")

BUDGET_FIELDS: dict[Dim, tuple[str, str]] = {
    "flops_norm": ("moagraph.budget_flops", "X-Moagraph-Budget-Flops"),
    "dollars": ("moagraph.budget_dollars", "X-Moagraph-Budget-Dollars"),
    "latency_s": ("moagraph.budget_latency_s", "X-Moagraph-Budget-Latency-S"),
}
"""Per budget dimension: (the body field, the header) a request sets it with."""

META_KEYS: dict[str, str] = {
    "train_accuracy": "accuracy on training questions (0..1): the option's quality",
    "expected_flops_norm": "mean normalised FLOPs per training question",
    "expected_dollars": "mean dollars per training question",
    "expected_latency_s": "mean seconds per training question",
    "worst_flops_norm": "normalised FLOPs with every node run (informational)",
}
"""Graph ``meta`` keys a served set reads (see the module docstring)."""

_UNIT = {"flops_norm": "normalised FLOPs", "dollars": "dollars", "latency_s": "seconds"}


def _fmt(dim: Dim, v: float) -> str:
    return f"${v:.4g}" if dim == "dollars" else f"{v:.4g}" + ("s" if dim == "latency_s" else "")


@dataclass(frozen=True)
class RequestBudget:
    """A request's caps (None: no cap) and, per cap, which field set it."""

    flops_norm: float | None = None
    dollars: float | None = None
    latency_s: float | None = None
    source: Mapping[str, str] = field(default_factory=dict)

    @property
    def capped(self) -> bool:
        return any(getattr(self, d) is not None for d in DIMS)

    def get(self, dim: Dim) -> float | None:
        v = getattr(self, dim)
        return None if v is None else float(v)

    def as_budget(self) -> Budget:
        return Budget(
            max_flops_norm=self.flops_norm, max_dollars=self.dollars, max_latency_s=self.latency_s
        )

    def caps(self) -> dict[str, float]:
        return {d: v for d in DIMS if (v := self.get(d)) is not None}

    def param(self, dim: str) -> str:
        """The field that set this cap (the body field when none is recorded)."""
        return self.source.get(dim, BUDGET_FIELDS[dim][0])  # type: ignore[index]

    @classmethod
    def combine(cls, *parts: tuple[Dim, float | None, str]) -> RequestBudget:
        """The tightest cap per dimension from ``(dim, value, source)`` triples."""
        vals: dict[str, float] = {}
        src: dict[str, str] = {}
        for dim, v, where in parts:
            if v is None:
                continue
            if dim not in vals or v < vals[dim]:
                vals[dim], src[dim] = float(v), where
        return cls(**vals, source=src)


@dataclass(frozen=True)
class Option:
    """One graph of a served set: its quality and its expected and worst-case costs."""

    name: str
    quality: float | None
    expected: Mapping[str, float | None]
    worst: Mapping[str, float | None] = field(default_factory=dict)
    cost_source: Mapping[str, str] = field(default_factory=dict)
    """Per dimension: "meta" (measured, from the graph's meta) or "worst_case"."""
    guard: Mapping[str, float | None] = field(default_factory=dict)
    """Upper bound of the calls that always run (unconditional nodes at their max_tokens),
    as the run-time guard bounds them: over the budget, the guard would refuse them."""

    def cost(self, dim: Dim) -> float | None:
        v = self.expected.get(dim)
        return None if v is None else float(v)

    def needed(self, dim: Dim) -> float | None:
        """What a cap on ``dim`` must be for this option to fit: its expected cost, or the
        run-time bound of its always-run calls when higher."""
        c = self.cost(dim)
        if c is None:
            return None
        g = self.guard.get(dim)
        return c if g is None else max(c, float(g))


@dataclass(frozen=True)
class Pick:
    option: Option
    budget: RequestBudget
    reason: str
    not_fit: list[dict[str, Any]]
    capped: bool
    """The option's worst case is over a cap: the run is cut where a call might pass it."""

    def info(self) -> dict[str, Any]:
        o = self.option
        return {
            "option": o.name,
            "reason": self.reason,
            "quality": o.quality,
            "expected": {k: v for k, v in o.expected.items() if v is not None},
            "worst": {k: v for k, v in o.worst.items() if v is not None},
            "always_run_bound": {k: v for k, v in o.guard.items() if v is not None},
            "cost_source": dict(o.cost_source),
            "budget": self.budget.caps(),
            "budget_fields": {d: self.budget.param(d) for d in self.budget.caps()},
            "fits_by": "expected",
            "capped_at_run_time": self.capped,
            "not_fit": self.not_fit,
        }


class NoOptionFits(Exception):
    """No option's expected cost fits: ``param`` is the budget field, ``cheapest`` the
    cheapest option on that dimension and ``cost`` its expected cost."""

    def __init__(self, message: str, param: str, cheapest: str | None, cost: float | None) -> None:
        super().__init__(message)
        self.message, self.param, self.cheapest, self.cost = message, param, cheapest, cost


def _why_not(o: Option, budget: RequestBudget) -> tuple[Dim, str] | None:
    for dim in DIMS:
        cap = budget.get(dim)
        if cap is None:
            continue
        c = o.cost(dim)
        if c is None:
            return dim, f"no expected {_UNIT[dim]} recorded (meta.expected_{dim})"
        if c > cap:
            return dim, f"expected {_fmt(dim, c)} > budget {_fmt(dim, cap)}"
        g = o.guard.get(dim)
        if g is not None and g > cap:
            return dim, (
                f"expected {_fmt(dim, c)}, but its calls that always run may cost up to "
                f"{_fmt(dim, g)} at their max_tokens > budget {_fmt(dim, cap)} (the run-time "
                "guard would refuse them)"
            )
    return None


def _sort_key(o: Option, budget: RequestBudget) -> tuple[float, ...]:
    """Best first: quality (unknown last), then cheaper on the capped dimensions, then FLOPs."""
    dims = [d for d in DIMS if budget.get(d) is not None] + ["flops_norm", "dollars"]
    q = o.quality if o.quality is not None else -math.inf
    costs = [c if (c := o.cost(d)) is not None else math.inf for d in dims]
    return (-q, *costs)


def pick(options: Sequence[Option], budget: RequestBudget) -> Pick:
    """The highest-quality option whose expected cost fits ``budget`` (ties: the cheaper).

    >>> a = Option("big", 0.95, {"flops_norm": 30.0})
    >>> b = Option("small", 0.80, {"flops_norm": 2.0})
    >>> pick([a, b], RequestBudget(flops_norm=10)).option.name
    'small'
    >>> pick([a, b], RequestBudget()).option.name
    'big'
    """
    if not options:
        raise ValueError("pick: no options")
    fits, not_fit = [], []
    for o in options:
        why = _why_not(o, budget)
        if why is None:
            fits.append(o)
        else:
            not_fit.append(
                {
                    "option": o.name,
                    "quality": o.quality,
                    "expected": {k: v for k, v in o.expected.items() if v is not None},
                    "why": why[1],
                }
            )
    if not fits:
        raise _nothing_fits(options, budget)
    fits.sort(key=lambda o: _sort_key(o, budget))
    best = fits[0]
    q = f"train accuracy {best.quality:.3g}" if best.quality is not None else "no train accuracy"
    cost = ", ".join(
        f"expected {_fmt(d, c)}"
        + (f" <= budget {_fmt(d, cap)}" if (cap := budget.get(d)) is not None else "")
        + (" (worst case: no measured cost)" if best.cost_source.get(d) == "worst_case" else "")
        for d in DIMS
        if (c := best.cost(d)) is not None and (budget.get(d) is not None or d == "flops_norm")
    )
    if budget.capped:
        reason = f"highest quality that fits the budget: {q}; {cost}"
        if not_fit:
            reason += f"; {len(not_fit)} option(s) over the budget"
    else:
        reason = f"no budget: highest quality; {q}; {cost}"
    capped = any(
        (cap := budget.get(d)) is not None and (w := best.worst.get(d)) is not None and w > cap
        for d in DIMS
    )
    return Pick(best, budget, reason, not_fit, capped)


def _nothing_fits(options: Sequence[Option], budget: RequestBudget) -> NoOptionFits:
    # the dimension most options break, reported with the cheapest option on it
    first_dim: Dim = next(d for d in DIMS if budget.get(d) is not None)
    for dim in DIMS:
        if budget.get(dim) is None:
            continue
        known = [o for o in options if o.needed(dim) is not None]
        if not known or min(o.needed(dim) or 0.0 for o in known) > (budget.get(dim) or 0.0):
            first_dim = dim
            break
    cap = budget.get(first_dim)
    assert cap is not None
    param = budget.param(first_dim)
    known = [o for o in options if o.cost(first_dim) is not None]
    if not known:
        return NoOptionFits(
            f"no option records an expected {_UNIT[first_dim]} "
            f"(meta.expected_{first_dim}), so none fits the budget {param}={cap:g}; "
            f"options: {', '.join(o.name for o in options)}",
            param,
            None,
            None,
        )
    cheapest = min(known, key=lambda o: o.needed(first_dim) or 0.0)
    c = cheapest.cost(first_dim)
    need = cheapest.needed(first_dim)
    assert c is not None and need is not None
    return NoOptionFits(
        f"no option fits the budget {param}={cap:g}: the cheapest, {cheapest.name!r}, is "
        f"expected at {_fmt(first_dim, c)} {_UNIT[first_dim]} per request"
        + (
            " (its worst case: no measured cost)"
            if cheapest.cost_source.get(first_dim) == "worst_case"
            else ""
        )
        + (
            f" and its calls that always run may cost up to {_fmt(first_dim, need)} at their "
            "max_tokens (the run-time guard admits a call only if that fits)"
            if need > c
            else ""
        )
        + f"; raise {param} to at least {need:.4g} (options: "
        + ", ".join(
            f"{o.name} {_fmt(first_dim, v)}"
            for o in options
            if (v := o.cost(first_dim)) is not None
        )
        + ")",
        param,
        cheapest.name,
        c,
    )


def _meta_number(meta: Mapping[str, Any], key: str, where: str) -> float | None:
    v = meta.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise ConfigError(f"{where}: meta.{key} must be a non-negative number, got {v!r}")
    if key == "train_accuracy" and v > 1:
        raise ConfigError(f"{where}: meta.train_accuracy must be in [0, 1], got {v!r}")
    return float(v)


def option_from_meta(
    name: str,
    meta: Mapping[str, Any],
    worst: Mapping[str, float | None],
    guard: Mapping[str, float | None] | None = None,
) -> Option:
    """An :class:`Option` from a graph's ``meta`` (:data:`META_KEYS`) and its planned
    worst case (``{"flops_norm": .., "dollars": ..}``), which stands in for an expected
    cost that is not recorded."""
    where = f"graph {name!r}"
    quality = _meta_number(meta, "train_accuracy", where)
    expected: dict[str, float | None] = {}
    source: dict[str, str] = {}
    for dim in DIMS:
        v = _meta_number(meta, f"expected_{dim}", where)
        if v is not None:
            expected[dim], source[dim] = v, "meta"
        elif worst.get(dim) is not None:
            expected[dim], source[dim] = worst[dim], "worst_case"
    w = dict(worst)
    recorded_worst = _meta_number(meta, "worst_flops_norm", where)
    if recorded_worst is not None and w.get("flops_norm") is None:
        w["flops_norm"] = recorded_worst
    return Option(name, quality, expected, w, source, dict(guard or {}))
