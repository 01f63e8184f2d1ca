"""Paper-faithful search: official budgets, charged output node, fixed mix, guided
iterations, reply limits, latency prompt, train/validation/test discipline."""

from __future__ import annotations

import json

import pytest

from moagraph.graph.spec import Role
from moagraph.graph.testing import fake_pool
from moagraph.models.cost import node_flops
from moagraph.search.agent import LATENCY_MARKER, reply_token_limit, update_schema
from moagraph.search.agent_reinforce import AgentReinforce
from moagraph.search.evaluator import EvalResult, mean_ci
from moagraph.search.space import (
    PAPER_BASE_FLOPS,
    PAPER_MODELS,
    PAPER_TASK_LENGTHS,
    SearchSpace,
    paper_budget_rule,
    parse_budget,
)
from moagraph.search.study import Study, phase_counts, run_study

# --- 1. the official budget rule ----------------------------------------------------------

# (task, b) -> the numbers of the issue / DESIGN.md, in the official base_flop units
OFFICIAL = {
    ("math", 4): 17.8, ("math", 8): 42.9, ("math", 12): 79.0,
    ("mmlu", 4): 16.3, ("mmlu", 8): 38.5, ("mmlu", 12): 70.0,
    ("humaneval", 4): 14.2, ("humaneval", 8): 31.9, ("humaneval", 12): 56.4,
}  # fmt: skip


@pytest.mark.parametrize("task,b", sorted(OFFICIAL))
def test_paper_budgets_reproduce_the_official_numbers(task: str, b: int) -> None:
    # by hand with node_flops: b 1B nodes, node i reads i answers, + a 3B node reading b
    a, out = PAPER_TASK_LENGTHS[task]
    small, big = PAPER_MODELS["llama3.2-1b"], PAPER_MODELS["llama3.2-3b"]
    total = sum(node_flops(small, i, a, out) for i in range(b)) + node_flops(big, b, a, out)
    assert total / PAPER_BASE_FLOPS[task] == pytest.approx(OFFICIAL[(task, b)], abs=0.05)
    assert paper_budget_rule(task, b, official_unit=True) == pytest.approx(
        total / PAPER_BASE_FLOPS[task]
    )
    # base_flop is one no-input 1B call, rounded: exact units differ by < 0.25 %
    exact = paper_budget_rule(task, b)
    assert exact == pytest.approx(total / node_flops(small, 0, a, out))
    assert exact == pytest.approx(total / PAPER_BASE_FLOPS[task], rel=0.0025)
    assert exact == pytest.approx(OFFICIAL[(task, b)], abs=0.2)


def test_space_paper_budget_matches_the_rule_on_the_papers_models() -> None:
    from moagraph.models.pool import ModelSpec, Pool

    specs = [
        ModelSpec(name=n, backend="replay", replay="x.jsonl", params_b=p, layers=lay, hidden_size=d)
        for n, p, lay, d in (("l1b", 1.0, 16, 2048), ("l3b", 3.0, 28, 3072), ("l8b", 8.0, 32, 4096))
    ]
    pool = Pool(name="paper", models=specs)
    sp = SearchSpace.from_pool(pool, avg_in=202, avg_out=275, max_nodes=12, sink_mode="llm")
    assert sp.output_model == "l3b"  # the paper's 3B output over 1B nodes
    for b in (4, 8, 12):
        assert sp.paper_budget(b) == pytest.approx(paper_budget_rule("math", b))


def test_a_complete_json_mix_reply_is_parsed() -> None:
    from moagraph.search.agent import parse_mix_reply

    # what a schema-constrained agent writes (the live Qwen smoke run): a whole object
    assert parse_mix_reply('{"mixes": [0, 2, 3]}', 5) == [0, 2, 3]
    assert parse_mix_reply("0, 2]}", 5) == [0, 2]  # a continuation of the prompt's opened JSON


