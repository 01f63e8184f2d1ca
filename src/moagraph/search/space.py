"""What may be searched: the pool's models, the roles, the budget, the node cap.

Cost of a node follows the closed-form FLOPs model (``models.cost.node_flops``)
with the node's in-degree, normalised so one call of the smallest *searched*
model with no inputs costs 1 (the normalisation unit). The cost of a graph is
the sum over its LLM nodes.

Sinks (``sink_mode``):

* ``"llm"`` (paper-faithful): the graph ends in a *charged LLM output node*,
  as in the official Agent-REINFORCE code (FairyFali/AgentRE,
  ``swarm/environment/operations/final_decision.py``: a ``FinalDecision``
  node run by ``llama3.2-3b`` that refines the answers it is given, with the
  ``get_select_best`` = "refine last answers" prompt). Here it is an
  ``assistant`` node with inputs (the "synthesise these responses" prompt)
  running ``output_model``; its cost (in-degree = number of answers it reads)
  counts against the budget. It is not a searched slot: ``max_nodes`` and
  model mixes count the worker nodes only.
* ``"vote"``: a free majority vote over extracted answers (no LLM, 0 FLOPs).
* ``"select"``: oracle best-of-n from recorded judge scores (upper bound).

Paper budgets (:func:`paper_budget_rule`): the official code
(``swarm/graph/composite_graph.py``, ``full_cal`` + ``flops_cost``) allows a
graph as much compute as a *complete DAG of b 1B-model nodes plus a 3B output
node* (node i reads the answers of all i earlier nodes; the output node reads
all b), with the task's pilot lengths (A, B); b = 4/8/12 gives the paper's
budgets 18/42/80 on MATH. :meth:`SearchSpace.paper_budget` applies the same
rule with the space's smallest model in the 1B role and ``output_model`` in
the 3B role, in this space's normalised units.

Planning assumption for model mixes: a mix (how many copies of each model) is
priced with the *cheapest wiring*, every node at in-degree 0 feeding the sink
(an LLM sink then reads all of them). Wiring only adds cost, so a mix that is
infeasible under this assumption is infeasible under any wiring; a sampled
graph is always re-checked and trimmed (:meth:`SearchSpace.trim`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from moagraph.errors import ConfigError
from moagraph.graph.spec import Condition, Graph, Node, Role
from moagraph.models.cost import call_dollars, node_flops, unit_flops
from moagraph.models.pool import ModelSpec, Pool

SinkMode = Literal["vote", "select", "llm"]
SINK_ID = "sink"

# --- the official budget rule (FairyFali/AgentRE) -----------------------------
PAPER_BUDGET_B = {18: 4, 42: 8, 80: 12}
"""The paper's budget names (MATH) -> b, the size of the complete 1B DAG."""

PAPER_TASK_LENGTHS = {"math": (202, 275), "mmlu": (213, 215), "humaneval": (180, 115)}
"""Pilot task lengths (A, B) hard-coded in ``swarm/graph/composite_graph.py`` ``flops_cost``."""

PAPER_BASE_FLOPS = {"math": 9.710e11, "mmlu": 8.680e11, "humaneval": 5.957e11}
"""``base_flop`` of ``flops_cost``: the official normalisation constant, one
no-input call of Llama-3.2-1B (M=1e9, L=16, D=2048) with the task's (A, B),
rounded (MATH: computed 9.689e11). Budgets there are compared in absolute
FLOPs, so the constant only changes how a budget is *printed*."""

PAPER_MODELS = {
    # model_cfg of flops_cost in swarm/graph/composite_graph.py (architecture only: never called)
    "llama3.2-1b": ModelSpec.model_construct(
        name="llama3.2-1b", backend="replay", params_b=1.0, layers=16, hidden_size=2048
    ),
    "llama3.2-3b": ModelSpec.model_construct(
        name="llama3.2-3b", backend="replay", params_b=3.0, layers=28, hidden_size=3072
    ),
}


def complete_dag_flops(
    b: int, worker: ModelSpec, output: ModelSpec, avg_in: float, avg_out: float
) -> float:
    """Absolute FLOPs of the official budget graph: ``b`` ``worker`` nodes, node i
    fed by all i earlier ones, plus an ``output`` node fed by all b
    (``full_cal`` in FairyFali/AgentRE ``swarm/graph/composite_graph.py``)."""
    if b < 1:
        raise SearchSpaceError(f"paper budget b={b}: use b >= 1 (the paper uses 4, 8, 12)")
    return sum(node_flops(worker, i, avg_in, avg_out) for i in range(b)) + node_flops(
        output, b, avg_in, avg_out
    )


