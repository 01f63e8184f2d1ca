"""A probabilistic graph over N node slots: what REINFORCE and the agent edit.

Slot ``i`` holds a model (or ``off``) and a role; edges go only from a lower
slot to a higher one (so every sample is a DAG); each active node may also
feed the vote sink directly. In a conditional space (``space.stages > 1``) each
slot also holds a *stage*, and each later stage an escalation threshold: a
node of stage s runs only when the answers of the earlier stages agree less
than the threshold (``space.cascade_nodes``), so which models answer first,
which condition escalates and to whom are probabilities too. Nodes with no
consumer always feed the sink, so
every node reaches it. Probabilities are exposed as plain dicts because that
is what an LLM agent reads and writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from moagraph.graph.spec import Graph, Node, Role
from moagraph.search.space import SearchSpace, cascade_nodes, escalation_depth, finalize_graph

OFF = "off"
P_MIN, P_MAX = 0.01, 0.99


@dataclass
class Choices:
    """The raw decisions behind one graph (model index per slot, K = off)."""

    models: np.ndarray  # (N,) int, K means off
    roles: np.ndarray  # (N,) int index into space.roles
    edges: np.ndarray  # (N, N) bool, upper triangle
    sink: np.ndarray  # (N,) bool
    stages: np.ndarray | None = None  # (N,) int: the slot's stage (conditional spaces)
    thresholds: np.ndarray | None = None  # (S-1,) int: index into space.thresholds per stage > 0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _logit(p: float) -> float:
    p = min(max(p, P_MIN), P_MAX)
    return float(np.log(p / (1 - p)))


class GraphDistribution:
    """Edge, sink, role and model logits over ``n_slots`` node slots."""

    def __init__(self, space: SearchSpace, n_slots: int | None = None) -> None:
        self.space = space
        self.n = n_slots or space.max_nodes
        k = len(space.models)
        self.edge_logits = np.zeros((self.n, self.n))
        self.sink_logits = np.zeros(self.n)
        self.role_logits = np.zeros((self.n, len(space.roles)))
        # Prefer "on" a little so early samples are not mostly empty.
        self.model_logits = np.zeros((self.n, k + 1))
        self.model_logits[:, k] = -1.0
        s = max(space.stages, 1)
        self.stage_logits = np.zeros((self.n, s))
        self.threshold_logits = np.zeros((max(s - 1, 0), len(space.thresholds)))
        # A fixed model mix (Agent-REINFORCE after the pretest): slot s holds the
        # s-th copy of the mix, later slots are off; model logits are then frozen.
        self.fixed_models: np.ndarray | None = None

    def fix_mix(self, counts: tuple[int, ...] | list[int]) -> None:
        """Freeze the model of every slot to ``counts`` (slot s = the s-th copy; the rest off).

        As in the official code (FairyFali/AgentRE ``experiments/evaluator/evaluator.py``
        ``optimize_llm_swarm``: ``model_selection`` is fixed after the pretest and every
        later graph is realised with exactly those models), only edges, sink links and
        roles stay free afterwards; model probabilities from the agent are ignored.
        """
        k = len(self.space.models)
        order = [i for i, c in enumerate(counts) for _ in range(c)]
        if len(order) > self.n:
            raise ValueError(
                f"mix {tuple(counts)} has {len(order)} nodes, more than the {self.n} slots"
            )
        self.fixed_models = np.array([order[s] if s < len(order) else k for s in range(self.n)])
        self.focus_mix(counts, strength=0.999)

    @property
    def fixed_mix(self) -> tuple[int, ...] | None:
        if self.fixed_models is None:
            return None
        k = len(self.space.models)
        return tuple(int((self.fixed_models == i).sum()) for i in range(k))

    # --- parameters as a flat dict of arrays (for Adam) ------------------------
    @property
    def conditional(self) -> bool:
        return self.space.stages > 1

    def params(self) -> dict[str, np.ndarray]:
        out = {
            "edge": self.edge_logits,
            "sink": self.sink_logits,
            "role": self.role_logits,
            "model": self.model_logits,
        }
        if self.conditional:
            out.update(stage=self.stage_logits, threshold=self.threshold_logits)
        return out

    def state_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: v.tolist() for k, v in self.params().items()}
        if self.fixed_models is not None:
            d["fixed_models"] = self.fixed_models.tolist()
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        fm = d.get("fixed_models")
        self.fixed_models = None if fm is None else np.array(fm, dtype=int)
        self.edge_logits = np.array(d["edge"], dtype=float)
        self.sink_logits = np.array(d["sink"], dtype=float)
        self.role_logits = np.array(d["role"], dtype=float)
        self.model_logits = np.array(d["model"], dtype=float)
        if "stage" in d:
            self.stage_logits = np.array(d["stage"], dtype=float)
            self.threshold_logits = np.array(d["threshold"], dtype=float).reshape(
                self.threshold_logits.shape
            )

    # --- sampling -------------------------------------------------------------
    def sample_choices(self, rng: np.random.Generator) -> Choices:
        k = len(self.space.models)
        pm = _softmax(self.model_logits)
        models = np.array([rng.choice(k + 1, p=pm[i]) for i in range(self.n)])
        if (
            self.fixed_models is not None
        ):  # same draws consumed either way (seeded runs stay comparable)
            models = self.fixed_models.copy()
        if (models == k).all():  # at least one node
            i = int(rng.integers(self.n))
            on = pm[i, :k] / pm[i, :k].sum()
            models[i] = rng.choice(k, p=on)
        pr = _softmax(self.role_logits)
        roles = np.array([rng.choice(len(self.space.roles), p=pr[i]) for i in range(self.n)])
        edges = rng.random((self.n, self.n)) < _sigmoid(self.edge_logits)
        edges = np.triu(edges, 1)
        sink = rng.random(self.n) < _sigmoid(self.sink_logits)
        if not self.conditional:
            return Choices(models, roles, edges, sink)
        ps = _softmax(self.stage_logits)
        stages = np.array([rng.choice(ps.shape[1], p=ps[i]) for i in range(self.n)])
        pt = _softmax(self.threshold_logits)
        thresholds = np.array([rng.choice(pt.shape[1], p=pt[j]) for j in range(pt.shape[0])])
        return Choices(models, roles, edges, sink, stages, thresholds)

    def build(self, ch: Choices, name: str = "") -> Graph:
        """Turn choices into a valid graph (role rules + sink), not yet trimmed."""
        k = len(self.space.models)
        names = self.space.model_names
        active = [i for i in range(self.n) if ch.models[i] < k]
        nodes: list[Node] = []
        for j in active:
            role = self.space.roles[int(ch.roles[j])]
            inputs = (
                [] if self.space.flat else [f"n{i}" for i in active if i < j and ch.edges[i, j]]
            )
            if self.space.flat:
                role = Role.ASSISTANT
            nodes.append(Node(id=f"n{j}", role=role, model=names[int(ch.models[j])], inputs=inputs))
        sink_inputs = [f"n{i}" for i in active if ch.sink[i]]
        if self.conditional and ch.stages is not None and ch.thresholds is not None:
            stage = {f"n{j}": int(ch.stages[j]) for j in active}
            cutoffs = {s + 1: self.space.thresholds[int(t)] for s, t in enumerate(ch.thresholds)}
            nodes = cascade_nodes(nodes, stage, cutoffs)
        return finalize_graph(
            nodes,
            sink_inputs,
            name=name,
            sink_mode=self.space.sink_mode,
            output_model=self.space.output_model,
        )

    def sample(self, rng: np.random.Generator, trim: bool = True) -> Graph:
        """A valid DAG satisfying the role rules, trimmed to the budget."""
        g = self.build(self.sample_choices(rng))
        return self.space.trim(g, keep_nodes=self.fixed_models is not None) if trim else g

    def choices_of(self, graph: Graph) -> Choices:
        """The decisions a graph with slot ids ``n<i>`` stands for (missing slots are off)."""
        k = len(self.space.models)
        names = self.space.model_names
        models = np.full(self.n, k)
        roles = np.zeros(self.n, dtype=int)
        edges = np.zeros((self.n, self.n), dtype=bool)
        sink = np.zeros(self.n, dtype=bool)
        for node in graph.llm_nodes:
            i = _slot(node.id)
            if i is None or i >= self.n or node.model not in names:
                continue
            models[i] = names.index(node.model)
            roles[i] = self.space.roles.index(node.role) if node.role in self.space.roles else 0
            for src in node.inputs:
                s = _slot(src)
                if s is not None and s < i:
                    edges[s, i] = True
        for src in graph.node(graph.sink).inputs:
            s = _slot(src)
            if s is not None and s < self.n:
                sink[s] = True
        if not self.conditional:
            return Choices(models, roles, edges, sink)
        return Choices(models, roles, edges, sink, *self._stage_choices(graph))

    def _stage_choices(self, graph: Graph) -> tuple[np.ndarray, np.ndarray]:
        """Stage per slot (a node's escalation depth, capped at the last stage) and, per
        stage > 0, the index of the nearest threshold its nodes use (the argmax where unused)."""
        stages = np.zeros(self.n, dtype=int)
        thresholds = self.threshold_logits.argmax(axis=1).astype(int)
        depth = escalation_depth([graph.node(i) for i in graph.topological_order()])
        top = self.space.stages - 1
        for node in self.space.workers(graph):
            i = _slot(node.id)
            if i is None or i >= self.n:
                continue
            d = min(depth.get(node.id, 0), top)
            stages[i] = d
            if d > 0 and node.condition is not None:
                cut = node.condition.cutoff
                thresholds[d - 1] = int(np.argmin([abs(t - cut) for t in self.space.thresholds]))
        return stages, thresholds

    def _masks(self, ch: Choices) -> tuple[np.ndarray, np.ndarray]:
        """Which edge / sink decisions were actually free for these choices."""
        k = len(self.space.models)
        on = ch.models < k
        edge_mask = np.triu(np.outer(on, on), 1)
        if self.space.flat:
            edge_mask[:] = False
        has_out = (ch.edges & edge_mask).any(axis=1)
        sink_mask = on & has_out  # nodes without consumers feed the sink by rule
        return edge_mask, sink_mask

    def log_prob(self, graph: Graph) -> float:
        ch = self.choices_of(graph)
        return self._log_prob_choices(ch)

    def _log_prob_choices(self, ch: Choices) -> float:
        k = len(self.space.models)
        lp = float(np.log(_softmax(self.model_logits)[np.arange(self.n), ch.models]).sum())
        on = ch.models < k
        if not self.space.flat:
            pr = _softmax(self.role_logits)[np.arange(self.n), ch.roles]
            lp += float(np.log(pr[on]).sum())
        edge_mask, sink_mask = self._masks(ch)
        pe = _sigmoid(self.edge_logits)
        lp += float(np.log(np.where(ch.edges, pe, 1 - pe))[edge_mask].sum())
        ps = _sigmoid(self.sink_logits)
        lp += float(np.log(np.where(ch.sink, ps, 1 - ps))[sink_mask].sum())
        if self.conditional and ch.stages is not None and ch.thresholds is not None:
            pst = _softmax(self.stage_logits)[np.arange(self.n), ch.stages]
            lp += float(np.log(pst[on]).sum())
            used = self._used_thresholds(ch)
            pt = _softmax(self.threshold_logits)[np.arange(len(ch.thresholds)), ch.thresholds]
            lp += float(np.log(pt[used]).sum())
        return lp

    def _used_thresholds(self, ch: Choices) -> np.ndarray:
        """Which stage thresholds mattered: stage s > 0 holds an active node."""
        k = len(self.space.models)
        on = ch.models < k
        n_t = self.threshold_logits.shape[0]
        if ch.stages is None:
            return np.zeros(n_t, dtype=bool)
        return np.array([bool(((ch.stages == s + 1) & on).any()) for s in range(n_t)], dtype=bool)

    def grad_log_prob(self, graph: Graph) -> dict[str, np.ndarray]:
        """d log p(graph) / d logits (score function for REINFORCE)."""
        ch = self.choices_of(graph)
        k = len(self.space.models)
        on = ch.models < k
        g_model = -_softmax(self.model_logits)
        g_model[np.arange(self.n), ch.models] += 1.0
        if self.fixed_models is not None:
            g_model[:] = 0.0  # frozen
        g_role = np.zeros_like(self.role_logits)
        if not self.space.flat:
            g_role = -_softmax(self.role_logits)
            g_role[np.arange(self.n), ch.roles] += 1.0
            g_role[~on] = 0.0
        edge_mask, sink_mask = self._masks(ch)
        g_edge = (ch.edges.astype(float) - _sigmoid(self.edge_logits)) * edge_mask
        g_sink = (ch.sink.astype(float) - _sigmoid(self.sink_logits)) * sink_mask
        out = {"edge": g_edge, "sink": g_sink, "role": g_role, "model": g_model}
        if self.conditional and ch.stages is not None and ch.thresholds is not None:
            g_stage = -_softmax(self.stage_logits)
            g_stage[np.arange(self.n), ch.stages] += 1.0
            g_stage[~on] = 0.0
            g_thr = -_softmax(self.threshold_logits)
            g_thr[np.arange(len(ch.thresholds)), ch.thresholds] += 1.0
            g_thr[~self._used_thresholds(ch)] = 0.0
            out.update(stage=g_stage, threshold=g_thr)
        return out

    # --- the agent's view --------------------------------------------------------
    def probabilities(self) -> dict[str, Any]:
        """Plain dict: models/roles per node, edge and sink probabilities.

        With a fixed mix, ``models`` is left out and only the mix's slots are shown.
        """
        names = self.space.model_names + [OFF]
        pm = _softmax(self.model_logits)
        pr = _softmax(self.role_logits)
        pe = _sigmoid(self.edge_logits)
        ps = _sigmoid(self.sink_logits)
        out: dict[str, Any] = {}
        n_shown = self.n
        if self.fixed_models is None:
            out["models"] = {
                f"n{i}": {names[j]: round(float(pm[i, j]), 3) for j in range(len(names))}
                for i in range(self.n)
            }
        else:
            n_shown = int((self.fixed_models < len(self.space.models)).sum())
        if not self.space.flat:
            out["roles"] = {
                f"n{i}": {
                    r.value: round(float(pr[i, j]), 3) for j, r in enumerate(self.space.roles)
                }
                for i in range(n_shown)
            }
            out["edges"] = {
                f"n{i}->n{j}": round(float(pe[i, j]), 3)
                for i in range(n_shown)
                for j in range(i + 1, n_shown)
            }
            out["sink"] = {f"n{i}": round(float(ps[i]), 3) for i in range(n_shown)}
        if self.conditional:
            pst = _softmax(self.stage_logits)
            out["stages"] = {
                f"n{i}": {
                    lab: round(float(pst[i, j]), 3) for j, lab in enumerate(self.stage_labels)
                }
                for i in range(n_shown)
            }
            pt = _softmax(self.threshold_logits)
            out["escalate_below"] = {
                f"stage{s + 1}": {
                    lab: round(float(pt[s, j]), 3) for j, lab in enumerate(self.threshold_labels)
                }
                for s in range(pt.shape[0])
            }
        return out

    @property
    def stage_labels(self) -> list[str]:
        return [str(i) for i in range(self.stage_logits.shape[1])]

    @property
    def threshold_labels(self) -> list[str]:
        return [f"{t:g}" for t in self.space.thresholds]

    def set_probabilities(self, probs: dict[str, Any]) -> int:
        """Apply a (possibly partial) probability dict; returns how many entries were applied.

        Numbers are clipped to [0.01, 0.99]; unknown nodes, models, roles and
        edges are ignored; a partial categorical keeps the other entries'
        current mass and is renormalised.
        """
        applied = 0
        names = self.space.model_names + [OFF]
        role_names = [r.value for r in self.space.roles]
        sections: list[tuple[str, np.ndarray, list[str], Any]] = [
            ("models", self.model_logits, names, _slot),
            ("roles", self.role_logits, role_names, _slot),
        ]
        if self.conditional:
            sections += [
                ("stages", self.stage_logits, self.stage_labels, _slot),
                ("escalate_below", self.threshold_logits, self.threshold_labels, _stage_row),
            ]
        for key, arr, labels, row_of in sections:
            if key == "models" and self.fixed_models is not None:
                continue  # the mix is fixed: model probabilities are not the agent's to change
            section = probs.get(key)
            if not isinstance(section, dict):
                continue
            for node, dist in section.items():
                i = row_of(str(node))
                if i is None or i >= arr.shape[0] or not isinstance(dist, dict):
                    continue
                p = _softmax(arr[i])
                given: dict[int, float] = {}
                for label, val in dist.items():
                    v = _num(val)
                    if str(label) in labels and v is not None:
                        given[labels.index(str(label))] = min(max(v, P_MIN), P_MAX)
                        applied += 1
                if given:
                    total = sum(given.values())
                    if total > 1.0:  # over-full: scale the stated entries down
                        given = {j: v / total for j, v in given.items()}
                        total = 1.0
                    rest = [j for j in range(len(labels)) if j not in given]
                    left = max(1.0 - total, P_MIN * len(rest))
                    mass = sum(p[j] for j in rest)
                    for j in rest:  # the unstated entries share what is left, in proportion
                        p[j] = left * (p[j] / mass if mass > 0 else 1.0 / len(rest))
                    for j, v in given.items():
                        p[j] = v
                    p = np.maximum(p, 1e-6)
                    arr[i] = np.log(p / p.sum())
        edges = probs.get("edges")
        if isinstance(edges, dict) and not self.space.flat:
            for key, val in edges.items():
                ij = parse_edge(str(key))
                v = _num(val)
                if ij is None or v is None:
                    continue
                i, j = ij
                if 0 <= i < j < self.n:
                    self.edge_logits[i, j] = _logit(v)
                    applied += 1
        sink = probs.get("sink")
        if isinstance(sink, dict) and not self.space.flat:
            for key, val in sink.items():
                i = _slot(str(key))
                v = _num(val)
                if i is not None and i < self.n and v is not None:
                    self.sink_logits[i] = _logit(v)
                    applied += 1
        return applied

    def argmax_graph(self, threshold: float = 0.55) -> Graph:
        """Most likely model and role per slot; edges and sink links where p > threshold."""
        k = len(self.space.models)
        models = (
            self.model_logits.argmax(axis=1)
            if self.fixed_models is None
            else self.fixed_models.copy()
        )
        if (models == k).all():
            i = int(self.model_logits[:, :k].max(axis=1).argmax())
            models[i] = int(self.model_logits[i, :k].argmax())
        ch = Choices(
            models=models,
            roles=self.role_logits.argmax(axis=1),
            edges=np.triu(_sigmoid(self.edge_logits) > threshold, 1),
            sink=_sigmoid(self.sink_logits) > threshold,
            stages=self.stage_logits.argmax(axis=1) if self.conditional else None,
            thresholds=self.threshold_logits.argmax(axis=1) if self.conditional else None,
        )
        return self.space.trim(
            self.build(ch, name="argmax"), keep_nodes=self.fixed_models is not None
        )

    def focus_stages(self, stages: list[int], strength: float = 0.7) -> None:
        """Concentrate slot s on stage ``stages[s]`` and every threshold on escalating at
        any disagreement (a no-op in a plain space)."""
        if not self.conditional:
            return
        n_s = self.stage_logits.shape[1]
        for slot, st in enumerate(stages[: self.n]):
            p = np.full(n_s, (1 - strength) / max(n_s - 1, 1))
            p[min(st, n_s - 1)] = strength
            self.stage_logits[slot] = np.log(p / p.sum())
        if self.threshold_logits.size:
            n_t = self.threshold_logits.shape[1]
            top = int(np.argmax(self.space.thresholds))
            p = np.full(n_t, (1 - strength) / max(n_t - 1, 1))
            p[top] = strength
            self.threshold_logits[:] = np.log(p / p.sum())

    def focus_mix(self, counts: tuple[int, ...] | list[int], strength: float = 0.95) -> None:
        """Concentrate the model logits on one mix: slot s holds the s-th copy."""
        k = len(self.space.models)
        order = [i for i, c in enumerate(counts) for _ in range(c)]
        rest = (1 - strength) / k
        for s in range(self.n):
            p = np.full(k + 1, rest)
            p[order[s] if s < len(order) else k] = strength
            self.model_logits[s] = np.log(p / p.sum())


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float)) and np.isfinite(v):
        return float(v)
    if isinstance(v, str):
        try:
            s = v.strip().rstrip("%")
            x = float(s)
            return x / 100 if v.strip().endswith("%") else x
        except ValueError:
            return None
    return None


def _slot(node_id: str) -> int | None:
    s = node_id.strip()
    if s.startswith("n") and s[1:].isdigit():
        return int(s[1:])
    if s.isdigit():
        return int(s)
    return None


def _stage_row(key: str) -> int | None:
    """'stage1' / '1' -> row 0 of the threshold logits (stage 0 has no threshold)."""
    s = key.strip().lower().removeprefix("stage").strip()
    return int(s) - 1 if s.isdigit() and int(s) >= 1 else None


def parse_edge(key: str) -> tuple[int, int] | None:
    """'n0->n2', 'n0 -> n2', '0-2', '(0, 2)' -> (0, 2)."""
    import re

    m = re.findall(r"n?(\d+)", key)
    if len(m) != 2:
        return None
    return int(m[0]), int(m[1])
