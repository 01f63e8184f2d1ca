"""Collaboration graphs: a DAG of LLM nodes with one sink.

Edges are written as each node's ``inputs`` (its parents): that reads top to
bottom in YAML and makes "in-degree", which drives a node's prompt length and
so its FLOPs, obvious.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import networkx as nx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moagraph.errors import ConfigError

if TYPE_CHECKING:
    from moagraph.models.pool import Pool


class Role(str, Enum):
    ASSISTANT = "assistant"  # answers; with inputs, refines them ("synthesise these responses")
    FUSER = "fuser"  # fusion agent: synthesises its (assistant) inputs
    AGGREGATOR = "aggregator"  # MoA-style final synthesis
    VOTE = "vote"  # no LLM: majority over extracted answers
    JUDGE = "judge"  # picks the best of its inputs; passes that input on unchanged

    @property
    def uses_llm(self) -> bool:
        return self is not Role.VOTE


class GraphError(ConfigError):
    """A graph breaks a rule; the message names the node and the rule."""


class Condition(BaseModel):
    """Run a node only when the answers of earlier nodes disagree.

    ``among`` names nodes that run before this one (a condition edge makes each an
    ancestor, as an input does, but passes no text). *Agreement* is the size of the
    largest cluster of equivalent answers (the task's answer equivalence, the one the
    vote uses) over the number of ``among`` nodes that ran; an answer that cannot be
    extracted agrees with nothing. ``disagree`` holds when agreement < 1;
    ``agreement_below`` when agreement < ``threshold``. With none of ``among`` run
    there is nothing to escalate from, and the condition is false.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    when: Literal["disagree", "agreement_below"] = "disagree"
    among: list[str] = Field(
        min_length=1, description="Ids of earlier nodes whose answers are compared."
    )
    threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="agreement_below: run when agreement < threshold (0 < t <= 1).",
    )

    @model_validator(mode="after")
    def _threshold_rule(self) -> Condition:
        if self.when == "agreement_below" and self.threshold is None:
            raise ValueError("`when: agreement_below` needs `threshold` (0 < t <= 1)")
        if self.when == "disagree" and self.threshold is not None:
            raise ValueError(
                "`when: disagree` takes no `threshold`; use `when: agreement_below` for one"
            )
        return self

    @property
    def cutoff(self) -> float:
        """Run when agreement is below this (``disagree`` = 1.0)."""
        return 1.0 if self.when == "disagree" else float(self.threshold or 1.0)

    def text(self) -> str:
        who = ", ".join(self.among)
        if self.when == "disagree":
            return f"if {who} disagree"
        return f"if agreement of {who} < {self.threshold:g}"


class Node(BaseModel):
    # allow_inf_nan=False: a .inf/.nan temperature would reach the backend (and the
    # call cache key) as a non-number; bounds below reject negative counts.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str
    role: Role = Role.ASSISTANT
    model: str | None = Field(None, description="Pool model name; none for a vote node.")
    inputs: list[str] = Field(
        default_factory=list, description="Ids of the nodes feeding this one."
    )
    temperature: float | None = Field(
        None, ge=0, description="Sampling temperature (finite, >= 0); default: the run's."
    )
    max_tokens: int | None = Field(
        None, ge=1, description="Max new tokens of this node's call (>= 1); default: the run's."
    )
    sample_index: int | None = Field(
        None,
        ge=0,
        description="Which sample of this model to draw (replay, >= 0); default: by node order.",
    )
    condition: Condition | None = Field(
        None,
        description="Run only when earlier answers disagree (see Condition); default: always.",
    )

    @property
    def depends_on(self) -> list[str]:
        """Inputs, then the condition's nodes: everything that must finish before this node."""
        if self.condition is None:
            return self.inputs
        return [*self.inputs, *(i for i in self.condition.among if i not in self.inputs)]


