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
