"""Agent replies: the parser survives nasty text; bad replies fall back to REINFORCE."""

from __future__ import annotations

import pytest

from moagraph.graph.testing import fake_pool
from moagraph.search.agent import parse_mix_reply, parse_update_reply
from moagraph.search.agent_reinforce import AgentReinforce
from moagraph.search.evaluator import EvalResult
from moagraph.search.space import SearchSpace
from moagraph.search.study import Study, run_study


def space(**kw) -> SearchSpace:
    return SearchSpace.from_pool(
        fake_pool("s", "m", "l"), avg_in=202, avg_out=275, budget=12.0, max_nodes=4, **kw
    )


GOOD = [
    ('```json\n{"probabilities": {"edges": {"n0->n1": 0.8}}}\n```', {"n0->n1": 0.8}),
    (
        'Sure! Here you go: {"probabilities": {"edges": {"n0->n1": 0.7,}}} hope it helps',
        {"n0->n1": 0.7},
    ),
    ("{'probabilities': {'edges': {'n0->n1': 0.6}}}", {"n0->n1": 0.6}),  # single quotes
    ('{"edges": {"n0->n1": "90%"}}', {"n0->n1": 0.9}),  # top-level, percentage
    ('{"probabilities": {"edges": {"n0->n1": 7}}}', {"n0->n1": 0.99}),  # out of range: clipped
    (
        '{"probabilities": {"edges": {"n0->n1": 0.65, "n9->n1": 0.5, "x": 1}, "colour": "red"}}',
        {"n0->n1": 0.65},
    ),
    ("I would raise n0->n1: 0.75 and leave the rest.", {"n0->n1": 0.75}),  # prose
    ('{"probabilities": {"edges": {"n0->n1": 0.85, "n1->n2": 0.3', {"n0->n1": 0.85}),  # truncated
    ('"edges": {"n0->n1": 0.55}}}', {"n0->n1": 0.55}),  # continues the prompt's opened JSON
]

BAD = [
    "",
    "I think the graph is fine.",
    "{}",
    '{"probabilities": "raise everything"}',
    "```json\n[1, 2, 3]\n```",
    '{"probabilities": {"edges": {"n0->n1": null}}}',
    "NaN NaN NaN",
    "}}}{{{",
]


@pytest.mark.parametrize("text,edges", GOOD)
def test_parser_recovers_probabilities(text: str, edges: dict[str, float]) -> None:
    from moagraph.search.distribution import GraphDistribution

    r = parse_update_reply(text, space())
    assert r.ok, r.error
    d = GraphDistribution(space())
    d.set_probabilities(r.probabilities or {})
    p = d.probabilities()["edges"]
    for k, v in edges.items():
        assert p[k] == pytest.approx(v, abs=1e-3)


@pytest.mark.parametrize("text", BAD)
def test_parser_rejects_without_raising(text: str) -> None:
    r = parse_update_reply(text, space())
    assert not r.ok


def test_parser_reads_a_proposed_graph_and_drops_bad_parts() -> None:
    text = """{"graph": {"nodes": [{"id": "n0", "model": "l"}, {"id": "n1", "model": "m", "role": "fuser", "inputs": ["n0", "n3"]},
    {"id": "n2", "model": "gpt-9"}], "sink": ["n1"]}}"""
    r = parse_update_reply(text, space())
    assert r.ok and r.graph is not None
    g = r.graph
    assert [n.model for n in g.llm_nodes] == ["l", "m"]  # unknown model dropped
    assert g.node("n1").inputs == ["n0"]  # missing input dropped
    g.validate_structure()


def test_mix_reply_parsing() -> None:
    assert parse_mix_reply("2, 0]}", 5) == [2, 0]
    assert parse_mix_reply("I pick mixes 1 and 1 and 9", 5) == [1]
    assert parse_mix_reply("none", 5) == []


class ScriptedAgent:
    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.prompts: list[str] = []

    async def __call__(self, prompt: str, attempt: int = 0) -> str:
        self.prompts.append(prompt)
        return self.replies[(len(self.prompts) - 1) % len(self.replies)]


class Synthetic:
    """Deterministic reward of a graph: prefers 3 copies of m (optimiser-logic tests only)."""

    def __init__(self, sp: SearchSpace) -> None:
        self.space = sp
        self.ids = {"train": ["q"], "heldout": ["q"]}

    async def evaluate(self, g, split="train") -> EvalResult:
        mix = self.space.mix_of(g)
        r = 1.0 - 0.2 * abs(mix[1] - 3) - 0.1 * mix[0] - 0.1 * mix[2]
        return EvalResult(r, self.space.graph_cost(g), 0.0, 0.0, 1)


async def test_malformed_replies_fall_back_to_reinforce(tmp_path) -> None:
    sp = space()
    agent = ScriptedAgent(["I am not sure.", "graph looks good"])
    opt = AgentReinforce(sp, seed=0, agent=agent, task_kind="math")
    before = opt.dist.state_dict()
    st = Study.open(tmp_path / "s.sqlite", "x", {})
    res = await run_study(st, opt, Synthetic(sp), 12)
    s = res.stats
    search_steps = sum(1 for t in st.trials() if t.phase in ("search", "proposal"))
    assert s["parse_failures"] == search_steps > 0
    assert s["retries"] == search_steps  # each bad reply retried once
    assert s["fallback_steps"] == search_steps
    assert s["parse_failure_rate"] == 1.0
    assert opt.dist.state_dict() != before  # REINFORCE moved the logits


