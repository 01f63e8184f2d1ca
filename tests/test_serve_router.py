"""A router trained by `moagraph route train` served by `moagraph serve` (real server, openai client)."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from typer.testing import CliRunner

from moagraph.cli import _register, app
from moagraph.pools import resolve_pool
from moagraph.serve import create_app
from moagraph.serve.config import ServeConfig
from moagraph.serve.testing import ServerThread


@pytest.mark.needs_shared_data("alpaca_eval", "labels.jsonl.gz")  # `route train` reads the labels
def test_trained_router_file_is_served_on_the_recorded_pool(tmp_path: Path) -> None:
    _register()
    router = tmp_path / "router.npz"
    trained = CliRunner().invoke(
        app, ["route", "train", "--pool", "alpaca_eval", "--encoder", "hashing", "-o", str(router)]
    )
    assert trained.exit_code == 0, trained.output
    assert router.exists()

    config = ServeConfig(store=tmp_path / "serve.sqlite")
    fastapi_app = create_app("alpaca_eval", routers={"auto": router}, config=config)
    queries = resolve_pool("alpaca_eval").parent / "queries.jsonl"
    question = json.loads(queries.read_text(encoding="utf-8").splitlines()[0])["question"]
    with ServerThread(fastapi_app) as srv:
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["auto"]
        r = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": question}]
        )
    ext = r.model_extra["moagraph"]
    assert r.choices[0].message.content  # a recorded answer of one of the routed models
    assert ext["kind"] == "router" and ext["flops"] > 0
    answered = {
        n["model"] for n in ext["nodes"] if n["role"] == "assistant" and n["completion_tokens"]
    }
    assert 1 <= len(answered) <= 3  # top-k of 21 models, not the dense pool
    route = ext["route"]  # which models answered, and the scores that chose them
    assert set(route["rounds"][0]["answered"]) == answered
    assert route["stop_reason"] and route["final"] and len(route["prior"]) == 21


def test_router_run_is_capped_by_the_request_budget(tmp_path: Path) -> None:
    """A router's plan passes the budget check, then its run is capped by the same budget:
    the server scopes the request's budget over the router's query run, which reserves each
    call's upper bound (prompt bytes + max_tokens) and refuses the calls that no longer fit."""
    import re

    from moagraph.graph.testing import ScriptedBackend, fake_pool
    from moagraph.models.runtime import PoolRuntime
    from moagraph.route.baselines import DenseMoA
    from moagraph.serve.runtime import ServeRuntime

    pool = fake_pool("m1", "m2", "m3")
    backend = ScriptedBackend(
        respond=lambda r: " ".join(["so"] * (r.params.max_tokens - 1) + ["3"])
    )
    runtime = ServeRuntime(PoolRuntime(pool, overrides={m: backend for m in pool.names}))
    router = DenseMoA(runtime, layers=2, max_tokens=256)
    config = ServeConfig(store=tmp_path / "serve.sqlite")
    messages = [{"role": "user", "content": "What is 1 + 2?"}]
    with ServerThread(create_app(runtime, {"dense": router}, config=config)) as srv:
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as e:  # learn the plan's estimate
            client.chat.completions.create(
                model="dense", messages=messages, extra_body={"moagraph": {"budget_flops": 0.01}}
            )
        m = re.search(r"estimated at ([0-9.e+]+)", str(e.value))
        assert m, str(e.value)
        budget = 1.1 * float(m.group(1))  # passes the estimate
        r = client.chat.completions.create(
            model="dense", messages=messages, extra_body={"moagraph": {"budget_flops": budget}}
        )
    ext = r.model_extra["moagraph"]
    route = ext["route"]
    assert route["budget"]["max_flops_norm"] == pytest.approx(budget)
    assert route["skipped_calls"], route  # layer 2 reads 3 long answers: its bound does not fit
    assert 0 < ext["flops_normalised"] <= budget
    assert len(backend.calls) == ext["calls"] < 7  # 3 + 3 + aggregator unbudgeted