class Graph(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    nodes: list[Node]
    sink: str
    meta: dict[str, Any] = Field(default_factory=dict)

    # --- structure -------------------------------------------------------
    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"graph {self.name!r} has no node {node_id!r}")

    def to_networkx(self) -> nx.DiGraph:
        """Nodes and edges; an edge's ``kind`` is ``input`` (carries text) or ``condition``
        (orders only: the target runs after the source and may be skipped by its answer)."""
        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.id, role=n.role.value, model=n.model)
        for n in self.nodes:
            for src in n.inputs:
                g.add_edge(src, n.id, kind="input")
            for src in n.condition.among if n.condition else ():
                if src not in n.inputs:
                    g.add_edge(src, n.id, kind="condition")
        return g

    @property
    def conditional(self) -> bool:
        """True when some node runs only on a condition (its cost varies per query)."""
        return any(n.condition is not None for n in self.nodes)

    def topological_order(self) -> list[str]:
        """Deterministic topological order: ties broken by the order nodes are listed."""
        pos = {n.id: i for i, n in enumerate(self.nodes)}
        return list(nx.lexicographical_topological_sort(self.to_networkx(), key=pos.__getitem__))

    def successors(self, node_id: str) -> list[str]:
        return [n.id for n in self.nodes if node_id in n.inputs]

    @property
    def width(self) -> int:
        """Largest topological generation: nodes whose longest path from a source has
        the same length (vote nodes included). For layered graphs (MoA, parallel
        votes) that is the widest layer; it is a lower bound of the largest antichain."""
        return max((len(g) for g in nx.topological_generations(self.to_networkx())), default=0)

    @property
    def depth(self) -> int:
        """Number of LLM nodes on the longest path (vote nodes count 0), i.e. how many
        model calls a query waits for one after the other."""
        best: dict[str, int] = {}
        by_id = {n.id: n for n in self.nodes}
        for nid in self.topological_order():
            node = by_id[nid]
            here = 1 if node.role.uses_llm else 0
            best[nid] = here + max((best[i] for i in node.depends_on), default=0)
        return max(best.values(), default=0)

    @property
    def models_used(self) -> list[str]:
        """Distinct pool models, in node order."""
        return list(dict.fromkeys(n.model for n in self.nodes if n.model))

    # --- validation ---------------------------------------------------------
    def validate_structure(self) -> Graph:
        """Check every rule that needs no pool; raise :class:`GraphError` naming the node
        and the rule. Returns ``self`` so builders can chain it."""
        return self.validate_against(None)

    def validate_against(self, pool: Pool | None = None) -> Graph:
        """Check the graph's rules (and, given a pool, that every model exists in it).

        Not a pydantic validator on purpose: search code builds and trims graphs
        step by step, and only the finished graph has to be valid.
        """
        where = f"graph {self.name!r}" if self.name else "graph"
        if not self.nodes:
            raise GraphError(f"{where}: `nodes` is empty; add at least one node")
        ids: dict[str, Node] = {}
        for n in self.nodes:
            if not n.id:
                raise GraphError(f"{where}: a node has an empty `id`; give every node a name")
            if n.id in ids:
                raise GraphError(
                    f"{where}: node {n.id!r} appears twice (rule: unique ids); rename one"
                )
            ids[n.id] = n
        for n in self.nodes:
            for src in n.inputs:
                if src not in ids:
                    raise GraphError(
                        f"{where}: node {n.id!r} has input {src!r}, which is not a node "
                        f"(rule: inputs refer to existing nodes); known: {', '.join(ids)}"
                    )
            if len(set(n.inputs)) != len(n.inputs):
                raise GraphError(f"{where}: node {n.id!r} lists the same input twice; list it once")
            if n.id in n.inputs:
                raise GraphError(f"{where}: node {n.id!r} feeds itself (rule: acyclic)")
            if n.condition is not None:
                _check_condition(n, ids, where, self.sink)
        if self.sink not in ids:
            raise GraphError(
                f"{where}: sink {self.sink!r} is not a node (rule: the sink must exist); "
                f"set `sink:` to one of: {', '.join(ids)}"
            )
        cycle = _find_cycle(self.nodes)
        if cycle:
            path = " -> ".join([*cycle, cycle[0]])
            raise GraphError(
                f"{where}: nodes form a cycle {path} (rule: acyclic); remove one input or "
                "condition (a condition orders its node after the nodes it names)"
            )
        # Nodes that reach the sink = the sink's ancestors: one walk up the inputs
        # (linear in nodes + edges; a has_path per node was quadratic on long chains).
        reaches = {self.sink}
        stack = [self.sink]
        while stack:
            for src in ids[stack.pop()].inputs:
                if src not in reaches:
                    reaches.add(src)
                    stack.append(src)
        sinkless = [n for n in ids if n not in reaches]
        if sinkless:
            raise GraphError(
                f"{where}: node(s) {', '.join(map(repr, sinkless))} never reach the sink {self.sink!r} "
                "(rule: one sink, every node feeds it); connect them or remove them"
            )
        for n in self.nodes:
            self._check_role(n, ids, where)
        if pool is not None:
            for n in self.nodes:
                if n.model is not None and n.model not in pool:
                    raise GraphError(
                        f"{where}: node {n.id!r} uses model {n.model!r}, which is not in pool "
                        f"{pool.name!r} (rule: models come from the pool); known: {', '.join(pool.names)}"
                    )
        return self

    @staticmethod
    def _check_role(n: Node, ids: dict[str, Node], where: str) -> None:
        role = n.role
        if role.uses_llm and not n.model:
            raise GraphError(
                f"{where}: node {n.id!r} has role {role.value} but no `model` (rule: LLM roles need a model)"
            )
        if role is Role.VOTE:
            if n.model:
                raise GraphError(
                    f"{where}: node {n.id!r} is a vote node with model {n.model!r} (rule: vote uses no model); remove `model`"
                )
            if not n.inputs:
                raise GraphError(
                    f"{where}: vote node {n.id!r} has no inputs (rule: vote needs >= 1 input)"
                )
        if role is Role.FUSER and not any(ids[i].role is Role.ASSISTANT for i in n.inputs):
            raise GraphError(
                f"{where}: fuser node {n.id!r} has no assistant input (rule: a fuser needs >= 1 assistant input)"
            )
        if role in (Role.AGGREGATOR, Role.JUDGE) and not n.inputs:
            raise GraphError(
                f"{where}: {role.value} node {n.id!r} has no inputs (rule: {role.value} needs >= 1 input)"
            )
        if role not in (Role.ASSISTANT, Role.VOTE):
            fusers = [i for i in n.inputs if ids[i].role is Role.FUSER]
            if fusers:
                raise GraphError(
                    f"{where}: node {n.id!r} ({role.value}) is fed by fuser {fusers[0]!r} "
                    "(rule: a node fed by a fuser must be an assistant)"
                )

    def in_degree(self, node_id: str) -> int:
        return len(self.node(node_id).inputs)

    @property
    def llm_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.role.uses_llm]

    # --- (de)serialisation ------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        text = json.dumps(self.to_dict(), indent=2) if p.suffix == ".json" else self.to_yaml()
        p.write_text(text, encoding="utf-8")
        return p

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], source: str = "<dict>", *, validate: bool = True
    ) -> Graph:
        try:
            graph = cls.model_validate(raw)
        except ValidationError as e:
            parts = [_format_error(err, raw) for err in e.errors()]
            raise GraphError(f"invalid graph {source}: " + "; ".join(parts)) from None
        return graph.validate_structure() if validate else graph

    @classmethod
    def from_yaml(cls, text: str, source: str = "<yaml>") -> Graph:
        raw = yaml.safe_load(text)
        if not isinstance(raw, dict):
            raise GraphError(f"graph {source} must hold a mapping with `nodes:` and `sink:`")
        return cls.from_dict(raw, source)

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        p = Path(path)
        if not p.exists():
            raise GraphError(f"graph file {p} does not exist")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))  # YAML is a superset of JSON
        except yaml.YAMLError as e:
            raise GraphError(f"graph file {p} is not valid YAML/JSON: {e}") from None
        if not isinstance(raw, dict):
            raise GraphError(f"graph file {p} must hold a mapping with `nodes:` and `sink:`")
        return cls.from_dict(raw, str(p))


