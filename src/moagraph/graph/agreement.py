"""Answer clusters: the one place that decides which answers agree.

The vote node, a node's :class:`~moagraph.graph.spec.Condition` and the exact
replay evaluator all cluster answers the same way, so a replayed cascade scores
what the executor would: greedy clustering in input order, each answer joining
the first cluster whose representative (its first member) is equivalent to it
under the task's answer equivalence; an answer that cannot be extracted
(``None``) joins no cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from moagraph.graph.spec import Condition

Equivalent = Callable[[Any, Any], bool]

__all__ = ["agreement", "clusters", "condition_holds", "majority"]


def clusters(answers: Sequence[Any], equivalent: Equivalent) -> list[tuple[Any, list[int]]]:
    """(representative answer, member indices) per cluster, in order of first member."""
    out: list[tuple[Any, list[int]]] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        for rep, members in out:
            if equivalent(rep, a):
                members.append(i)
                break
        else:
            out.append((a, [i]))
    return out


def majority(answers: Sequence[Any], equivalent: Equivalent) -> tuple[int, dict[str, int]]:
    """Index of the winning answer (earliest member of the biggest cluster; ties go to the
    cluster whose first member comes first) and the cluster sizes by representative.
    With no extractable answer the first input wins."""
    cl = clusters(answers, equivalent)
    if not cl:
        return 0, {}
    best = max(cl, key=lambda c: (len(c[1]), -c[1][0]))
    return best[1][0], {str(rep): len(m) for rep, m in cl}


def agreement(answers: Sequence[Any], equivalent: Equivalent) -> float:
    """Largest cluster over the number of answers (unextractable ones count, agreeing with
    nothing); 1.0 for no answers at all (nothing disagrees)."""
    if not answers:
        return 1.0
    cl = clusters(answers, equivalent)
    return max((len(m) for _, m in cl), default=0) / len(answers)


def condition_holds(cond: Condition, ran: Sequence[Any], equivalent: Equivalent) -> bool:
    """Whether a node with ``cond`` runs, given the answers of the ``among`` nodes that ran
    (in ``among`` order). None of them ran: false (nothing to escalate from)."""
    if not ran:
        return False
    return agreement(ran, equivalent) < cond.cutoff - 1e-12