async def test_agent_errors_do_not_crash(tmp_path) -> None:
    class Broken:
        async def __call__(self, prompt: str, attempt: int = 0) -> str:
            raise ConnectionError("endpoint down")

    sp = space()
    opt = AgentReinforce(sp, seed=0, agent=Broken())
    st = Study.open(tmp_path / "s.sqlite", "x", {})
    res = await run_study(st, opt, Synthetic(sp), 10)
    assert res.stats["agent_errors"] > 0 and res.n_trials == 10


async def test_valid_replies_update_the_distribution_and_proposals_are_used(tmp_path) -> None:
    sp = space()
    reply = '{"probabilities": {"models": {"n0": {"m": 0.97}, "n1": {"m": 0.97}, "n2": {"m": 0.97}, "n3": {"off": 0.97}}}, "graph": {"nodes": [{"id": "n0", "model": "m"}, {"id": "n1", "model": "m"}, {"id": "n2", "model": "m"}]}}'
    agent = ScriptedAgent(['{"mixes": [0]}', reply])
    # fix_mix=False: the legacy free-mix mode, where the agent may move model probabilities
    # (the default now fixes the pretest's mix; see test_search_paper.py)
    opt = AgentReinforce(sp, seed=1, agent=agent, task_kind="math", fix_mix=False)
    st = Study.open(tmp_path / "s.sqlite", "x", {})
    res = await run_study(st, opt, Synthetic(sp), 12)
    assert res.stats["agent_replies_ok"] > 0 and res.stats["parse_failures"] == 0
    assert res.stats["proposals_used"] >= 1
    assert opt.dist.probabilities()["models"]["n0"]["m"] == pytest.approx(0.97, abs=0.01)
    assert sp.mix_of(res.best_graph) == (0, 3, 0)
    assert any("Insights" in p for p in agent.prompts)  # insights go to the agent


async def test_textgrad_gets_no_insights_or_pretest(tmp_path) -> None:
    from moagraph.search.textgrad import TextGrad

    sp = space()
    agent = ScriptedAgent(["nothing useful"])
    opt = TextGrad(sp, seed=0, agent=agent)
    st = Study.open(tmp_path / "s.sqlite", "x", {})
    await run_study(st, opt, Synthetic(sp), 5)
    assert all(t.phase == "search" for t in st.trials())
    assert not any("Insights" in p for p in agent.prompts)


class SchemaAgent(ScriptedAgent):
    accepts_schema = True

    def __init__(self, replies: list[str]) -> None:
        super().__init__(replies)
        self.schemas: list[dict | None] = []

    async def __call__(self, prompt: str, attempt: int = 0, schema: dict | None = None) -> str:
        self.schemas.append(schema)
        return await super().__call__(prompt, attempt)


@pytest.mark.parametrize("flat", [True, False])
def test_update_schema_matches_the_parser(flat: bool) -> None:
    import json

    from moagraph.search.agent import update_schema

    sp = space(flat=flat)
    sch = update_schema(sp)
    node_probs = sch["properties"]["probabilities"]["properties"]["models"]["properties"]["n0"][
        "properties"
    ]
    assert set(node_probs) == {*sp.model_names, "off"}
    assert ("edges" in sch["properties"]["probabilities"]["properties"]) is (not flat)
    reply = json.dumps(
        {
            "probabilities": {"models": {"n1": {"m": 0.9}}},
            "graph": {"nodes": [{"id": "n0", "model": "l"}]},
        }
    )
    r = parse_update_reply(reply, sp, prefix="")
    assert r.ok and r.probabilities and r.graph is not None
    r = parse_update_reply(
        reply, sp
    )  # with the prompt's opened JSON as prefix: the fallback finds it
    assert r.ok and r.probabilities == {"models": {"n1": {"m": 0.9}}} and r.graph is not None


async def test_textgrad_applies_parsed_updates_and_passes_the_schema(tmp_path) -> None:
    from moagraph.search.textgrad import TextGrad

    sp = space()
    reply = '{"probabilities": {"models": {"n0": {"m": 0.9}, "n1": {"off": 0.9}, "n2": {"off": 0.9}, "n3": {"off": 0.9}}}}'
    agent = SchemaAgent([reply])
    opt = TextGrad(sp, seed=0, agent=agent, mix="free")  # model probabilities are updated
    st = Study.open(tmp_path / "s.sqlite", "x", {})
    res = await run_study(st, opt, Synthetic(sp), 4)
    assert res.stats["agent_replies_ok"] == 4 and res.stats["fallback_steps"] == 0
    assert all(s is not None and s["required"] == ["probabilities"] for s in agent.schemas)
    assert opt.dist.probabilities()["models"]["n0"]["m"] == pytest.approx(0.9, abs=0.01)
    assert opt.dist.probabilities()["models"]["n3"]["off"] == pytest.approx(0.9, abs=0.01)
