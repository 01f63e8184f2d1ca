"""Importers: AlpacaEval (real data) and the generic JSONL importer; `pool show`."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moagraph.models.base import ReplayMiss
from moagraph.models.pool import load_pool
from moagraph.models.runtime import PoolRuntime
from moagraph.pools import resolve_pool
from moagraph.pools.importers import KNOWN_ARCH, estimate_arch, import_alpaca_eval, import_jsonl
from moagraph.pools.schema import ReplayFormatError, read_queries, read_records

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MOAGRAPH_DATA_DIR", REPO.parent / "shared" / "data"))
AE = DATA / "alpaca_eval"
N = 30

needs_ae = pytest.mark.skipif(
    not (AE / "outputs.jsonl.gz").exists(), reason="shared/data/alpaca_eval missing"
)


def _raw(name: str) -> list[dict]:
    with gzip.open(AE / name, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def ae_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ae") / "pool"
    import_alpaca_eval(AE, out, limit=N, tokens="chars4")
    return out


def _cli():
    from moagraph.cli import _register, app

    _register()
    return app


@needs_ae
def test_alpaca_slice_counts_and_labels(ae_slice: Path) -> None:
    first_ids = sorted(int(r["id"]) for r in _raw("instructions.jsonl.gz"))[:N]
    keep = {str(i) for i in first_ids}
    outputs = [r for r in _raw("outputs.jsonl.gz") if str(r["id"]) in keep]
    labels = {(str(r["id"]), r["model"]): r["preference"] for r in _raw("labels.jsonl.gz")}
    models = json.loads((AE / "models.json").read_text())

    recs = read_records(ae_slice / "records.jsonl.gz")
    queries = read_queries(ae_slice / "queries.jsonl")
    assert len(queries) == N
    assert {q.query_id for q in queries} == keep
    assert len(recs) == len(outputs)
    assert {r.model for r in recs} == set(models)  # closed models kept, with assumptions
    texts = {(str(r["id"]), r["model"]): r["output"] for r in outputs}
    for r in recs:
        assert r.text == texts[(r.query_id, r.model)]
        assert r.sample == 0
        pref = labels.get((r.query_id, r.model))
        if pref is None:
            assert r.score is None
        else:
            assert r.score == pytest.approx(min(1.0, max(0.0, pref - 1.0)))
        assert r.completion_tokens == -(-len(r.text) // 4)  # chars/4 estimate, rounded up


@needs_ae
def test_alpaca_pool_validates_with_documented_estimates(ae_slice: Path) -> None:
    pool = load_pool(ae_slice / "pool.yaml")
    assert len(pool.models) == 21
    assert all(m.backend == "replay" for m in pool.models)
    assert pool["vicuna-13b-v1.5"].layers == 40 and pool["vicuna-13b-v1.5"].hidden_size == 5120
    assert pool["phi-2"].layers == 32 and pool["phi-2"].hidden_size == 2560
    mini = pool["minichat-3b"]
    assert mini.extra["arch_estimated"] is True and (
        mini.layers,
        mini.hidden_size,
    ) == estimate_arch(3.0)
    for closed in ("gpt-3.5-turbo-1106", "claude-2.1"):
        m = pool[closed]
        assert m.extra["params_assumed"] is True
        assert m.price_in > 0 and m.price_out > 0 and "price_note" in m.extra
    readme = (ae_slice / "README.md").read_text()
    assert "preference - 1" in readme and "assumed" in readme


def test_arch_estimate_is_close_to_known_architectures() -> None:
    # The rule is only useful if it lands near real configs of the same size.
    sizes = {
        "vicuna-7b-v1.5": 6.74,
        "vicuna-13b-v1.5": 13.0,
        "humpback-llama2-70b": 69.0,
        "OpenHermes-2.5-Mistral-7B": 7.24,
    }
    for name, pb in sizes.items():
        layers, hidden = estimate_arch(pb)
        kl, kh, _ = KNOWN_ARCH[name]
        assert abs(layers - kl) / kl < 0.15, name
        assert abs(hidden - kh) / kh < 0.15, name
    assert estimate_arch(0.268)[0] % 2 == 0


@needs_ae
async def test_strict_replay_of_imported_record(ae_slice: Path) -> None:
    raw = {
        (str(r["id"]), r["model"]): r["output"] for r in _raw("outputs.jsonl.gz") if r["id"] == 5
    }
    rt = PoolRuntime(load_pool(ae_slice / "pool.yaml"))
    msgs = [{"role": "user", "content": "any prompt: replay keys on the query id"}]
    c = await rt.complete("FuseChat-Gemma-2-9B-Instruct", msgs, query_id="5")
    assert c.text == raw[("5", "FuseChat-Gemma-2-9B-Instruct")]
    assert c.backend == "replay"
    with pytest.raises(ReplayMiss):
        await rt.complete("FuseChat-Gemma-2-9B-Instruct", msgs, query_id="5", sample_index=1)
    with pytest.raises(ReplayMiss):  # outside the 30-instruction slice
        await rt.complete("phi-2", msgs, query_id="700")
    await rt.aclose()


@needs_ae
def test_shipped_alpaca_pool_matches_source() -> None:
    path = resolve_pool("alpaca_eval")
    pool = load_pool(path)
    assert len(pool.models) == 21
    recs = read_records(path.parent / "records.jsonl.gz")
    assert len(recs) == len(_raw("outputs.jsonl.gz"))
    labels = {(str(r["id"]), r["model"]): r["preference"] - 1 for r in _raw("labels.jsonl.gz")}
    scored = [r for r in recs if r.score is not None]
    assert len(scored) == len(labels)
    for r in scored[::997]:
        assert r.score == pytest.approx(labels[(r.query_id, r.model)])


# ---------------------------------------------------------------- generic JSONL


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def user_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    models = tmp_path / "models.json"
    models.write_text(
        json.dumps(
            [
                {"name": "small", "params_b": 1.0, "layers": 16, "hidden_size": 2048},
                {"name": "big", "params_b": 13.0, "price_in": 0.5, "price_out": 1.5},
            ]
        )
    )
    queries = _write(
        tmp_path / "queries.jsonl",
        [
            {"query_id": "q1", "question": "What is 2+2?", "reference": "4"},
            {"query_id": 2, "question": "Capital of France?", "reference": "Paris"},
        ],
    )
    recs = _write(
        tmp_path / "recs.jsonl",
        [
            {"model_name": "small", "query_id": "q1", "sample": 0, "output": "4", "score": 1},
            {"model_name": "small", "query_id": "q1", "sample": 1, "output": "5", "score": 0},
            {
                "model_name": "big",
                "query_id": 2,
                "output": "Paris is the capital.",
                "score": 1.0,
                "prompt_tokens": 7,
                "completion_tokens": 5,
                "latency_s": 0.3,
            },
        ],
    )
    return recs, models, queries


def test_generic_import_roundtrip(tmp_path: Path, user_files: tuple[Path, Path, Path]) -> None:
    recs, models, queries = user_files
    out = tmp_path / "pool"
    pool = import_jsonl(
        recs, models, out, queries_path=queries, field_map={"model_name": "model", "output": "text"}
    )
    assert pool.names == ["small", "big"]
    assert pool["big"].extra["arch_estimated"] is True
    assert pool["small"].extra.get("arch_estimated") is None
    got = {r.key: r for r in read_records(out / "records.jsonl.gz")}
    assert got[("big", "2", 0)].prompt_tokens == 7  # given values kept
    est = got[("small", "q1", 1)]
    assert est.completion_tokens == 1 and est.prompt_tokens == -(-len("What is 2+2?") // 4)
    assert set(est.meta["estimated"]) == {"prompt_tokens", "completion_tokens", "latency_s"}
    loaded = load_pool(out / "pool.yaml")
    assert all(m.backend == "replay" for m in loaded.models)


@pytest.mark.parametrize(
    ("bad_line", "expect"),
    [
        ("{not json", "line 2: not valid JSON"),
        ({"model": "small", "query_id": "q1", "sample": 3}, "line 2: field `text` is required"),
        ({"model": "small", "query_id": "q1", "text": "x", "score": 1.5}, "line 2: field `score`"),
        (
            {"model": "huge", "query_id": "q1", "text": "x"},
            "line 2: field `model` 'huge' is not in the models file",
        ),
        ({"model": "small", "query_id": "q1", "text": "x", "sample": 0}, "line 2: duplicate"),
        (
            {"model": "small", "query_id": "q9", "text": "x", "sample": 4},
            "line 2: field `query_id` 'q9'",
        ),
        (
            {"model": "small", "query_id": "q1", "text": "x", "sample": 5, "tokens": 3},
            "field `tokens` is not a known field",
        ),
    ],
)
def test_generic_import_errors_name_line_and_field(
    tmp_path: Path, user_files: tuple[Path, Path, Path], bad_line: object, expect: str
) -> None:
    _, models, queries = user_files
    recs = _write(
        tmp_path / "bad.jsonl", [{"model": "small", "query_id": "q1", "text": "4"}, bad_line]
    )
    with pytest.raises(ReplayFormatError, match=expect.replace("(", r"\(").replace("`", "`")):
        import_jsonl(recs, models, tmp_path / "out", queries_path=queries)
    assert not (tmp_path / "out" / "pool.yaml").exists()


def test_models_file_needs_params(tmp_path: Path, user_files: tuple[Path, Path, Path]) -> None:
    recs, _, _ = user_files
    models = tmp_path / "m.json"
    models.write_text(json.dumps({"small": {"params_b": None}}))
    with pytest.raises(ValueError, match="`params_b` is required"):
        import_jsonl(recs, models, tmp_path / "out")


def test_cli_import_error_exits_2(tmp_path: Path, user_files: tuple[Path, Path, Path]) -> None:
    _, models, _ = user_files
    recs = _write(tmp_path / "bad.jsonl", [{"model": "small", "query_id": "q1"}])
    res = CliRunner().invoke(
        _cli(),
        [
            "pool",
            "import",
            "jsonl",
            str(recs),
            "--models-file",
            str(models),
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 2
    assert "Error:" in res.output and "line 1" in res.output and "Traceback" not in res.output


def test_cli_import_needs_models_file_and_keeps_the_old_spelling(
    tmp_path: Path, user_files: tuple[Path, Path, Path]
) -> None:
    recs, models, _ = user_files
    base = [
        "pool",
        "import",
        "jsonl",
        str(recs),
        "--map",
        "model_name=model",
        "--map",
        "output=text",
    ]
    res = CliRunner().invoke(_cli(), [*base, "-o", str(tmp_path / "a")])
    assert res.exit_code == 2 and "--models-file" in res.output and "Traceback" not in res.output
    # --models FILE (before --models became the a,b,c list everywhere): hidden, with a notice
    res = CliRunner().invoke(_cli(), [*base, "--models", str(models), "-o", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "--models FILE is deprecated" in res.output
    assert (tmp_path / "b" / "pool.yaml").exists()


def test_cli_import_and_show(tmp_path: Path, user_files: tuple[Path, Path, Path]) -> None:
    recs, models, queries = user_files
    out = tmp_path / "p"
    res = CliRunner().invoke(
        _cli(),
        [
            "pool",
            "import",
            "jsonl",
            str(recs),
            "--models-file",
            str(models),
            "-o",
            str(out),
            "--queries",
            str(queries),
            "--map",
            "model_name=model",
            "--map",
            "output=text",
        ],
    )
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(_cli(), ["pool", "show", str(out), "--plot", str(tmp_path / "q.png")])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if "│ small" in ln)
    cells = [c.strip() for c in line.split("│") if c.strip()]
    assert cells[3] == "0.500"  # mean of scores 1 and 0
    assert cells[-1] == "2" and cells[-2] == "1"  # samples, queries
    assert (tmp_path / "q.png").stat().st_size > 1000