def paper_budget_rule(task: str, b: int, *, official_unit: bool = False) -> float:
    """The paper's budget for ``task`` (math, mmlu, humaneval) with the official
    models and lengths, in units of one no-input Llama-3.2-1B call (computed
    with ``node_flops``), or of the official rounded ``base_flop`` constant."""
    a, out = PAPER_TASK_LENGTHS[task]
    small, big = PAPER_MODELS["llama3.2-1b"], PAPER_MODELS["llama3.2-3b"]
    total = complete_dag_flops(b, small, big, a, out)
    unit = PAPER_BASE_FLOPS[task] if official_unit else node_flops(small, 0, a, out)
    return total / unit


def parse_budget(text: str | float | int) -> tuple[float | None, int | None]:
    """``"42"`` -> (42.0, None); ``"paper:8"`` / ``"paper:42"`` -> (None, 8)."""
    if isinstance(text, (int, float)):
        return float(text), None
    t = str(text).strip().lower()
    if not t.startswith("paper:"):
        try:
            return float(t), None
        except ValueError:
            raise SearchSpaceError(
                f"--budget {text!r}: give normalised FLOPs (e.g. 42) or paper:b (b = 4, 8, 12, or paper:18/42/80)"
            ) from None
    rest = t.split(":", 1)[1]
    try:
        v = int(rest)
    except ValueError:
        raise SearchSpaceError(
            f"--budget {text!r}: paper:<int>, e.g. paper:8 or paper:42"
        ) from None
    b = PAPER_BUDGET_B.get(v, v)
    if b < 1 or b > 64:
        raise SearchSpaceError(
            f"--budget {text!r}: b must be 1..64 (the paper uses 4, 8, 12 = paper:18/42/80)"
        )
    return None, b


def default_output_model(models: Sequence[ModelSpec]) -> str:
    """The official output node runs Llama-3.2-3B, 3x the parameters of its 1B
    unit model; here: the model closest (log scale) to 3x the smallest one."""
    import math

    smallest = min(m.n_params for m in models)
    return min(models, key=lambda m: (abs(math.log(m.n_params / (3 * smallest))), m.n_params)).name


