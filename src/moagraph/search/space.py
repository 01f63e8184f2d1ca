"""What may be searched: the pool's models, the roles, the budget, the node cap.

Cost of a node follows the closed-form FLOPs model (``models.cost.node_flops``)
with the node's in-degree, normalised so one call of the smallest pool model
with no inputs costs 1. The sink is a *vote* node (majority over extracted
answers; no LLM, zero FLOPs), so the cost of a graph is the sum over its LLM
nodes.

Planning assumption for model mixes: a mix (how many copies of each model) is
priced with the *cheapest wiring*, every node at in-degree 0 feeding the vote
sink. Wiring only adds cost, so a mix that is infeasible under this assumption
is infeasible under any wiring; a sampled graph is always re-checked and
trimmed (:meth:`SearchSpace.trim`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from moagraph.graph.spec import Graph, Node, Role
from moagraph.models.cost import call_dollars, node_flops, unit_flops
from moagraph.models.pool import ModelSpec, Pool

SinkMode = Literal["vote", "select"]
SINK_ID = "sink"


class SearchSpaceError(ValueError):
    """The search space cannot be built as asked; the message names the option to change."""


@dataclass
class SearchSpace:
    """Models, roles, budget and node cap of one search.

    ``flat=True`` restricts graphs to first-layer assistants feeding the sink
    (no edges between LLM nodes): a space small enough to enumerate, and one
    that replay pools answer exactly. ``sink_mode="select"`` labels the sink as
    an oracle best-of-n (an upper-bound objective; see ``evaluator``).
    """

    models: list[ModelSpec]
    avg_in: float
    avg_out: float
    budget: float | None = None  # normalised FLOPs
    budget_dollars: float | None = None
    max_nodes: int = 6
    roles: tuple[Role, ...] = (Role.ASSISTANT, Role.FUSER)
    flat: bool = False
    sink_mode: SinkMode = "vote"
    max_copies: int | dict[str, int] | None = None  # e.g. recorded samples per query
    _unit: float = field(init=False, repr=False)
    _cost_cache: dict[tuple[str, int], float] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not self.models:
            raise SearchSpaceError("the search space has no models; check --pool / --models")
        if self.max_nodes < 1:
            raise SearchSpaceError(f"max_nodes={self.max_nodes}: use --max-nodes >= 1")
        if self.budget is not None and self.budget <= 0:
            raise SearchSpaceError(f"budget={self.budget}: use a positive --budget")
        if self.budget_dollars is not None and self.budget_dollars < 0:
            raise SearchSpaceError(f"budget_dollars={self.budget_dollars}: use --budget-dollars >= 0")
        bad = [r for r in self.roles if r not in (Role.ASSISTANT, Role.FUSER)]
        if bad or Role.ASSISTANT not in self.roles:
            raise SearchSpaceError(
                f"roles={[r.value for r in self.roles]}: searchable roles are 'assistant' "
                "(required) and 'fuser'"
            )
        self._unit = unit_flops(self.models, self.avg_in, self.avg_out)
        cheapest = min(self.node_cost(m.name, 0) for m in self.models)
        if self.budget is not None and cheapest > self.budget:
            raise SearchSpaceError(
                f"budget={self.budget}: even one call of the cheapest model costs {cheapest:.2f} "
                "normalised FLOPs; raise --budget"
            )
        if self.budget_dollars is not None:
            cheapest_d = min(self.node_dollars(m.name, 0) for m in self.models)
            if cheapest_d > self.budget_dollars:
                raise SearchSpaceError(
                    f"budget_dollars={self.budget_dollars}: one call of the cheapest model costs "
                    f"${cheapest_d:.6f}; raise --budget-dollars"
                )

    # --- construction -------------------------------------------------------
    @classmethod
    def from_pool(
        cls,
        pool: Pool,
        task: Any = None,
        *,
        budget: float | None = None,
        budget_dollars: float | None = None,
        max_nodes: int = 6,
        models: Sequence[str] | None = None,
        roles: Sequence[Role | str] = (Role.ASSISTANT, Role.FUSER),
        avg_in: float | None = None,
        avg_out: float | None = None,
        flat: bool = False,
        sink_mode: SinkMode = "vote",
        max_copies: int | dict[str, int] | None = None,
    ) -> SearchSpace:
        """Build from a pool and a task (the task gives the average lengths A, B)."""
        specs = [pool[m] for m in models] if models else list(pool.models)
        a = avg_in if avg_in is not None else getattr(task, "avg_input_tokens", None)
        b = avg_out if avg_out is not None else getattr(task, "avg_output_tokens", None)
        if a is None or b is None:
            raise SearchSpaceError(
                "avg_in/avg_out: the task gives no average token lengths; pass avg_in= and avg_out="
            )
        return cls(
            models=specs,
            avg_in=float(a),
            avg_out=float(b),
            budget=budget,
            budget_dollars=budget_dollars,
            max_nodes=max_nodes,
            roles=tuple(Role(r) for r in roles),
            flat=flat,
            sink_mode=sink_mode,
            max_copies=max_copies,
        )

    # --- costs --------------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def spec(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"model {name!r} is not in the search space ({', '.join(self.model_names)})")

    def node_cost(self, model: str, in_degree: int) -> float:
        """Normalised planned FLOPs of one node."""
        key = (model, in_degree)
        c = self._cost_cache.get(key)
        if c is None:
            c = node_flops(self.spec(model), in_degree, self.avg_in, self.avg_out) / self._unit
            self._cost_cache[key] = c
        return c

    def node_dollars(self, model: str, in_degree: int) -> float:
        return call_dollars(
            self.spec(model), self.avg_in + in_degree * self.avg_out, self.avg_out
        )

    def graph_cost(self, graph: Graph) -> float:
        """Normalised planned FLOPs of a graph (vote nodes are free)."""
        return sum(self.node_cost(n.model, len(n.inputs)) for n in graph.llm_nodes if n.model)

    def graph_dollars(self, graph: Graph) -> float:
        return sum(self.node_dollars(n.model, len(n.inputs)) for n in graph.llm_nodes if n.model)

    def copies_allowed(self, model: str) -> int:
        if self.max_copies is None:
            return self.max_nodes
        if isinstance(self.max_copies, int):
            return self.max_copies
        return self.max_copies.get(model, self.max_nodes)

    def _over_copied(self, graph: Graph) -> set[str]:
        counts: dict[str, int] = {}
        for n in graph.llm_nodes:
            counts[n.model or ""] = counts.get(n.model or "", 0) + 1
        return {m for m, c in counts.items() if c > self.copies_allowed(m)}

    def fits(self, graph: Graph) -> bool:
        if len(graph.llm_nodes) > self.max_nodes:
            return False
        if self.max_copies is not None and self._over_copied(graph):
            return False
        if self.budget is not None and self.graph_cost(graph) > self.budget + 1e-9:
            return False
        if self.budget_dollars is not None and self.graph_dollars(graph) > self.budget_dollars + 1e-12:
            return False
        return True

    def mix_fits(self, counts: Sequence[int]) -> bool:
        """Feasibility of a mix under the cheapest-wiring planning assumption."""
        if sum(counts) > self.max_nodes:
            return False
        names = self.model_names
        if self.max_copies is not None and any(
            c > self.copies_allowed(names[i]) for i, c in enumerate(counts)
        ):
            return False
        if self.budget is not None:
            cost = sum(c * self.node_cost(names[i], 0) for i, c in enumerate(counts))
            if cost > self.budget + 1e-9:
                return False
        if self.budget_dollars is not None:
            d = sum(c * self.node_dollars(names[i], 0) for i, c in enumerate(counts))
            if d > self.budget_dollars + 1e-12:
                return False
        return True

    # --- mixes ---------------------------------------------------------------
    def iter_mixes(self, maximal: bool = True, limit: int = 200_000) -> Iterator[tuple[int, ...]]:
        """Budget-feasible count vectors (one count per model, total >= 1).

        ``maximal``: only mixes to which no model can be added without breaking
        the budget or the node cap ("use the budget as fully as possible").
        """
        k = len(self.models)
        counts = [0] * k
        produced = 0

        def rec(i: int) -> Iterator[tuple[int, ...]]:
            nonlocal produced
            if i == k:
                if sum(counts) == 0:
                    return
                if maximal:
                    for j in range(k):
                        counts[j] += 1
                        ok = self.mix_fits(counts)
                        counts[j] -= 1
                        if ok:
                            return
                produced += 1
                if produced > limit:
                    raise SearchSpaceError(
                        f"more than {limit} model mixes; lower --max-nodes or use fewer models"
                    )
                yield tuple(counts)
                return
            c = 0
            while True:
                counts[i] = c
                if not self.mix_fits(counts):
                    break
                yield from rec(i + 1)
                c += 1
            counts[i] = 0

        yield from rec(0)

    def feasible_mixes(self, maximal: bool = True) -> list[tuple[int, ...]]:
        return list(self.iter_mixes(maximal=maximal))

    def mix_cost(self, counts: Sequence[int]) -> float:
        names = self.model_names
        return sum(c * self.node_cost(names[i], 0) for i, c in enumerate(counts))

    def describe_mix(self, counts: Sequence[int]) -> str:
        parts = [f"{c}x {self.model_names[i]}" for i, c in enumerate(counts) if c]
        return " + ".join(parts) or "(empty)"

    def mix_of(self, graph: Graph) -> tuple[int, ...]:
        names = self.model_names
        counts = [0] * len(names)
        for n in graph.llm_nodes:
            if n.model in names:
                counts[names.index(n.model)] += 1
        return tuple(counts)

    # --- graphs --------------------------------------------------------------
    def flat_graph(self, counts: Sequence[int], name: str = "") -> Graph:
        """First-layer assistants (one per copy) feeding the sink."""
        nodes: list[Node] = []
        for i, c in enumerate(counts):
            for _ in range(c):
                nodes.append(Node(id=f"n{len(nodes)}", role=Role.ASSISTANT, model=self.model_names[i]))
        return finalize_graph(nodes, sink_inputs=[n.id for n in nodes], name=name, sink_mode=self.sink_mode)

    def trim(self, graph: Graph) -> Graph:
        """Drop the cheapest nodes until the graph fits the budget and node cap.

        Dropping a node removes its edges; the role rules are re-applied and
        every node left without a consumer feeds the sink, so the result is
        always a valid graph. At least one LLM node is kept (the space
        guarantees one cheapest node fits).
        """
        g = graph
        while not self.fits(g) and len(g.llm_nodes) > 1:
            over = self._over_copied(g) if self.max_copies is not None else set()
            pool_ = [n for n in g.llm_nodes if n.model in over] or g.llm_nodes
            victim = min(
                pool_,
                key=lambda n: (self.node_cost(n.model or "", len(n.inputs)), -_slot(n.id)),
            )
            nodes = [n.model_copy(deep=True) for n in g.nodes if n.id != victim.id and n.id != g.sink]
            for n in nodes:
                n.inputs = [i for i in n.inputs if i != victim.id]
            sink_inputs = [i for i in g.node(g.sink).inputs if i != victim.id]
            g = finalize_graph(nodes, sink_inputs, name=g.name, sink_mode=_sink_mode(g), meta=g.meta)
        if not self.fits(g):
            # The one node left is too dear: swap in the cheapest model.
            cheapest = min(self.model_names, key=lambda m: self.node_cost(m, 0))
            n = g.llm_nodes[0].model_copy(update={"model": cheapest, "inputs": [], "role": Role.ASSISTANT})
            g = finalize_graph([n], [n.id], name=g.name, sink_mode=_sink_mode(g), meta=g.meta)
        return g

    def config(self) -> dict[str, Any]:
        """JSON description (stored with a study)."""
        return {
            "models": self.model_names,
            "avg_in": self.avg_in,
            "avg_out": self.avg_out,
            "budget": self.budget,
            "budget_dollars": self.budget_dollars,
            "max_nodes": self.max_nodes,
            "roles": [r.value for r in self.roles],
            "flat": self.flat,
            "sink_mode": self.sink_mode,
            "max_copies": self.max_copies,
        }


def _slot(node_id: str) -> int:
    try:
        return int(node_id.lstrip("n"))
    except ValueError:
        return 0


def _sink_mode(g: Graph) -> SinkMode:
    return "select" if g.meta.get("sink_mode") == "select" else "vote"


def finalize_graph(
    nodes: list[Node],
    sink_inputs: Sequence[str],
    *,
    name: str = "",
    sink_mode: SinkMode = "vote",
    meta: dict[str, Any] | None = None,
) -> Graph:
    """Apply the role rules in topological order and attach the vote sink.

    Rules: a fuser needs at least one assistant input (else it becomes an
    assistant); a node fed by a fuser is an assistant; every node without a
    consumer feeds the sink, so every node reaches it.
    """
    by_id = {n.id: n for n in nodes}
    order = [n.id for n in nodes]
    # inputs must precede (slot order is topological for sampled graphs)
    g_tmp = Graph(nodes=list(nodes) + [Node(id=SINK_ID, role=Role.VOTE)], sink=SINK_ID)
    try:
        order = [i for i in g_tmp.topological_order() if i != SINK_ID]
    except Exception as e:  # networkx cycle
        raise ValueError(f"graph {name!r} has a cycle; edges must go from earlier to later nodes") from e
    for nid in order:
        n = by_id[nid]
        n.inputs = [i for i in dict.fromkeys(n.inputs) if i in by_id and i != nid]
        in_roles = [by_id[i].role for i in n.inputs]
        if Role.FUSER in in_roles or (n.role == Role.FUSER and Role.ASSISTANT not in in_roles):
            n.role = Role.ASSISTANT
    consumed = {i for n in nodes for i in n.inputs}
    sinks = [i for i in dict.fromkeys(sink_inputs) if i in by_id]
    for nid in order:
        if nid not in consumed and nid not in sinks:
            sinks.append(nid)
    sinks.sort(key=order.index)
    m = dict(meta or {})
    if sink_mode == "select":
        m["sink_mode"] = "select"
    else:
        m.pop("sink_mode", None)
    ordered = [by_id[i] for i in order]
    return Graph(
        name=name,
        nodes=ordered + [Node(id=SINK_ID, role=Role.VOTE, inputs=sinks)],
        sink=SINK_ID,
        meta=m,
    )


def graph_key(graph: Graph) -> str:
    """Canonical text of a graph's structure (ids, roles, models, edges), for dedup and caching."""
    parts = []
    for n in sorted(graph.nodes, key=lambda n: n.id):
        parts.append(f"{n.id}:{n.role.value}:{n.model}:{','.join(sorted(n.inputs))}")
    return "|".join(parts) + f"|{graph.meta.get('sink_mode', 'vote')}"


def graph_text(graph: Graph) -> str:
    """Compact, human- and LLM-readable form of a graph."""
    lines = []
    for n in graph.nodes:
        if n.id == graph.sink:
            lines.append(f"{n.id}: {graph.meta.get('sink_mode', 'vote')} <- {', '.join(n.inputs)}")
        else:
            src = ", ".join(n.inputs) if n.inputs else "query"
            lines.append(f"{n.id}: {n.role.value} {n.model} <- {src}")
    return "\n".join(lines)