def test_parse_budget() -> None:
    assert parse_budget("42") == (42.0, None)
    assert parse_budget("paper:8") == (None, 8)
    assert parse_budget("paper:42") == (None, 8)
    assert parse_budget("paper:80") == (None, 12)
    with pytest.raises(ValueError):
        parse_budget("paper:x")


# --- 2. the charged output node -------------------------------------------------------------


def llm_space(**kw) -> SearchSpace:
    kw.setdefault("budget", 30.0)
    return SearchSpace.from_pool(
        fake_pool("s", "m", "l"), avg_in=202, avg_out=275, max_nodes=4, sink_mode="llm", **kw
    )


def test_output_node_is_an_llm_sink_and_is_charged() -> None:
    sp = llm_space(output_model="m")
    g = sp.flat_graph((2, 0, 0))
    sink = g.node(g.sink)
    assert sink.role is Role.ASSISTANT and sink.model == "m" and sink.inputs == ["n0", "n1"]
    g.validate_structure()
    workers = 2 * sp.node_cost("s", 0)
    assert sp.graph_cost(g) == pytest.approx(workers + sp.node_cost("m", 2))
    assert sp.graph_cost(g) > workers
    assert sp.mix_cost((2, 0, 0)) == pytest.approx(sp.graph_cost(g))
    assert sp.mix_of(g) == (2, 0, 0)  # the output node is not a searched slot
    vote = SearchSpace.from_pool(
        fake_pool("s", "m", "l"), avg_in=202, avg_out=275, budget=30.0, max_nodes=4
    )
    assert vote.graph_cost(vote.flat_graph((2, 0, 0))) == pytest.approx(workers)


def test_trim_keeps_the_output_node_and_counts_it() -> None:
    sp = llm_space(output_model="m", budget=6.0)
    g = sp.trim(sp.flat_graph((4, 0, 0)))
    assert g.node(g.sink).model == "m"
    assert sp.fits(g) and sp.graph_cost(g) <= 6.0 + 1e-9
    assert len(sp.workers(g)) < 4


# --- 3. Agent-REINFORCE orchestration --------------------------------------------------------


class Synthetic:
    """Deterministic reward (orchestration tests only): 3 copies of m best."""

    def __init__(self, sp: SearchSpace) -> None:
        self.space = sp
        self.ids = {"train": ["q"], "heldout": ["q"]}

    async def evaluate(self, g, split="train") -> EvalResult:
        mix = self.space.mix_of(g)
        r = 1.0 - 0.2 * abs(mix[1] - 3) - 0.1 * mix[0] - 0.1 * mix[2]
        edges = sum(len(n.inputs) for n in self.space.workers(g))
        return EvalResult(r, self.space.graph_cost(g), 0.0, 1.0 + edges, 1)


class ScriptedAgent:
    accepts_schema = True

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.prompts: list[str] = []
        self.schemas: list[dict | None] = []
        self.limits: list[int | None] = []

    async def __call__(self, prompt: str, attempt: int = 0, schema=None, max_tokens=None) -> str:
        self.prompts.append(prompt)
        self.schemas.append(schema)
        self.limits.append(max_tokens)
        return self.replies[min(len(self.prompts) - 1, len(self.replies) - 1)]


def paper_space() -> SearchSpace:
    return SearchSpace.from_pool(
        fake_pool("s", "m", "l"), avg_in=202, avg_out=275, budget=40.0, max_nodes=4, sink_mode="llm",
        output_model="m",
    )  # fmt: skip


CHANGE_MIX = json.dumps(
    {
        "probabilities": {
            "models": {
                "n0": {"l": 0.99},
                "n1": {"l": 0.99},
                "n2": {"off": 0.99},
                "n3": {"off": 0.99},
            },
            "edges": {"n0->n1": 0.9},
        },
        "graph": {
            "nodes": [{"id": "n0", "model": "l"}, {"id": "n1", "model": "l", "inputs": ["n0"]}]
        },
    }
)