class SearchSpaceError(ConfigError):
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
    output_model: str | None = None  # sink_mode="llm": the charged output node's model
    output_spec: ModelSpec | None = None  # when the output model is not a searched model
    stages: int = 1  # > 1: conditional graphs (a cascade of stages; see cascade_nodes)
    # a stage escalates when the earlier answers agree less than t (1.0: any disagreement)
    thresholds: tuple[float, ...] = (1.0, 0.5)
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
            raise SearchSpaceError(
                f"budget_dollars={self.budget_dollars}: use --budget-dollars >= 0"
            )
        if self.stages < 1:
            raise SearchSpaceError(f"stages={self.stages}: use --stages >= 1 (1: no conditions)")
        if not self.thresholds or any(not 0 < t <= 1 for t in self.thresholds):
            raise SearchSpaceError(
                f"thresholds={self.thresholds}: give escalation thresholds in (0, 1] "
                "(1.0 = escalate on any disagreement)"
            )
        bad = [r for r in self.roles if r not in (Role.ASSISTANT, Role.FUSER)]
        if bad or Role.ASSISTANT not in self.roles:
            raise SearchSpaceError(
                f"roles={[r.value for r in self.roles]}: searchable roles are 'assistant' "
                "(required) and 'fuser'"
            )
        if self.sink_mode == "llm":
            if self.output_model is None:
                self.output_model = default_output_model(self.models)
            if self.output_model not in self.model_names and (
                self.output_spec is None or self.output_spec.name != self.output_model
            ):
                raise SearchSpaceError(
                    f"output_model={self.output_model!r} is not a model of the space; use --output-model "
                    f"with one of: {', '.join(self.model_names)}"
                )
        elif self.output_model is not None and self.sink_mode != "llm":
            self.output_model = None
        self._unit = unit_flops(self.models, self.avg_in, self.avg_out)
        cheapest = min(self.node_cost(m.name, 0) for m in self.models) + self.sink_cost(1)
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
        output_model: str | None = None,
        stages: int = 1,
        thresholds: Sequence[float] = (1.0, 0.5),
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
            output_model=output_model,
            output_spec=pool[output_model]
            if output_model and output_model not in [m.name for m in specs]
            else None,
            stages=stages,
            thresholds=tuple(float(t) for t in thresholds),
        )

    # --- costs --------------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def spec(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        if self.output_spec is not None and self.output_spec.name == name:
            return self.output_spec
        raise KeyError(f"model {name!r} is not in the search space ({', '.join(self.model_names)})")

    def node_cost(self, model: str, in_degree: int) -> float:
        """Normalised planned FLOPs of one node."""
        key = (model, in_degree)
        c = self._cost_cache.get(key)
        if c is None:
            c = node_flops(self.spec(model), in_degree, self.avg_in, self.avg_out) / self._unit
            self._cost_cache[key] = c
        return c

    @property
    def unit_flops(self) -> float:
        """Absolute FLOPs of one normalised unit (a no-input call of the smallest model)."""
        return self._unit

    def node_dollars(self, model: str, in_degree: int) -> float:
        return call_dollars(self.spec(model), self.avg_in + in_degree * self.avg_out, self.avg_out)

    def sink_cost(self, in_degree: int) -> float:
        """Normalised FLOPs of the sink: the output node's call, or 0 for a vote/select sink."""
        if self.sink_mode != "llm" or not self.output_model:
            return 0.0
        return self.node_cost(self.output_model, in_degree)

    def paper_budget(self, b: int) -> float:
        """The official budget rule in this space's units: a complete DAG of ``b``
        nodes of the smallest searched model (the paper's 1B unit model) plus an
        output node of ``output_model`` (the paper's 3B) reading all b answers.
        With a vote sink the output node is still priced (as the default output model)."""
        small = min(self.models, key=lambda m: m.n_params)
        out = (
            self.spec(self.output_model)
            if self.output_model
            else self.spec(default_output_model(self.models))
        )
        return complete_dag_flops(b, small, out, self.avg_in, self.avg_out) / self._unit

    @staticmethod
    def workers(graph: Graph) -> list[Node]:
        """The searched LLM nodes (every LLM node but an LLM sink)."""
        return [n for n in graph.llm_nodes if n.id != graph.sink]

    def graph_cost(self, graph: Graph) -> float:
        """Normalised planned FLOPs of a graph (an LLM output node is charged; vote nodes are free)."""
        return sum(self.node_cost(n.model, len(n.inputs)) for n in graph.llm_nodes if n.model)

    def graph_dollars(self, graph: Graph) -> float:
        return sum(self.node_dollars(n.model, len(n.inputs)) for n in graph.llm_nodes if n.model)

    @property
    def conditional(self) -> bool:
        """Graphs may escalate: nodes of later stages run only when earlier answers disagree.
        The budget then applies to the *expected* cost (measured by the evaluator); the
        structural check (:meth:`fits`) can only bound the nodes that always run."""
        return self.stages > 1

    def always_cost(self, graph: Graph) -> tuple[float, float]:
        """(normalised FLOPs, dollars) of the nodes that always run (no condition; an LLM
        sink included): a conditional graph's cost on a query where nothing escalates."""
        costs = self.node_costs(graph)
        kept = [costs[n.id] for n in graph.llm_nodes if n.id in costs and n.condition is None]
        return sum(c for c, _ in kept), sum(d for _, d in kept)

    def node_costs(self, graph: Graph) -> dict[str, tuple[float, float]]:
        """Per LLM node: (normalised FLOPs, dollars) when it runs."""
        return {
            n.id: (
                self.node_cost(n.model, len(n.inputs)),
                self.node_dollars(n.model, len(n.inputs)),
            )
            for n in graph.llm_nodes
            if n.model
        }

    def copies_allowed(self, model: str) -> int:
        if self.max_copies is None:
            return self.max_nodes
        if isinstance(self.max_copies, int):
            return self.max_copies
        return self.max_copies.get(model, self.max_nodes)

    def _over_copied(self, graph: Graph) -> set[str]:
        counts: dict[str, int] = {}
        for n in self.workers(graph):
            counts[n.model or ""] = counts.get(n.model or "", 0) + 1
        return {m for m, c in counts.items() if c > self.copies_allowed(m)}

    def fits(self, graph: Graph) -> bool:
        if len(self.workers(graph)) > self.max_nodes:
            return False
        if self.max_copies is not None and self._over_copied(graph):
            return False
        return not self._over_budget(graph)

    def _over_budget(self, graph: Graph) -> bool:
        """Planned cost over a budget: every node's for a plain graph, the always-run nodes'
        for a conditional one (its expected cost is the evaluator's to check)."""
        if graph.conditional:
            flops, dollars = self.always_cost(graph)
        else:
            flops, dollars = self.graph_cost(graph), self.graph_dollars(graph)
        if self.budget is not None and flops > self.budget + 1e-9:
            return True
        return self.budget_dollars is not None and dollars > self.budget_dollars + 1e-12

    def expected_over_budget(self, cost: float, dollars: float) -> str | None:
        """Why a measured expected cost breaks the budget (None: it fits)."""
        if self.budget is not None and cost > self.budget + 1e-9:
            return f"expected cost {cost:.3g} > budget {self.budget:.3g} normalised FLOPs"
        if self.budget_dollars is not None and dollars > self.budget_dollars + 1e-12:
            return f"expected cost ${dollars:.6f} > budget ${self.budget_dollars:.6f}"
        return None

    def mix_fits(self, counts: Sequence[int]) -> bool:
        """Feasibility of a mix under the cheapest-wiring planning assumption."""
        if sum(counts) > self.max_nodes:
            return False
        names = self.model_names
        if self.max_copies is not None and any(
            c > self.copies_allowed(names[i]) for i, c in enumerate(counts)
        ):
            return False
        if self.conditional and any(counts):
            # escalation: only the first stage must fit; at least the mix's cheapest model runs
            i = min(
                (i for i, c in enumerate(counts) if c), key=lambda i: self.node_cost(names[i], 0)
            )
            one = [0] * len(counts)
            one[i] = 1
            counts = one
        if self.budget is not None:
            cost = self.mix_cost(counts)
            if cost > self.budget + 1e-9:
                return False
        if self.budget_dollars is not None:
            d = sum(c * self.node_dollars(names[i], 0) for i, c in enumerate(counts))
            if self.sink_mode == "llm" and self.output_model:
                d += self.node_dollars(self.output_model, sum(counts))
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
        """Cheapest-wiring cost of a mix (an LLM sink reads every node)."""
        names = self.model_names
        return sum(c * self.node_cost(names[i], 0) for i, c in enumerate(counts)) + self.sink_cost(
            sum(counts)
        )

    def describe_mix(self, counts: Sequence[int]) -> str:
        parts = [f"{c}x {self.model_names[i]}" for i, c in enumerate(counts) if c]
        return " + ".join(parts) or "(empty)"

    def mix_of(self, graph: Graph) -> tuple[int, ...]:
        names = self.model_names
        counts = [0] * len(names)
        for n in self.workers(graph):
            if n.model in names:
                counts[names.index(n.model)] += 1
        return tuple(counts)

    # --- graphs --------------------------------------------------------------
    def flat_graph(self, counts: Sequence[int], name: str = "") -> Graph:
        """First-layer assistants (one per copy) feeding the sink."""
        nodes: list[Node] = []
        for i, c in enumerate(counts):
            for _ in range(c):
                nodes.append(
                    Node(id=f"n{len(nodes)}", role=Role.ASSISTANT, model=self.model_names[i])
                )
        return finalize_graph(
            nodes,
            sink_inputs=[n.id for n in nodes],
            name=name,
            sink_mode=self.sink_mode,
            output_model=self.output_model,
        )

    def trim(self, graph: Graph, keep_nodes: bool = False) -> Graph:
        """Drop the cheapest nodes until the graph fits the budget and node cap.

        Among equally cheap nodes the latest slot goes first, so the result does not
        depend on the order nodes are listed in and slot s keeps the s-th copy (what
        a fixed mix and :meth:`AgentReinforce.project` assume). Dropping a node removes its edges; the role rules are re-applied and
        every node left without a consumer feeds the sink, so the result is
        always a valid graph. At least one worker node is kept (the space
        guarantees one cheapest node fits). An LLM sink is never dropped.

        ``keep_nodes=True`` (a fixed model mix): first drop edges between worker
        nodes, dearest input first, and only then nodes.
        """
        g = self._with_sink(graph)
        if keep_nodes:
            while not self.fits(g) and any(n.inputs for n in self.workers(g)):
                n_max = max(
                    self.workers(g),
                    key=lambda n: (len(n.inputs), self.node_cost(n.model or "", len(n.inputs))),
                )
                nodes = [n.model_copy(deep=True) for n in g.nodes if n.id != g.sink]
                for n in nodes:
                    if n.id == n_max.id:
                        n.inputs = n.inputs[:-1]
                g = finalize_graph(
                    nodes,
                    list(g.node(g.sink).inputs),
                    name=g.name,
                    sink_mode=_sink_mode(g),
                    meta=g.meta,
                    output_model=self.output_model,
                )
        while not self.fits(g) and len(self.workers(g)) > 1:
            over = self._over_copied(g) if self.max_copies is not None else set()
            workers = self.workers(g)
            pool_ = [n for n in workers if n.model in over]
            if not pool_ and len(workers) <= self.max_nodes and g.conditional:
                # over budget: only the always-run nodes count against it
                pool_ = [n for n in workers if n.condition is None]
            pool_ = pool_ or workers
            victim = min(
                pool_,
                key=lambda n: (self.node_cost(n.model or "", len(n.inputs)), -_slot(n.id)),
            )
            nodes = [
                n.model_copy(deep=True) for n in g.nodes if n.id != victim.id and n.id != g.sink
            ]
            for n in nodes:
                n.inputs = [i for i in n.inputs if i != victim.id]
            sink_inputs = [i for i in g.node(g.sink).inputs if i != victim.id]
            g = finalize_graph(
                nodes,
                sink_inputs,
                name=g.name,
                sink_mode=_sink_mode(g),
                meta=g.meta,
                output_model=self.output_model,
            )
        if not self.fits(g):
            # The one node left is too dear: swap in the cheapest model.
            cheapest = min(self.model_names, key=lambda m: self.node_cost(m, 0))
            n = self.workers(g)[0].model_copy(
                update={"model": cheapest, "inputs": [], "role": Role.ASSISTANT}
            )
            g = finalize_graph(
                [n],
                [n.id],
                name=g.name,
                sink_mode=_sink_mode(g),
                meta=g.meta,
                output_model=self.output_model,
            )
        return g

    def _with_sink(self, graph: Graph) -> Graph:
        """The graph with this space's sink (a graph built for another sink mode is re-sunk)."""
        if _sink_mode(graph) == self.sink_mode and (
            self.sink_mode != "llm" or graph.node(graph.sink).model == self.output_model
        ):
            return graph
        nodes = [n.model_copy(deep=True) for n in graph.nodes if n.id != graph.sink]
        return finalize_graph(
            nodes,
            list(graph.node(graph.sink).inputs),
            name=graph.name,
            sink_mode=self.sink_mode,
            meta=graph.meta,
            output_model=self.output_model,
        )

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
            "output_model": self.output_model,
            **(
                {"stages": self.stages, "thresholds": list(self.thresholds)}
                if self.conditional
                else {}
            ),
            "unit": f"one no-input call of {min(self.models, key=lambda m: m.n_params).name} "
            f"(A={self.avg_in:g}, B={self.avg_out:g})",
        }


