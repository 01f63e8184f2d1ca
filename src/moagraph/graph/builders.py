"""Ready-made collaboration graphs: the baselines every search is compared with.

Every builder returns a validated :class:`Graph` with a name that says what it
is (``vote-3xgemma``), so runs in the store and rows in a report read plainly.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from moagraph.graph.spec import Condition, Graph, GraphError, Node, Role

__all__ = ["best_of_n", "cascade", "chain", "moa", "parallel_vote", "random_dag", "single"]


def _short(models: Sequence[str]) -> str:
    uniq = list(dict.fromkeys(models))
    if len(uniq) == 1:
        return f"{len(models)}x{uniq[0]}" if len(models) > 1 else uniq[0]
    return "+".join(uniq)


def _need(cond: bool, field: str, fix: str) -> None:
    if not cond:
        raise GraphError(f"builder argument `{field}`: {fix}")


def single(model: str) -> Graph:
    """One call of one model: the cheapest baseline (cost 1 for the smallest model)."""
    return Graph(
        name=f"single-{model}", nodes=[Node(id="a0", model=model)], sink="a0"
    ).validate_structure()


def parallel_vote(models: str | Sequence[str], n: int | None = None) -> Graph:
    """``n`` independent answers and a majority vote (self-consistency).

    ``models`` may be one name (repeated ``n`` times) or a list (cycled to ``n``;
    ``n`` defaults to its length), so mixed-model votes are one call too.
    """
    names = [models] if isinstance(models, str) else list(models)
    _need(bool(names), "models", "give at least one model name")
    n = n if n is not None else (1 if isinstance(models, str) else len(names))
    _need(n >= 1, "n", "must be >= 1")
    picked = [names[i % len(names)] for i in range(n)]
    nodes = [Node(id=f"a{i}", model=m) for i, m in enumerate(picked)]
    nodes.append(Node(id="vote", role=Role.VOTE, inputs=[x.id for x in nodes]))
    return Graph(name=f"vote-{_short(picked)}", nodes=nodes, sink="vote").validate_structure()


def cascade(
    first: Sequence[str], then: Sequence[str] | Sequence[Sequence[str]], threshold: float = 1.0
) -> Graph:
    """A cascade: the ``first`` models answer; each later stage runs only when the answers
    of all earlier stages agree less than ``threshold`` (1.0: any disagreement, i.e.
    ``when: disagree``; else ``when: agreement_below``); a vote over every answer that ran.

    ``then`` is one later stage (a list of model names) or several (a list of lists).
    The vote lists escalated answers first, so a tie goes to the latest stage that ran
    (the shape ``moagraph.search.space.cascade_nodes`` + ``finalize_graph`` build).
    Nodes are ``s{stage}_{j}``; the sink is ``vote``.
    """
    _need(
        not isinstance(first, str),
        "first",
        f"give a list of model names, e.g. [{first!r}], not a bare string",
    )
    _need(bool(first), "first", "give at least one model name for stage 0")
    _need(
        not isinstance(then, str),
        "then",
        f"give a list of model names (one stage) or a list of lists (several), e.g. [{then!r}]",
    )
    _need(bool(then), "then", "give at least one later stage (a list of model names)")
    stages_raw = list(then)
    if all(isinstance(x, str) for x in stages_raw):
        later: list[list[str]] = [[str(x) for x in stages_raw]]
    else:
        _need(
            all(not isinstance(x, str) for x in stages_raw),
            "then",
            "give either model names (one stage) or lists of model names (stages), not a mix",
        )
        later = [list(x) for x in stages_raw]
    _need(all(later), "then", "every stage needs at least one model name; drop empty stages")
    for where, names in (("first", list(first)), *(("then", s) for s in later)):
        _need(
            all(isinstance(m, str) and m for m in names),
            where,
            "model names must be non-empty strings",
        )
    _need(
        isinstance(threshold, int | float) and 0.0 < float(threshold) <= 1.0,
        "threshold",
        f"must be in (0, 1] (1.0 = run on any disagreement), got {threshold!r}",
    )
    t = float(threshold)
    stages: list[list[str]] = [list(first), *later]
    nodes: list[Node] = []
    by_stage: list[list[str]] = []
    for s, models in enumerate(stages):
        earlier = [i for ids in by_stage for i in ids]
        cond = None
        if s > 0:
            cond = (
                Condition(when="disagree", among=earlier)
                if t >= 1.0
                else Condition(when="agreement_below", among=earlier, threshold=t)
            )
        ids = [f"s{s}_{j}" for j in range(len(models))]
        nodes += [
            Node(id=i, model=m, condition=cond.model_copy() if cond else None)
            for i, m in zip(ids, models, strict=True)
        ]
        by_stage.append(ids)
    sink_inputs = [i for ids in reversed(by_stage) for i in ids]  # escalated first
    nodes.append(Node(id="vote", role=Role.VOTE, inputs=sink_inputs))
    tag = "" if t >= 1.0 else f"-t{t:g}"
    name = "cascade-" + "-then-".join(_short(m) for m in stages) + tag
    return Graph(name=name, nodes=nodes, sink="vote").validate_structure()


def best_of_n(model: str, n: int, judge_model: str | None = None) -> Graph:
    """``n`` samples of ``model`` and a judge that picks one (passed on verbatim)."""
    _need(n >= 1, "n", "must be >= 1")
    judge_model = judge_model or model
    nodes = [Node(id=f"a{i}", model=model) for i in range(n)]
    nodes.append(Node(id="judge", role=Role.JUDGE, model=judge_model, inputs=[x.id for x in nodes]))
    return Graph(
        name=f"best-of-{n}-{model}-judge-{judge_model}", nodes=nodes, sink="judge"
    ).validate_structure()


def chain(models: str | Sequence[str], depth: int | None = None) -> Graph:
    """A refinement chain: each assistant revises the previous answer.

    ``models`` is cycled along the chain; ``depth`` defaults to its length.
    """
    names = [models] if isinstance(models, str) else list(models)
    _need(bool(names), "models", "give at least one model name")
    depth = depth if depth is not None else (1 if isinstance(models, str) else len(names))
    _need(depth >= 1, "depth", "must be >= 1")
    nodes: list[Node] = []
    for i in range(depth):
        nodes.append(
            Node(id=f"c{i}", model=names[i % len(names)], inputs=[f"c{i - 1}"] if i else [])
        )
    picked = [x.model or "" for x in nodes]
    return Graph(
        name=f"chain{depth}-{_short(picked)}", nodes=nodes, sink=nodes[-1].id
    ).validate_structure()


def moa(layers: Sequence[Sequence[str]], aggregator: str) -> Graph:
    """Mixture-of-Agents: every node of a layer reads all of the previous layer;
    one aggregator reads the last layer. Layers after the first are assistants
    that refine (the MoA "proposers")."""
    _need(
        bool(layers) and all(layers), "layers", "give at least one non-empty layer of model names"
    )
    nodes: list[Node] = []
    prev: list[str] = []
    for li, layer in enumerate(layers):
        ids = [f"l{li}_{j}" for j in range(len(layer))]
        nodes += [Node(id=i, model=m, inputs=list(prev)) for i, m in zip(ids, layer, strict=True)]
        prev = ids
    nodes.append(Node(id="agg", role=Role.AGGREGATOR, model=aggregator, inputs=prev))
    shape = "x".join(str(len(layer)) for layer in layers)
    mix = _short([m for layer in layers for m in layer])
    return Graph(
        name=f"moa-{shape}-{mix}-agg-{aggregator}", nodes=nodes, sink="agg"
    ).validate_structure()


def random_dag(
    models: Sequence[str], n_nodes: int, edge_p: float = 0.5, rng: random.Random | int | None = None
) -> Graph:
    """A random valid graph (for search baselines and property tests).

    Nodes ``n0..n{k-1}`` are in topological order; each earlier node feeds a
    later one with probability ``edge_p``. Roles are then fixed to obey the
    rules: a node becomes a fuser only when it has an assistant input and no
    fuser input and its consumers are all assistants. Nodes that feed nothing
    go to a final vote sink (or the last node is the sink when it is alone).
    """
    _need(bool(models), "models", "give at least one model name")
    _need(n_nodes >= 1, "n_nodes", "must be >= 1")
    _need(0.0 <= edge_p <= 1.0, "edge_p", "must be in [0, 1]")
    r = rng if isinstance(rng, random.Random) else random.Random(rng)
    inputs: list[list[int]] = [[j for j in range(i) if r.random() < edge_p] for i in range(n_nodes)]
    chosen = [r.choice(list(models)) for _ in range(n_nodes)]
    roles = [Role.ASSISTANT] * n_nodes
    consumers: list[list[int]] = [
        [k for k in range(n_nodes) if i in inputs[k]] for i in range(n_nodes)
    ]
    for i in range(n_nodes):
        if inputs[i] and all(roles[j] is Role.ASSISTANT for j in inputs[i]) and r.random() < 0.3:
            roles[i] = Role.FUSER
    # A fuser's consumers are assistants by construction (roles only become fusers
    # when all inputs are assistants, so a fuser never feeds a fuser).
    leaves = [i for i in range(n_nodes) if not consumers[i]]
    nodes = [
        Node(id=f"n{i}", model=chosen[i], role=roles[i], inputs=[f"n{j}" for j in inputs[i]])
        for i in range(n_nodes)
    ]
    if len(leaves) == 1:
        sink = f"n{leaves[0]}"
    else:
        nodes.append(Node(id="vote", role=Role.VOTE, inputs=[f"n{i}" for i in leaves]))
        sink = "vote"
    seed_tag = f"-p{edge_p:g}"
    return Graph(
        name=f"random{n_nodes}{seed_tag}-{_short(chosen)}", nodes=nodes, sink=sink
    ).validate_structure()
