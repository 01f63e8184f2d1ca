"""Collaboration graphs: a DAG of LLM nodes with one sink.

Edges are written as each node's ``inputs`` (its parents): that reads top to
bottom in YAML and makes "in-degree", which drives a node's prompt length and
so its FLOPs, obvious.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

import networkx as nx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Role(str, Enum):
    ASSISTANT = "assistant"  # answers; with inputs, refines them ("synthesise these responses")
    FUSER = "fuser"  # fusion agent: synthesises its (assistant) inputs
    AGGREGATOR = "aggregator"  # MoA-style final synthesis
    VOTE = "vote"  # no LLM: majority over extracted answers

    @property
    def uses_llm(self) -> bool:
        return self is not Role.VOTE


class GraphError(ValueError):
    """A graph breaks a rule; the message names the node and the rule."""


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    role: Role = Role.ASSISTANT
    model: str | None = Field(None, description="Pool model name; none for a vote node.")
    inputs: list[str] = Field(default_factory=list, description="Ids of the nodes feeding this one.")
    temperature: float | None = None
    max_tokens: int | None = None
    sample_index: int | None = Field(
        None, description="Which sample of this model to draw (replay); default: by node order."
    )


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
        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.id, role=n.role.value, model=n.model)
        for n in self.nodes:
            for src in n.inputs:
                g.add_edge(src, n.id)
        return g

    def topological_order(self) -> list[str]:
        return list(nx.topological_sort(self.to_networkx()))

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
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>") -> Graph:
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            parts = [f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
            raise GraphError(f"invalid graph {source}: " + "; ".join(parts)) from None

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        p = Path(path)
        if not p.exists():
            raise GraphError(f"graph file {p} does not exist")
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))  # YAML is a superset of JSON
        if not isinstance(raw, dict):
            raise GraphError(f"graph file {p} must hold a mapping with `nodes:` and `sink:`")
        return cls.from_dict(raw, str(p))
