"""The LLM agent of Agent-REINFORCE: prompts and a forgiving reply parser.

Replies come from models of any size, including small base models that
ramble, truncate, use single quotes or percentages. The parser takes the
largest JSON object it can repair (fenced or in prose), falls back to
``nX->nY: p`` patterns, clips numbers and ignores unknown keys. It never
raises: a reply it cannot use yields ``AgentReply(ok=False)`` and the
optimiser falls back to a REINFORCE step.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from moagraph.graph.spec import Graph, Node, Role
from moagraph.models.base import SamplingParams
from moagraph.search.space import SearchSpace, finalize_graph


class AgentLLM(Protocol):
    """What the optimiser needs from an agent: text in, text out.

    An agent that sets ``accepts_schema = True`` is also passed ``schema=`` (a
    JSON schema its decoding is constrained to) and ``max_tokens=`` (a reply
    limit sized to that schema, :func:`reply_token_limit`).
    """

    async def __call__(self, prompt: str, attempt: int = 0) -> str: ...


class RuntimeAgent:
    """An agent backed by a pool model through ``PoolRuntime`` (so calls are cached).

    The prompt is sent as one user message written as a plain completion
    prompt that already opens the JSON reply; that also suits base models
    without a chat template. A retry samples at a higher temperature.
    """

    def __init__(
        self, runtime: Any, model: str, max_tokens: int | None = None, json_schema: bool = True
    ) -> None:
        self.runtime = runtime
        self.model = model
        # None: the optimiser sizes each reply's limit from its schema (reply_token_limit);
        # DEFAULT_REPLY_TOKENS for a call that brings neither.
        self.max_tokens = max_tokens
        # True: the optimiser passes a JSON schema for update replies and the
        # backend constrains decoding to it (llama.cpp grammar / response_format).
        self.accepts_schema = json_schema
        self.calls = 0

    async def __call__(
        self,
        prompt: str,
        attempt: int = 0,
        schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> str:
        limit = self.max_tokens or max_tokens or DEFAULT_REPLY_TOKENS
        self.last_max_tokens = limit
        params = SamplingParams(
            temperature=0.0 if attempt == 0 else 0.7,
            max_tokens=limit,
            seed=attempt,
            stop=("```", "\n\n\n", "Question:"),
            json_schema=schema if self.accepts_schema else None,
        )
        self.calls += 1
        c = await self.runtime.complete(
            self.model, [{"role": "user", "content": prompt}], params, sample_index=attempt
        )
        return c.text


REPLY_PREFIX = '```json\n{"probabilities": {'
DEFAULT_REPLY_TOKENS = 1024


def _largest_instance(schema: dict[str, Any]) -> Any:
    """The longest JSON value a schema allows (arrays at maxItems, every property, longest enum)."""
    t = schema.get("type")
    if "enum" in schema:
        return max(schema["enum"], key=lambda v: len(json.dumps(v)))
    if t == "object":
        return {k: _largest_instance(v) for k, v in schema.get("properties", {}).items()}
    if t == "array":
        n = schema.get("maxItems")
        item = schema.get("items", {})
        if n is None:  # unbounded (e.g. inputs): as many as the item enum has values
            n = len(item.get("enum", [None]))
        return [_largest_instance(item) for _ in range(n)]
    if t == "number":
        return 0.125
    if t == "integer":
        return 99
    if t == "string":
        return "x" * 16
    return None


def reply_token_limit(
    schema: dict[str, Any], chars_per_token: float = 2.0, margin: int = 64
) -> int:
    """A reply limit sized to the schema: the largest reply it allows, in tokens.

    JSON of short keys, digits and punctuation runs at about 2-3 characters
    per token (Qwen2.5 and Llama 3 tokenisers); 2 is the safe side, plus room
    for whitespace the grammar allows. The official code gives its agent 16,384
    tokens (``self.llm.gen(message, 16384)`` in FairyFali/AgentRE
    ``experiments/evaluator/llm_optimizer.py``) for free-text replies with a
    reasoning preamble; a schema-constrained reply needs only this.
    """
    text = json.dumps(_largest_instance(schema), separators=(", ", ": "))
    return int(len(text) / chars_per_token) + margin


# The paper's latency prompt, copied from FairyFali/AgentRE
# swarm/environment/prompt/math_prompt_set.py, get_llm_forward_latency (the
# latency-specific lines; {dataset} replaces "Math"). The official reply format
# (a "Graph:" string and an "Edge-probabilities:" list) is replaced by this
# module's JSON reply, which the schema constrains.
LATENCY_CONTEXT = (
    "- You will see the **last-round graph**, its **batch accuracy**, its **inference latency**, and the "
    "**full table of edge-selection probabilities**.\n"
    "- Your job: **propose the next-round graph** (same format) **and the updated probability table** "
    "(same order & format), applying * RL-style* probability nudges.\n"
    "- The graph you receive in this iteration has been expanded outward from the FinalDecision node, "
    "gradually increasing in both depth and breadth. The edge-probabilities starts with all edge "
    "probabilities set to zero, and through multiple sampling rounds, probabilities are raised only for "
    "edges that prove useful and efficiency.\n"
    "- Your goal is to optimize a MAS DAG to minimize inference latency while ensuring it remains usable."
)
LATENCY_RULE = (
    "R-1  Model counts must exactly match model_selection after you assign models to all nodes. But you "
    "don't need to use all the models. For the unused models, do not assign predecessors or successors"
)
LATENCY_INSIGHTS = (
    "Latency Optimization Insights:\n"
    "- Graphs with fewer nodes generally achieve lower inference latency. You may remove nodes if doing so "
    "does not significantly harm performance.\n"
    "- Proper control of context length is a key factor for inference latency. Avoid giving a node overly "
    "long input contexts — each node's in-degree should not be too large.\n"
    "- When performance is not heavily impacted, aim to reduce the total number of edges. Sparse graphs "
    "have much lower inference latency compared to dense ones.\n"
    "- Smaller models achieve lower inference latency. You may replace the larger models in the current "
    "graph with smaller ones from model selection to reduce inference latency."
)
LATENCY_CLOSING = (
    "Remember, your primary goal is to decrease the inference latency of the graph, while ensuring that "
    "the graph's performance remains usable."
)
LATENCY_MARKER = "Latency Optimization Insights:"


def update_prompt(
    *,
    task_kind: str | None,
    graph_text: str,
    reward: float,
    probabilities: dict[str, Any],
    history: list[tuple[str, float]],
    insights: str | None,
    budget_note: str,
    sink_note: str = "the sink votes over its inputs.",
    model_selection: str | None = None,
    latency_s: float | None = None,
    latency: bool = False,
    cascade_note: str = "",
) -> str:
    """Feedback prompt after one evaluation; ends inside the JSON reply it asks for.

    ``cascade_note``: for conditional spaces, what stages and thresholds mean and the
    latest graph's expected cost and escalation rate.

    ``model_selection``: the fixed mix (the agent may not change it; its model
    entries are ignored). ``latency=True`` adds the paper's latency prompt
    (``LATENCY_*``, copied from the official code) and the last latency.
    """
    parts = [
        "You optimise a collaboration graph of language models for a "
        f"{task_kind or 'generic'} task. Nodes are sampled from the probabilities below; "
        f"edges nX->nY feed X's answer to Y; {sink_note}",
        budget_note,
        cascade_note,
    ]
    if model_selection:
        parts.append(
            "For the current budget we have a fixed **model-selection requirement** (each node's model is "
            f"fixed; change edges, sink links and roles only):\n{model_selection}"
        )
    if latency:
        parts.append(LATENCY_CONTEXT)
        parts.append(LATENCY_RULE)
        if latency_s is not None:
            parts.append(f"Last-round inference latency:\n{latency_s:.3f} s per query")
        parts.append(LATENCY_INSIGHTS)
    if insights:
        parts.append(("Performance optimize insight:\n" if latency else "Insights:\n") + insights)
    if history:
        parts.append(
            "Recent graphs and rewards:\n"
            + "\n".join(f"[reward {r:.3f}] {g.replace(chr(10), '; ')}" for g, r in history)
        )
    parts += [
        f"Latest graph (reward {reward:.3f}):\n{graph_text}",
        "Current probabilities (JSON; per node only entries >= 0.05 shown):\n"
        + json.dumps(compact_probabilities(probabilities), separators=(",", ":")),
        'Reply with JSON only: {"probabilities": {...same keys, updated values in [0,1]...}, '
        '"graph": {"nodes": [{"id": "n0", "model": "...", "role": "assistant", '
        '"inputs": []}], "sink": ["n0"]}}',
    ]
    if latency:
        parts.append(LATENCY_CLOSING)
    parts += [
        REPLY_PREFIX,
    ]
    return "\n\n".join(p for p in parts if p)


def update_schema(space: SearchSpace, fixed_nodes: int | None = None) -> dict[str, Any]:
    """JSON schema of an update reply, built from the space (a subset of what
    ``parse_update_reply`` accepts): ``{"probabilities": {"models": {"n0": {model: p}},
    ...}, "graph": {"nodes": [...], "sink": [...]}}``. Keys are spelled exactly
    as the space names them, so a constrained small model cannot misspell a model.

    ``fixed_nodes=k`` (a fixed mix of k nodes): only slots n0..n(k-1), and no
    model probabilities (the mix is not the agent's to change).
    """
    n_slots = space.max_nodes if fixed_nodes is None else max(1, fixed_nodes)
    slots = [f"n{i}" for i in range(n_slots)]
    prob = {"type": "number"}

    def per_slot(labels: list[str]) -> dict[str, Any]:
        """{slot: {label: p}} for every slot: one categorical per node."""
        return _closed(slots, _closed(labels, prob))

    probs: dict[str, Any] = {}
    if fixed_nodes is None:
        probs["models"] = per_slot([*space.model_names, "off"])
    node: dict[str, Any] = {
        "id": {"type": "string", "enum": slots},
        "model": {"type": "string", "enum": space.model_names},
    }
    required = ["id", "model"]
    if not space.flat:
        roles = [r.value for r in space.roles]
        probs["roles"] = per_slot(roles)
        edges = [f"n{i}->n{j}" for i in range(len(slots)) for j in range(i + 1, len(slots))]
        probs["edges"] = _closed(edges, prob)
        probs["sink"] = _closed(slots, prob)
        node["role"] = {"type": "string", "enum": roles}
        node["inputs"] = {"type": "array", "items": {"type": "string", "enum": slots}}
    escalate: dict[str, Any] = {}
    if space.conditional:
        later = [f"stage{s}" for s in range(1, space.stages)]
        probs["stages"] = per_slot([str(i) for i in range(space.stages)])
        probs["escalate_below"] = _closed(
            later, _closed([f"{t:g}" for t in space.thresholds], prob)
        )
        node["stage"] = {"type": "integer", "enum": list(range(space.stages))}
        threshold = {"type": "number", "enum": list(space.thresholds)}
        escalate = {"escalate_below": _closed(later, threshold)}
    graph = {
        "type": "object",
        "properties": {
            **escalate,
            "nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": node,
                    "required": required,
                    "additionalProperties": False,
                },
                "minItems": 1,
                "maxItems": n_slots,
            },
            "sink": {"type": "array", "items": {"type": "string", "enum": slots}},
        },
        "required": ["nodes"],
        "additionalProperties": False,
    }
    if not probs:  # flat space with a fixed mix: only the graph (which nodes to use) is left
        return {
            "type": "object",
            "properties": {"graph": graph},
            "required": ["graph"],
            "additionalProperties": False,
        }
    first = "models" if "models" in probs else ("edges" if "edges" in probs else "stages")
    return {
        "type": "object",
        "properties": {
            "probabilities": {
                "type": "object",
                "properties": probs,
                "required": [first],
                "additionalProperties": False,
            },
            "graph": graph,
        },
        "required": ["probabilities"],
        "additionalProperties": False,
    }


def _closed(keys: list[str], value: dict[str, Any]) -> dict[str, Any]:
    """A JSON-schema object whose only (optional) properties are ``keys``, each ``value``."""
    return {
        "type": "object",
        "properties": {k: value for k in keys},
        "additionalProperties": False,
    }


def mix_schema(n_mixes: int, k: int) -> dict[str, Any]:
    """JSON schema of a mix-choice reply: ``{"mixes": [i, ...]}`` with valid numbers only."""
    return {
        "type": "object",
        "properties": {
            "mixes": {
                "type": "array",
                "items": {"type": "integer", "enum": list(range(n_mixes))},
                "minItems": 1,
                "maxItems": max(1, min(k, n_mixes)),
            }
        },
        "required": ["mixes"],
        "additionalProperties": False,
    }


def compact_probabilities(probs: dict[str, Any], floor: float = 0.05) -> dict[str, Any]:
    """Shorter prompt: drop tiny categorical entries (a small agent's context is short)."""
    out: dict[str, Any] = {}
    for k, v in probs.items():
        if k in ("models", "roles", "stages", "escalate_below") and isinstance(v, dict):
            out[k] = {n: {m: round(p, 2) for m, p in d.items() if p >= floor} for n, d in v.items()}
        elif isinstance(v, dict):
            out[k] = {e: round(p, 2) for e, p in v.items()}
    return out


MIX_PREFIX = '```json\n{"mixes": ['


def mix_prompt(
    *,
    task_kind: str | None,
    mixes: list[str],
    pilot: list[tuple[str, float]],
    insights: str | None,
    k: int,
) -> str:
    parts = [
        f"Choose model mixes for a {task_kind or 'generic'} task under a compute budget.",
    ]
    if insights:
        parts.append("Insights:\n" + insights)
    if pilot:
        parts.append("Pilot results:\n" + "\n".join(f"- {m}: reward {r:.3f}" for m, r in pilot))
    parts.append("Budget-feasible mixes:\n" + "\n".join(f"{i}. {m}" for i, m in enumerate(mixes)))
    parts.append(
        f'Reply with JSON only: the numbers of the {k} most promising mixes, e.g. {{"mixes": [0, 2]}}'
    )
    parts.append(MIX_PREFIX)
    return "\n\n".join(parts)


@dataclass
class AgentReply:
    ok: bool
    probabilities: dict[str, Any] | None = None
    graph: Graph | None = None
    mixes: list[int] = field(default_factory=list)
    error: str = ""


# --- JSON extraction ---------------------------------------------------------
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.DOTALL)


def _balanced_objects(text: str) -> list[str]:
    """Every top-level {...} span; an unterminated last one is closed by force."""
    out: list[str] = []
    depth, start, in_str, esc, quote = 0, -1, False, False, ""
    stack: list[str] = []
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == quote:
                in_str = False
            continue
        if ch in "\"'" and depth > 0:
            in_str, quote = True, ch
        elif ch in "{[":
            if depth == 0 and ch == "{":
                start = i
            if start >= 0:
                stack.append("}" if ch == "{" else "]")
                depth += 1
        elif ch in "}]" and depth > 0:
            stack.pop()
            depth -= 1
            if depth == 0:
                out.append(text[start : i + 1])
                start = -1
    if depth > 0 and start >= 0:
        tail = text[start:]
        if in_str:
            tail += quote
        tail = re.sub(r"[,:\s]+$", "", tail)
        tail = re.sub(r',\s*"[^"]*"$', "", tail)  # a dangling key
        out.append(tail + "".join(reversed(stack)))
    return out


def _repair(s: str) -> str:
    s = re.sub(r"//[^\n]*", "", s)
    s = re.sub(r"\bTrue\b", "true", s)
    s = re.sub(r"\bFalse\b", "false", s)
    s = re.sub(r"\bNone\b", "null", s)
    if "'" in s and '"' not in s:
        s = s.replace("'", '"')
    s = re.sub(r"(\d+(?:\.\d+)?)\s*%", lambda m: str(float(m.group(1)) / 100), s)
    s = re.sub(r",\s*([}\]])", r"\1", s)
    s = re.sub(r"([{,]\s*)([A-Za-z_][\w\->]*)\s*:", r'\1"\2":', s)  # bare keys
    return s


def _loads(s: str) -> Any:
    for cand in (s, _repair(s)):
        try:
            return json.loads(cand)
        except (json.JSONDecodeError, ValueError):
            continue
    return None


def extract_json(text: str) -> dict[str, Any] | None:
    """The largest JSON object found in fenced blocks or prose (repaired if needed)."""
    sources = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    best: dict[str, Any] | None = None
    best_len = -1
    for src in sources:
        for obj in _balanced_objects(src):
            val = _loads(obj)
            if isinstance(val, dict) and len(obj) > best_len:
                best, best_len = val, len(obj)
    return best


_EDGE_PROSE = re.compile(r"n(\d+)\s*-+>\s*n(\d+)\"?\s*[:=]?\s*\"?(\d*\.?\d+)\s*(%?)")


def _prose_edges(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for a, b, v, pct in _EDGE_PROSE.findall(text):
        x = float(v) / (100 if pct else 1)
        out[f"n{a}->n{b}"] = x
    return out


# --- replies -------------------------------------------------------------------
_PROB_KEYS = ("probabilities", "probs", "updated_probabilities", "distribution")
_GRAPH_KEYS = ("graph", "proposed_graph", "next_graph", "new_graph")
_SECTIONS = ("models", "roles", "edges", "sink", "stages", "escalate_below")
"""The probability sections of an update (``GraphDistribution.probabilities``)."""


def parse_update_reply(text: str, space: SearchSpace, prefix: str = REPLY_PREFIX) -> AgentReply:
    """Parse an agent's update (probabilities and/or a graph). Never raises."""
    try:
        return _parse_update(text, space, prefix)
    except Exception as e:  # a parser must not take the search down
        return AgentReply(False, error=f"parser error: {type(e).__name__}: {e}")


def _parse_update(text: str, space: SearchSpace, prefix: str) -> AgentReply:
    if not isinstance(text, str) or not text.strip():
        return AgentReply(False, error="empty reply")
    obj = None
    if prefix:
        # The prompt opened the JSON; the reply continues it.
        start = prefix[prefix.index("{") :]
        obj = extract_json(start + text)
    if obj is None or not _has_content(obj):
        obj2 = extract_json(text)
        if obj2 is not None:
            obj = obj2
    probs: dict[str, Any] | None = None
    graph: Graph | None = None
    if isinstance(obj, dict):
        for k in _PROB_KEYS:
            if isinstance(obj.get(k), dict):
                probs = obj[k]
                break
        if probs is None and any(k in obj for k in _SECTIONS):
            probs = {k: obj[k] for k in _SECTIONS if k in obj}
        for k in _GRAPH_KEYS:
            if isinstance(obj.get(k), dict):
                graph = graph_from_reply(obj[k], space)
                break
        if graph is None and isinstance(probs, dict):
            for k in _GRAPH_KEYS:
                if isinstance(probs.get(k), dict):
                    graph = graph_from_reply(probs[k], space)
    prose = _prose_edges(text)
    if prose and not space.flat:
        probs = dict(probs or {})
        given = probs.get("edges")
        probs["edges"] = {**prose, **(given if isinstance(given, dict) else {})}
    if probs is not None and not _has_content(probs):
        probs = None
    if probs is not None:  # usable only if something in it applies to this space
        from moagraph.search.distribution import GraphDistribution

        if GraphDistribution(space).set_probabilities(probs) == 0:
            probs = None
    if probs is None and graph is None:
        return AgentReply(False, error="no probabilities or graph found")
    return AgentReply(True, probabilities=probs, graph=graph)


def _has_content(d: dict[str, Any]) -> bool:
    for k in (*_SECTIONS, *_PROB_KEYS, *_GRAPH_KEYS):
        v = d.get(k)
        if isinstance(v, dict) and v:
            return True
    return False


def graph_from_reply(raw: dict[str, Any], space: SearchSpace) -> Graph | None:
    """A graph the agent wrote (node list or dict, edges inside nodes or apart)."""
    names = space.model_names
    nodes_raw = raw.get("nodes")
    items: list[tuple[str, dict[str, Any]]] = []
    if isinstance(nodes_raw, list):
        for i, n in enumerate(nodes_raw):
            if isinstance(n, dict):
                items.append((str(n.get("id", f"n{i}")), n))
    elif isinstance(nodes_raw, dict):
        items = [(str(k), v) for k, v in nodes_raw.items() if isinstance(v, dict)]
    nodes: list[Node] = []
    seen: set[str] = set()
    for nid, n in items:
        m = re.fullmatch(r"n?(\d+)", nid.strip())
        model = n.get("model")
        if m is None or model not in names:
            continue
        nid = f"n{int(m.group(1))}"
        if nid in seen or int(m.group(1)) >= space.max_nodes:
            continue
        seen.add(nid)
        role_s = str(n.get("role", "assistant")).lower()
        role = Role.FUSER if role_s == "fuser" and Role.FUSER in space.roles else Role.ASSISTANT
        given = n.get("inputs")
        inputs = given if isinstance(given, list) else []
        nodes.append(Node(id=nid, role=role, model=model, inputs=[_nid(x) for x in inputs]))
    if not nodes:
        return None
    idx = {n.id: int(n.id[1:]) for n in nodes}
    edges = raw.get("edges")
    if isinstance(edges, list):
        for e in edges:
            pair: list[Any] = []
            if isinstance(e, str):
                pair = re.findall(r"n?(\d+)", e)
            elif isinstance(e, (list, tuple)) and len(e) == 2:
                pair = [str(x).lstrip("n") for x in e]
            if len(pair) == 2:
                a, b = f"n{pair[0]}", f"n{pair[1]}"
                for n in nodes:
                    if n.id == b:
                        n.inputs.append(a)
    for n in nodes:  # only earlier slots may feed a node (keeps it a DAG)
        n.inputs = [i for i in n.inputs if i in idx and idx[i] < idx[n.id]]
        if space.flat:
            n.inputs = []
            n.role = Role.ASSISTANT
    nodes.sort(key=lambda n: idx[n.id])
    if space.conditional:
        nodes = _reply_cascade(nodes, items, raw, space)
    sink = raw.get("sink") or raw.get("sink_inputs") or []
    sink_inputs = [_nid(x) for x in sink] if isinstance(sink, list) else []
    return space.trim(
        finalize_graph(
            nodes, sink_inputs, sink_mode=space.sink_mode, output_model=space.output_model
        )
    )


def _reply_cascade(
    nodes: list[Node], items: list[tuple[str, dict[str, Any]]], raw: dict[str, Any], space: Any
) -> list[Node]:
    """Stages (``"stage": s`` per node) and ``escalate_below`` thresholds of a reply's graph,
    snapped to the space's stages and thresholds; a node without a stage is in stage 0."""
    from moagraph.search.space import cascade_nodes

    stage: dict[str, int] = {}
    for nid, n in items:
        m = re.fullmatch(r"n?(\d+)", nid.strip())
        v = n.get("stage")
        if m is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
            stage[f"n{int(m.group(1))}"] = min(max(int(v), 0), space.stages - 1)
    cutoffs: dict[int, float] = {}
    given = raw.get("escalate_below")
    if isinstance(given, dict):
        for key, val in given.items():
            m = re.fullmatch(r"(?:stage)?\s*(\d+)", str(key).strip().lower())
            if m is None or not isinstance(val, (int, float)) or isinstance(val, bool):
                continue
            cutoffs[int(m.group(1))] = min(space.thresholds, key=lambda t: abs(t - float(val)))
    return cascade_nodes(nodes, stage, cutoffs)


def _nid(x: Any) -> str:
    s = str(x).strip()
    return s if s.startswith("n") else f"n{s}"


def parse_mix_reply(text: str, n_mixes: int, prefix: str = MIX_PREFIX) -> list[int]:
    """Mix numbers chosen by the agent (valid, unique, in order); [] if none."""
    try:
        vals: list[Any] = []
        # A complete JSON reply (schema-constrained decoding) first, then the
        # continuation of the prompt's opened JSON.
        for cand in (text, prefix[prefix.index("{") :] + text) if text else ():
            obj = extract_json(cand)
            if isinstance(obj, dict) and isinstance(obj.get("mixes"), list):
                vals = [
                    v
                    for v in obj["mixes"]
                    if isinstance(v, (int, float, str)) and not isinstance(v, bool)
                ]
                if vals:
                    break
        if not vals:
            vals = re.findall(r"\d+", text or "")
        out: list[int] = []
        for v in vals:
            try:
                i = int(float(v))
            except (TypeError, ValueError):
                continue
            if 0 <= i < n_mixes and i not in out:
                out.append(i)
        return out
    except Exception:
        return []