def _slot(node_id: str) -> int:
    try:
        return int(node_id.lstrip("n"))
    except ValueError:
        return 0


def _sink_mode(g: Graph) -> SinkMode:
    m = g.meta.get("sink_mode")
    return m if m in ("select", "llm") else "vote"


def finalize_graph(
    nodes: list[Node],
    sink_inputs: Sequence[str],
    *,
    name: str = "",
    sink_mode: SinkMode = "vote",
    meta: dict[str, Any] | None = None,
    output_model: str | None = None,
) -> Graph:
    """Apply the role rules in topological order and attach the sink (a vote
    node, or with ``sink_mode="llm"`` an ``assistant`` output node running
    ``output_model`` that refines every answer it is given).

    Rules: a fuser needs at least one assistant input (else it becomes an
    assistant); a node fed by a fuser is an assistant; every node without a
    consumer feeds the sink, so every node reaches it.
    """
    by_id = {n.id: n for n in nodes}
    order = [n.id for n in nodes]
    for n in nodes:  # a condition keeps only nodes still in the graph (none left: no condition)
        if n.condition is not None:
            among = [i for i in dict.fromkeys(n.condition.among) if i in by_id and i != n.id]
            n.condition = n.condition.model_copy(update={"among": among}) if among else None
    # inputs must precede (slot order is topological for sampled graphs)
    g_tmp = Graph(nodes=list(nodes) + [Node(id=SINK_ID, role=Role.VOTE)], sink=SINK_ID)
    try:
        order = [i for i in g_tmp.topological_order() if i != SINK_ID]
    except Exception as e:  # networkx cycle
        raise ValueError(
            f"graph {name!r} has a cycle; edges must go from earlier to later nodes"
        ) from e
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
    depth = escalation_depth([by_id[i] for i in order])
    # escalated answers first: a vote tie goes to the latest stage that ran (for a plain
    # graph every depth is 0 and this is the topological order)
    sinks.sort(key=lambda i: (-depth[i], order.index(i)))
    m = dict(meta or {})
    if sink_mode in ("select", "llm"):
        m["sink_mode"] = sink_mode
    else:
        m.pop("sink_mode", None)
    ordered = [by_id[i] for i in order]
    if sink_mode == "llm":
        if not output_model:
            raise ValueError("sink_mode='llm' needs output_model (the charged output node's model)")
        sink = Node(id=SINK_ID, role=Role.ASSISTANT, model=output_model, inputs=sinks)
    else:
        sink = Node(id=SINK_ID, role=Role.VOTE, inputs=sinks)
    return Graph(name=name, nodes=ordered + [sink], sink=SINK_ID, meta=m)