def _check_condition(n: Node, ids: dict[str, Node], where: str, sink: str) -> None:
    """A condition names existing, distinct, earlier nodes (cycles are caught with the inputs)."""
    cond = n.condition
    assert cond is not None
    field = f"node {n.id!r} `condition.among`"
    if n.id == sink:
        raise GraphError(
            f"{where}: the sink {n.id!r} has a condition (rule: the sink always runs); "
            "remove `condition` from the sink, or condition the nodes that feed it"
        )
    for src in cond.among:
        if src not in ids:
            raise GraphError(
                f"{where}: {field} names {src!r}, which is not a node (rule: a condition "
                f"names earlier nodes); known: {', '.join(ids)}"
            )
        if src == n.id:
            raise GraphError(
                f"{where}: {field} names the node itself (rule: a condition names earlier "
                "nodes); remove it"
            )
    if len(set(cond.among)) != len(cond.among):
        raise GraphError(f"{where}: {field} lists a node twice; list it once")


def _format_error(err: Any, raw: Any) -> str:
    """``nodes.3.temperature: <msg>`` plus the node's id and the fix, when it is a node field."""
    loc = err["loc"]
    text = f"{'.'.join(str(x) for x in loc)}: {err['msg']}"
    if len(loc) >= 3 and loc[0] == "nodes" and isinstance(loc[1], int):
        nodes = raw.get("nodes") if isinstance(raw, dict) else None
        node = nodes[loc[1]] if isinstance(nodes, list) and loc[1] < len(nodes) else None
        if isinstance(node, dict) and isinstance(node.get("id"), str):
            text = f"node {node['id']!r} ({text})"
        if err["type"] in ("finite_number", "greater_than_equal", "greater_than"):
            text += f"; set `{loc[2]}` to a finite value in range, or remove it to use the default"
    return text


def _find_cycle(nodes: list[Node]) -> list[str] | None:
    """One cycle (node ids in edge direction, input -> consumer) or None.

    Iterative three-colour DFS, linear in nodes + edges (networkx's ``find_cycle``
    re-walks edges and took minutes on a 10k-node layered graph). Assumes unique
    ids and inputs that exist (checked before).
    """
    succ: dict[str, list[str]] = {n.id: [] for n in nodes}
    for n in nodes:
        for src in n.depends_on:
            succ[src].append(n.id)
    state: dict[str, int] = {}  # absent: unseen, 1: on the DFS path, 2: done
    for start in succ:
        if start in state:
            continue
        path = [start]
        its = [iter(succ[start])]
        state[start] = 1
        while its:
            nxt = next(its[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                its.pop()
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                its.append(iter(succ[nxt]))
            elif state[nxt] == 1:
                return path[path.index(nxt) :]
    return None