async def test_model_counts_stay_fixed_after_the_pretest(tmp_path) -> None:
    sp = paper_space()
    agent = ScriptedAgent(['{"mixes": [0, 1]}', CHANGE_MIX])
    opt = AgentReinforce(sp, seed=0, agent=agent, task_kind="math", guided_iterations=5)
    st = Study.open(tmp_path / "s.sqlite", "x", {})
    await run_study(st, opt, Synthetic(sp), 100)
    trials = st.trials()
    fixed = opt.fixed_mix
    assert fixed is not None
    guided = [t for t in trials if t.phase in ("search", "proposal")]
    assert guided and all(sp.mix_of(t.graph) == fixed for t in guided)  # the agent's "l, l" ignored
    assert opt.counters["mix_changes_ignored"] >= 1 and opt.counters["agent_replies_ok"] >= 1
    assert opt.dist.probabilities().get("models") is None
    # the agent's edge update was applied, and its graph re-projected onto the mix
    assert opt.dist.probabilities()["edges"]["n0->n1"] == pytest.approx(0.9, abs=0.01)
    assert any(t.phase == "proposal" for t in trials)
    assert all(
        t.graph.node(t.graph.sink).model == "m" for t in trials
    )  # charged output node throughout
    assert all(sp.fits(t.graph) for t in trials)


async def test_guided_iteration_count_is_honoured_and_phases_recorded(tmp_path) -> None:
    sp = paper_space()
    agent = ScriptedAgent(['{"mixes": [0, 1, 2]}', '{"probabilities": {"edges": {"n0->n1": 0.7}}}'])
    opt = AgentReinforce(
        sp, seed=3, agent=agent, task_kind="math", pilot_n=2, n_candidates=3, guided_iterations=4
    )
    st = Study.open(tmp_path / "s.sqlite", "x", {})
    res = await run_study(
        st, opt, Synthetic(sp), 1000
    )  # a cap far above; the optimiser stops itself
    counts = phase_counts(st.trials())
    assert counts["guided"] == 4
    assert counts["pilot"] == 2 and counts["pretest"] == 3
    assert res.n_trials == 9 and res.phases == counts
    assert opt.stats()["guided_evaluations"] == 4 and opt.finished


async def test_reply_token_limit_is_sized_to_the_schema(tmp_path) -> None:
    small = update_schema(paper_space(), fixed_nodes=2)
    big = update_schema(
        SearchSpace.from_pool(
            fake_pool("s", "m", "l"), avg_in=202, avg_out=275, budget=200.0, max_nodes=12
        )
    )
    lim_s, lim_b = reply_token_limit(small), reply_token_limit(big)
    assert lim_b > lim_s > 64
    assert lim_b > 256  # the old fixed cap would truncate a full reply on this space
    # the limit covers the largest reply the schema allows (>= 2 characters per token)
    from moagraph.search.agent import _largest_instance

    assert lim_b * 2 >= len(json.dumps(_largest_instance(big)))
    # the optimiser passes it (and the schema) with every call
    sp = paper_space()
    agent = ScriptedAgent(['{"mixes": [0]}', '{"probabilities": {"edges": {"n0->n1": 0.7}}}'])
    opt = AgentReinforce(sp, seed=0, agent=agent, task_kind="math", guided_iterations=2)
    st = Study.open(tmp_path / "s.sqlite", "x", {})
    await run_study(st, opt, Synthetic(sp), 100)
    assert all(s is not None for s in agent.schemas)
    assert agent.limits[0] is not None and agent.schemas[0]["required"] == ["mixes"]
    upd = [
        (s, m)
        for s, m in zip(agent.schemas, agent.limits, strict=True)
        if "mixes" not in s["properties"]
    ]
    assert upd and all(m == reply_token_limit(s) for s, m in upd)
    assert all(
        "models" not in s["properties"]["probabilities"]["properties"] for s, _ in upd
    )  # mix fixed