def escalation_depth(nodes: Sequence[Node]) -> dict[str, int]:
    """Per node: 0 without a condition, else 1 + the deepest node its condition names
    (``nodes`` in topological order). A cascade's stage number."""
    depth: dict[str, int] = {}
    for n in nodes:
        among = n.condition.among if n.condition is not None else []
        depth[n.id] = 1 + max((depth.get(i, 0) for i in among), default=0) if among else 0
    return depth


def cascade_nodes(
    nodes: Sequence[Node], stage: dict[str, int], cutoffs: dict[int, float]
) -> list[Node]:
    """Wire a cascade: each node of stage s > 0 runs only when the answers of every node
    of an earlier stage agree less than ``cutoffs[s]`` (1.0: any disagreement). Stages
    that hold no node are closed up, so stage 0 is never empty."""
    used = sorted({stage.get(n.id, 0) for n in nodes})
    rank = {s: i for i, s in enumerate(used)}
    out: list[Node] = []
    for n in nodes:
        raw = stage.get(n.id, 0)
        s = rank[raw]
        cond = None
        if s > 0:
            among = [m.id for m in nodes if rank[stage.get(m.id, 0)] < s]
            t = float(cutoffs.get(raw, 1.0))
            cond = (
                Condition(when="disagree", among=among)
                if t >= 1.0
                else Condition(when="agreement_below", among=among, threshold=t)
            )
        out.append(n.model_copy(update={"condition": cond}))
    return out


