"""Budgets that pick (issue #21, part 3): a served set of graphs answers a request's budget
with the best option expected to fit, not a 400; a budget nothing fits gets a 400 in
OpenAI's format. Served over loopback by the real server, asked with the official
`openai` client, on the recorded zeroeval-gsm8k pool (replayed by question text)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from moagraph.errors import ConfigError
from moagraph.graph.spec import Graph, Node, Role
from moagraph.pools import resolve_pool
from moagraph.serve import create_app
from moagraph.serve.build import GraphSet, resolve_served, serve_runtime
from moagraph.serve.pick import NoOptionFits, Option, RequestBudget, option_from_meta, pick
from moagraph.serve.testing import ServerThread

POOL = "zeroeval-gsm8k"
SMALL = "Meta-Llama-3-8B-Instruct"
BIG = "Llama-3.1-405B-Instruct-Turbo"
VOTERS = ("gpt-4o-mini-2024-07-18", "gemma-2-9b-it", "Meta-Llama-3.1-8B-Instruct")


def _question() -> dict[str, Any]:
    queries = resolve_pool(POOL).parent / "queries.jsonl"
    return dict(json.loads(queries.read_text(encoding="utf-8").splitlines()[0]))


def _graphs() -> list[Graph]:
    """Three options: a cheap single model with no measured cost (its worst case stands in),
    a vote of three small models, and a big model, each with a recorded train accuracy.
    (max_tokens 256: the run-time guard bounds each call by its max_tokens, and an option
    fits only if its always-run calls pass that guard.)"""
    small = Graph(
        name="small",
        nodes=[Node(id="answer", model=SMALL, max_tokens=256)],
        sink="answer",
        meta={"train_accuracy": 0.80},
    )
    vote = Graph(
        name="vote3",
        nodes=[Node(id=f"p{i}", model=m, max_tokens=256) for i, m in enumerate(VOTERS)]
        + [Node(id="vote", role=Role.VOTE, inputs=["p0", "p1", "p2"])],
        sink="vote",
        meta={"train_accuracy": 0.90, "expected_flops_norm": 8.0, "expected_latency_s": 2.0},
    )
    big = Graph(
        name="big",
        nodes=[Node(id="answer", model=BIG)],
        sink="answer",
        meta={
            "train_accuracy": 0.96,
            "expected_flops_norm": 150.0,
            "expected_dollars": 0.004,
            "expected_latency_s": 6.0,
        },
    )
    return [small, vote, big]


@pytest.fixture(scope="module")
def server() -> Any:
    app = create_app(POOL, graphs={"gsm": _graphs()})
    with ServerThread(app) as srv:
        yield srv, app


def _client(srv: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0)


def _ask(client: openai.OpenAI, **kw: Any) -> Any:
    q = _question()
    return client.chat.completions.create(
        model="gsm", messages=[{"role": "user", "content": q["question"]}], **kw
    )


# --- the pick, as a function ---------------------------------------------------------------


def test_pick_is_the_best_quality_whose_expected_cost_fits() -> None:
    a = Option("big", 0.96, {"flops_norm": 150.0})
    b = Option("vote", 0.90, {"flops_norm": 8.0})
    c = Option("tie-dear", 0.80, {"flops_norm": 4.0})
    d = Option("tie-cheap", 0.80, {"flops_norm": 3.0})
    assert pick([a, b, c, d], RequestBudget()).option.name == "big"
    p = pick([a, b, c, d], RequestBudget(flops_norm=10.0))
    assert p.option.name == "vote" and [x["option"] for x in p.not_fit] == ["big"]
    assert pick([a, b, c, d], RequestBudget(flops_norm=5.0)).option.name == "tie-cheap"
    with pytest.raises(NoOptionFits) as e:
        pick([a, b, c, d], RequestBudget(flops_norm=1.0))
    assert e.value.cheapest == "tie-cheap" and e.value.cost == 3.0
    assert e.value.param == "moagraph.budget_flops"


def test_fits_means_expected_cost_and_the_worst_case_is_flagged() -> None:
    """A conditional graph usually stops early: picked by its expected cost, flagged as
    capped at run time when its worst case is over the budget."""
    cond = option_from_meta(
        "cascade", {"train_accuracy": 0.9, "expected_flops_norm": 4.0}, {"flops_norm": 20.0}
    )
    p = pick([cond], RequestBudget(flops_norm=5.0))
    assert p.option.name == "cascade" and p.capped
    assert p.info()["cost_source"]["flops_norm"] == "meta"
    assert not pick([cond], RequestBudget(flops_norm=25.0)).capped


def test_unknown_costs_and_qualities() -> None:
    worst_only = option_from_meta("w", {"train_accuracy": 0.5}, {"flops_norm": 3.0})
    assert worst_only.cost_source == {"flops_norm": "worst_case"}
    no_quality = option_from_meta("q", {"expected_flops_norm": 1.0}, {"flops_norm": 2.0})
    assert pick([no_quality, worst_only], RequestBudget()).option.name == "w"
    # no option records a latency: none can be shown to fit a latency budget
    with pytest.raises(NoOptionFits) as e:
        pick([worst_only], RequestBudget(latency_s=10.0, source={"latency_s": "X-H"}))
    assert e.value.param == "X-H" and "expected_latency_s" in e.value.message
    with pytest.raises(ConfigError, match="train_accuracy"):
        option_from_meta("bad", {"train_accuracy": 93}, {})
    with pytest.raises(ConfigError, match="expected_flops_norm"):
        option_from_meta("bad", {"expected_flops_norm": "cheap"}, {})


def test_request_budget_keeps_the_tightest_cap_and_its_source() -> None:
    b = RequestBudget.combine(
        ("flops_norm", 10.0, "--budget"),
        ("flops_norm", 4.0, "X-Moagraph-Budget-Flops"),
        ("flops_norm", 6.0, "moagraph.budget_flops"),
        ("dollars", None, "moagraph.budget_dollars"),
    )
    assert b.flops_norm == 4.0 and b.dollars is None
    assert b.param("flops_norm") == "X-Moagraph-Budget-Flops"


def test_a_set_from_names_commas_and_a_directory(tmp_path: Path) -> None:
    for g in _graphs():
        g.save(tmp_path / f"{g.name}.yaml")
    rt = serve_runtime(POOL)
    a = resolve_served(rt, [f"gsm={tmp_path / 'small.yaml'},{tmp_path / 'big.yaml'}"])["gsm"]
    assert isinstance(a, GraphSet) and [g.name for g in a.graphs] == ["small", "big"]
    d = resolve_served(rt, [f"gsm={tmp_path}"])["gsm"]
    assert isinstance(d, GraphSet) and [g.name for g in d.graphs] == ["big", "small", "vote3"]
    assert isinstance(resolve_served(rt, [f"one={tmp_path / 'big.yaml'}"])["one"], Graph)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no \\*.yaml"):
        resolve_served(rt, [f"gsm={empty}"])


# --- served: the official client over loopback ---------------------------------------------


def test_models_list_shows_the_options(server: Any) -> None:
    srv, _ = server
    info = _client(srv).models.retrieve("gsm").model_extra["moagraph"]
    assert [o["option"] for o in info["options"]] == ["small", "vote3", "big"]
    small = info["options"][0]
    assert small["cost_source"]["flops_norm"] == "worst_case"  # no measured cost recorded
    assert info["options"][2]["expected"]["flops_norm"] == 150.0


def test_no_budget_answers_with_the_best_option(server: Any) -> None:
    srv, _ = server
    r = _ask(_client(srv))
    ext = r.model_extra["moagraph"]
    assert ext["pick"]["option"] == "big" and "no budget" in ext["pick"]["reason"]
    assert {n["model"] for n in ext["nodes"]} == {BIG}
    assert r.choices[0].message.content  # the recorded answer


def test_a_body_budget_picks_the_best_option_expected_to_fit(server: Any) -> None:
    srv, _ = server
    r = _ask(_client(srv), extra_body={"moagraph": {"budget_flops": 20}})
    ext = r.model_extra["moagraph"]
    p = ext["pick"]
    assert p["option"] == "vote3" and p["fits_by"] == "expected"
    assert p["expected"]["flops_norm"] == 8.0 and p["budget"] == {"flops_norm": 20.0}
    assert p["budget_fields"] == {"flops_norm": "moagraph.budget_flops"}
    assert [x["option"] for x in p["not_fit"]] == ["big"]
    assert "expected 150 > budget 20" in p["not_fit"][0]["why"]
    assert "highest quality that fits" in p["reason"]
    assert {n["model"] for n in ext["nodes"] if n["model"]} == set(VOTERS)
    assert ext["flops_normalised"] <= 20  # capped at run time too
    assert r.model == "gsm"


def test_a_header_budget_picks_the_cheaper_option(server: Any) -> None:
    srv, _ = server
    r = _ask(_client(srv), extra_headers={"X-Moagraph-Budget-Flops": "6"})
    p = r.model_extra["moagraph"]["pick"]
    assert p["option"] == "small" and p["budget_fields"] == {
        "flops_norm": "X-Moagraph-Budget-Flops"
    }
    assert p["cost_source"]["flops_norm"] == "worst_case"
    assert "worst case: no measured cost" in p["reason"]
    assert {x["option"] for x in p["not_fit"]} == {"vote3", "big"}
    # header and body together: the tighter wins, and the response says which set it
    r2 = _ask(
        _client(srv),
        extra_headers={"X-Moagraph-Budget-Flops": "500"},
        extra_body={"moagraph": {"budget_flops": 6}},
    )
    assert r2.model_extra["moagraph"]["pick"]["option"] == "small"
    assert r2.model_extra["moagraph"]["pick"]["budget_fields"]["flops_norm"] == (
        "moagraph.budget_flops"
    )


def test_an_option_whose_always_run_calls_break_the_guard_does_not_fit(server: Any) -> None:
    """vote3 is expected at 8, but its three calls at max_tokens 256 may cost ~15: the
    run-time guard would refuse them, so a budget of 10 picks the single model."""
    srv, _ = server
    r = _ask(_client(srv), extra_body={"moagraph": {"budget_flops": 10}})
    p = r.model_extra["moagraph"]["pick"]
    assert p["option"] == "small"
    why = {x["option"]: x["why"] for x in p["not_fit"]}
    assert "calls that always run may cost up to" in why["vote3"]
    assert r.model_extra["moagraph"]["flops_normalised"] <= 10


def test_latency_and_dollar_budgets_pick_by_recorded_expected_costs(server: Any) -> None:
    srv, _ = server
    c = _client(srv)
    r = _ask(c, extra_headers={"X-Moagraph-Budget-Latency-S": "3"})
    p = r.model_extra["moagraph"]["pick"]
    assert p["option"] == "vote3"  # small records no latency; big's 6 s is over
    assert any("no expected seconds" in x["why"] for x in p["not_fit"])
    r = _ask(c, extra_body={"moagraph": {"budget_dollars": 0.01}})
    assert r.model_extra["moagraph"]["pick"]["option"] == "big"  # $0.004 fits


def test_a_budget_nothing_fits_is_refused_in_openai_format(server: Any) -> None:
    srv, _ = server
    c = _client(srv)
    with pytest.raises(openai.BadRequestError) as e:
        _ask(c, extra_body={"moagraph": {"budget_flops": 0.5}})
    err = e.value.body
    assert e.value.status_code == 400
    assert err["code"] == "budget_exceeded" and err["type"] == "invalid_request_error"
    assert err["param"] == "moagraph.budget_flops"
    assert "'small'" in err["message"] and "raise moagraph.budget_flops" in err["message"]
    with pytest.raises(openai.BadRequestError) as e2:
        _ask(c, extra_headers={"X-Moagraph-Budget-Flops": "0.5"})
    assert e2.value.body["param"] == "X-Moagraph-Budget-Flops"
    with pytest.raises(openai.BadRequestError) as e3:
        _ask(c, extra_headers={"X-Moagraph-Budget-Flops": "lots"})
    assert e3.value.body["param"] == "X-Moagraph-Budget-Flops"
    assert e3.value.body["code"] == "invalid_value"


def test_a_streamed_answer_carries_the_pick(server: Any) -> None:
    srv, _ = server
    chunks = list(_ask(_client(srv), stream=True, extra_body={"moagraph": {"budget_flops": 20}}))
    last = chunks[-1].model_extra["moagraph"]
    assert last["pick"]["option"] == "vote3"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)


def test_a_fixed_graph_over_a_dollar_budget_is_refused_and_a_set_of_scripted_models_picks() -> None:
    """Fixed graphs keep refusing (now on dollars too); the same graphs as a set pick.
    Scripted models with prices (the zeroeval recordings carry none)."""
    from moagraph.graph.testing import ScriptedBackend, fake_pool
    from moagraph.models.runtime import PoolRuntime
    from moagraph.serve.runtime import ServeRuntime

    pool = fake_pool("m1", "m2")
    backend = ScriptedBackend(respond=lambda r: f"{r.model.name}: 3")
    runtime = ServeRuntime(PoolRuntime(pool, overrides={m: backend for m in pool.names}))
    one = Graph(
        name="one",
        nodes=[Node(id="a", model="m1", max_tokens=32)],
        sink="a",
        meta={"train_accuracy": 0.5},
    )
    two = Graph(
        name="two",
        nodes=[Node(id="a", model="m2", max_tokens=32)],
        sink="a",
        meta={"train_accuracy": 0.7},
    )
    app = create_app(runtime, graphs={"fixed": two, "set": [one, two]})
    est = {o["option"]: o["expected"]["dollars"] for o in app.state.served["set"].info.options}
    assert 0 < est["one"] < est["two"]
    budget = (est["one"] + est["two"]) / 2
    with ServerThread(app) as srv:
        c = _client(srv)
        msgs = [{"role": "user", "content": "What is 1 + 2?"}]
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(
                model="fixed",
                messages=msgs,
                extra_headers={"X-Moagraph-Budget-Dollars": str(budget)},
            )
        assert e.value.body["param"] == "X-Moagraph-Budget-Dollars"
        assert e.value.body["code"] == "budget_exceeded"
        r = c.chat.completions.create(
            model="set", messages=msgs, extra_headers={"X-Moagraph-Budget-Dollars": str(budget)}
        )
    assert r.model_extra["moagraph"]["pick"]["option"] == "one"
    assert r.choices[0].message.content == "m1: 3"
    assert r.model_extra["moagraph"]["dollars"] <= budget