@pytest.mark.parametrize("objective", ["accuracy", "latency"])
async def test_latency_prompt_is_used_when_asked(tmp_path, objective: str) -> None:
    sp = paper_space()
    agent = ScriptedAgent(['{"mixes": [0]}', '{"probabilities": {"edges": {"n0->n1": 0.2}}}'])
    opt = AgentReinforce(
        sp, seed=0, agent=agent, task_kind="math", guided_iterations=2, objective=objective
    )
    st = Study.open(tmp_path / "s.sqlite", "x", {})
    await run_study(
        st, opt, Synthetic(sp), 100, latency_weight=0.05 if objective == "latency" else 0.0
    )
    updates = [p for p in agent.prompts if "Current probabilities" in p]
    assert updates
    if objective == "latency":
        assert all(LATENCY_MARKER in p and "Last-round inference latency" in p for p in updates)
        assert all(
            "minimize inference latency while ensuring it remains usable" in p for p in updates
        )
    else:
        assert not any(LATENCY_MARKER in p for p in agent.prompts)


async def test_latency_weight_enters_the_objective(tmp_path) -> None:
    sp = paper_space()
    opt = AgentReinforce(sp, seed=0, agent=None, guided_iterations=3)
    st = Study.open(tmp_path / "s.sqlite", "x", {})
    await run_study(st, opt, Synthetic(sp), 100, latency_weight=0.5)
    trials = st.trials()
    ref = trials[0].latency
    for t in trials:
        assert t.objective == pytest.approx(t.reward - 0.5 * t.latency / ref)


# --- 4. train / validation / test ------------------------------------------------------------


async def test_a_study_never_evaluates_test_ids_while_searching(tmp_path) -> None:
    from moagraph.graph.testing import ArithmeticTask
    from moagraph.pools.splits import split_ids
    from moagraph.search.evaluator import ExactReplayEvaluator

    task = ArithmeticTask()
    exs = task.load("test", n=30)
    parts = split_ids([e.id for e in exs], seed=7)
    by = {e.id: e for e in exs}
    train, val, test = ([by[i] for i in parts[k]] for k in ("train", "validation", "test"))
    assert train and val and test
    sp = SearchSpace.from_pool(
        fake_pool("s", "m"), avg_in=50, avg_out=20, budget=4.0, max_nodes=3, flat=True
    )
    records = [
        {
            "model": m,
            "query_id": e.id,
            "sample": k,
            "text": f"The answer is {e.reference if (k + len(m)) % 2 else 0}.",
        }
        for e in exs
        for m in ("s", "m")
        for k in range(3)
    ]
    ev = ExactReplayEvaluator.from_records(records, sp, train, val, task=task, test=test)
    seen_during_search: set[str] = set()

    def on_trial(*_a) -> None:
        seen_during_search.update(ev.evaluated_ids["test"])

    opt = AgentReinforce(sp, seed=0, agent=None, task_kind="math", guided_iterations=3)
    st = Study.open(tmp_path / "s.sqlite", "x", {})
    res = await run_study(st, opt, ev, 100, on_trial=on_trial)
    assert seen_during_search == set()
    assert ev.evaluated_ids["train"] == {e.id for e in train}
    assert ev.evaluated_ids["heldout"] == {e.id for e in val}
    assert ev.evaluated_ids["test"] == {e.id for e in test}  # the picked graph, once, at the end
    assert res.test_n == len(test) and res.test_ci is not None
    assert res.test_ci[0] <= (res.test_reward or 0.0) <= res.test_ci[1]


def test_mean_ci() -> None:
    m, lo, hi = mean_ci([1.0] * 30 + [0.0] * 70)
    assert m == pytest.approx(0.3) and 0.21 < lo < 0.3 < hi < 0.40  # Wilson
    m, lo, hi = mean_ci([0.5, 0.7, 0.6])
    assert lo < m < hi