def graph_key(graph: Graph) -> str:
    """Canonical text of a graph's structure (ids, roles, models, edges, conditions), for
    dedup and caching."""
    parts = []
    for n in sorted(graph.nodes, key=lambda n: n.id):
        key = f"{n.id}:{n.role.value}:{n.model}:{','.join(sorted(n.inputs))}"
        if n.condition is not None:
            key += f"?{n.condition.cutoff:g}<{','.join(sorted(n.condition.among))}"
        parts.append(key)
    return "|".join(parts) + f"|{graph.meta.get('sink_mode', 'vote')}"


def graph_text(graph: Graph) -> str:
    """Compact, human- and LLM-readable form of a graph."""
    lines = []
    for n in graph.nodes:
        if n.id == graph.sink and n.model:
            lines.append(f"{n.id}: output {n.model} <- {', '.join(n.inputs)}")
        elif n.id == graph.sink:
            lines.append(f"{n.id}: {graph.meta.get('sink_mode', 'vote')} <- {', '.join(n.inputs)}")
        else:
            src = ", ".join(n.inputs) if n.inputs else "query"
            cond = f" ({n.condition.text()})" if n.condition is not None else ""
            lines.append(f"{n.id}: {n.role.value} {n.model} <- {src}{cond}")
    return "\n".join(lines)
