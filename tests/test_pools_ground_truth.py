"""Ground-truth pools: ZeroEval / MMLU-Pro importers, bundled pools, exact replay,
labels vs the grader, hybrid pools, splits. Uses tests/fixtures/ground_truth
(real rows, see its README) and the bundled pools; needs no shared data except
where a test says so (it then skips)."""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import moagraph
from moagraph.graph.testing import ScriptedBackend
from moagraph.models.cost import call_flops
from moagraph.models.pool import load_pool
from moagraph.models.runtime import PoolRuntime
from moagraph.pools import resolve_pool
from moagraph.pools.catalog import model_info
from moagraph.pools.combine import extend_pool
from moagraph.pools.ground_truth import import_mmlu_pro, import_zeroeval, select_models
from moagraph.pools.schema import ReplayFormatError, read_records, summarize
from moagraph.pools.splits import split_ids
from moagraph.tasks.base import Example

FIX = Path(__file__).parent / "fixtures" / "ground_truth"
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MOAGRAPH_DATA_DIR", REPO.parent / "shared" / "data"))


def _cli():
    from moagraph.cli import _register, app

    _register()
    return app


def _csv_acc(path: Path, ids: set[str] | None = None) -> dict[str, float]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    key = "id" if "id" in rows[0] else "question_id"
    skip = {"id", "answer", "question_id", "category", "src"}
    out = {}
    for m in rows[0]:
        if m in skip:
            continue
        vals = [int(r[m]) for r in rows if r[m] != "" and (ids is None or r[key] in ids)]
        if vals:
            out[m] = sum(vals) / len(vals)
    return out


def test_zeroeval_import_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "ze"
    pool = import_zeroeval(FIX / "zeroeval-math-l5", out)
    recs = read_records(out / "records.jsonl.gz")
    with gzip.open(FIX / "zeroeval-math-l5" / "outputs.jsonl.gz", "rt", encoding="utf-8") as fh:
        raw = {(f"zeroeval-math/{r['id']}", r["model"]): r for r in map(json.loads, fh)}
    assert len(recs) == len(raw)
    for r in recs:
        src = raw[(r.query_id, r.model)]
        assert r.text == src["output"]  # full text, byte for byte
        assert r.score == float(src["correct"])
        assert r.completion_tokens == -(-len(src["output"]) // 4)  # chars/4 of the full text
        assert "completion_tokens" in r.meta["estimated"]
    acc = {s.model: s.score_mean for s in summarize(recs)}
    assert acc == pytest.approx(_csv_acc(FIX / "zeroeval-math-l5" / "correctness.csv"))
    assert set(pool.names) == set(acc)
    # architectures from the catalog, MoE/closed marked
    assert (pool["Qwen2.5-7B-Instruct"].layers, pool["Qwen2.5-7B-Instruct"].hidden_size) == (
        28,
        3584,
    )
    assert pool["gpt-4o-mini-2024-07-18"].extra["size_estimated"] is True
    assert pool["gpt-4o-mini-2024-07-18"].price_out == 0.60


def test_zeroeval_import_options_and_truncation(tmp_path: Path) -> None:
    out = tmp_path / "ze"
    pool = import_zeroeval(
        FIX / "zeroeval-math-l5", out, max_params_b=10, full_text_max_b=5, keep_chars=100
    )
    assert set(pool.names) == {
        "Qwen2.5-7B-Instruct",
        "gemma-2-9b-it",
        "Meta-Llama-3.1-8B-Instruct",
        "Phi-3-mini-4k-instruct",
    }  # closed gpt-4o-mini and 72B dropped
    recs = read_records(out / "records.jsonl.gz")
    phi = [r for r in recs if r.model == "Phi-3-mini-4k-instruct"]
    qwen = [r for r in recs if r.model == "Qwen2.5-7B-Instruct"]
    assert not any(r.meta.get("text_truncated") for r in phi)
    assert all(len(r.text) <= 106 for r in qwen)
    assert any(r.meta.get("text_truncated") for r in qwen)
    pool2 = import_zeroeval(FIX / "zeroeval-math-l5", tmp_path / "b", exclude_closed=True)
    assert "gpt-4o-mini-2024-07-18" not in pool2
    with pytest.raises(ValueError, match="not-a-model"):
        import_zeroeval(FIX / "zeroeval-math-l5", tmp_path / "c", models=["not-a-model"])


def test_gsm_ids_match_the_gsm8k_task(tmp_path: Path) -> None:
    import_zeroeval(FIX / "zeroeval-gsm", tmp_path / "g")
    q = [json.loads(x) for x in (tmp_path / "g" / "queries.jsonl").read_text().splitlines()]
    assert q[0]["query_id"] == "gsm8k/test/0" and q[0]["reference"] == "18"


def test_import_handles_more_questions_than_shipped(tmp_path: Path) -> None:
    """A folder with extra questions (as the kept-back data) imports the same way."""
    d = tmp_path / "bigger"
    shutil.copytree(FIX / "zeroeval-gsm", d)
    qs = (d / "questions.jsonl").read_text().splitlines()
    new = json.loads(qs[0])
    new.update(id="gsm8k-main-test-#1318", question="How many?", answer="# 1,000")
    (d / "questions.jsonl").write_text("\n".join([*qs, json.dumps(new)]) + "\n")
    with open(d / "correctness.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    rows.append(["gsm8k-main-test-#1318", "# 1,000", *["1"] * (len(rows[0]) - 2)])
    with open(d / "correctness.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with gzip.open(d / "outputs.jsonl.gz", "rt") as fh:
        outs = fh.read().splitlines()
    for m in rows[0][2:]:
        outs.append(
            json.dumps({"id": new["id"], "model": m, "output": '{"answer": "1000"}', "correct": 1})
        )
    with gzip.open(d / "outputs.jsonl.gz", "wt") as fh:
        fh.write("\n".join(outs) + "\n")
    import_zeroeval(d, tmp_path / "out")
    recs = read_records(tmp_path / "out" / "records.jsonl.gz")
    assert {r.query_id for r in recs} >= {"gsm8k/test/1318"}
    assert len({r.query_id for r in recs}) == 21


def _break(src: Path, dst: Path, line: int, edit) -> Path:
    shutil.copytree(src, dst)
    with gzip.open(dst / "outputs.jsonl.gz", "rt") as fh:
        rows = fh.read().splitlines()
    rows[line - 1] = edit(rows[line - 1])
    with gzip.open(dst / "outputs.jsonl.gz", "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    return dst


def test_malformed_dump_names_file_line_and_field(tmp_path: Path) -> None:
    def drop_correct(s: str) -> str:
        r = json.loads(s)
        del r["correct"]
        return json.dumps(r)

    d = _break(FIX / "zeroeval-math-l5", tmp_path / "a", 3, drop_correct)
    with pytest.raises(
        ReplayFormatError, match=r"outputs\.jsonl\.gz line 3: field `correct` is missing"
    ):
        import_zeroeval(d, tmp_path / "o1")

    def bad_correct(s: str) -> str:
        r = json.loads(s)
        r["correct"] = 2
        return json.dumps(r)

    d = _break(FIX / "zeroeval-math-l5", tmp_path / "b", 5, bad_correct)
    with pytest.raises(ReplayFormatError, match=r"line 5: field `correct` is 2"):
        import_zeroeval(d, tmp_path / "o2")

    d = _break(FIX / "zeroeval-math-l5", tmp_path / "c", 2, lambda s: s[:40])
    with pytest.raises(ReplayFormatError, match=r"line 2: not valid JSON"):
        import_zeroeval(d, tmp_path / "o3")

    d = tmp_path / "d"
    shutil.copytree(FIX / "mmlu_pro", d)
    lines = (d / "correctness.csv").read_text().splitlines()
    cells = lines[4].split(",")
    cells[5] = "yes"
    lines[4] = ",".join(cells)
    (d / "correctness.csv").write_text("\n".join(lines) + "\n")
    col = lines[0].split(",")[5]
    with pytest.raises(
        ReplayFormatError, match=rf"correctness\.csv line 5: column `{col}` is 'yes'"
    ):
        import_mmlu_pro(d, tmp_path / "o4")


def test_mmlu_pro_import(tmp_path: Path) -> None:
    pool = import_mmlu_pro(FIX / "mmlu_pro", tmp_path / "mp", exclude_closed=True)
    recs = read_records(tmp_path / "mp" / "records.jsonl.gz")
    with open(FIX / "mmlu_pro" / "predictions.csv", newline="") as fh:
        preds = {r["question_id"]: r for r in csv.DictReader(fh)}
    for r in recs:
        p = preds[r.query_id.split("/", 1)[1]][r.model]
        assert r.meta["synthetic_text"] is True
        assert r.text == (f"The answer is ({p})." if p not in ("", "NONE") else r.text)
        assert r.completion_tokens == 250
    acc = {m.model: m.score_mean for m in json_summary(tmp_path / "mp")}
    csv_acc = _csv_acc(FIX / "mmlu_pro" / "correctness.csv")
    assert acc == pytest.approx({m: v for m, v in csv_acc.items() if m in pool})
    assert not any(m.extra.get("closed") for m in pool.models)
    mix = pool["Mixtral-8x7B-Instruct-v0.1"]
    assert mix.params_b == 12.9 and mix.extra["params_total_b"] == 46.7  # MoE: active params


def json_summary(d: Path):
    from moagraph.pools.schema import PoolSummary

    return PoolSummary.model_validate_json((d / "summary.json").read_text()).models


def test_catalog_and_selection() -> None:
    assert (model_info("Meta-Llama-3.1-405B-Instruct@hyperbolic").layers) == 126
    assert model_info("Mixtral-8x7B-Instruct-v0.1").params_b == 12.9
    assert model_info("claude-3-opus-20240229").closed
    with pytest.raises(ValueError, match="catalog"):
        model_info("totally-unknown-7b")
    names = ["gemma-2-2b-it", "Qwen2-72B-Instruct", "gpt-4o-2024-05-13"]
    assert select_models(names, max_params_b=8.5) == ["gemma-2-2b-it"]
    assert select_models(names, exclude_closed=True) == names[:2]


@pytest.mark.parametrize("name", ["zeroeval-gsm8k", "zeroeval-math", "mmlu-pro"])
def test_bundled_pool_show_lists_models_and_estimates(name: str) -> None:
    res = CliRunner().invoke(_cli(), ["pool", "show", name])
    assert res.exit_code == 0, res.output
    assert "best single:" in res.output and "some model right:" in res.output
    assert "~ = estimate" in res.output
    pool = load_pool(resolve_pool(name))
    for m in pool.models:
        assert m.name in res.output
    if name == "mmlu-pro":
        assert "SYNTHETIC" in res.output


@pytest.mark.parametrize(("pool", "sub"), [("zeroeval-math", "math-l5"), ("zeroeval-gsm8k", "gsm")])
def test_bundled_accuracy_equals_correctness_csv(pool: str, sub: str) -> None:
    path = DATA / "zeroeval" / sub / "correctness.csv"
    if not path.exists():
        pytest.skip("needs shared/data/zeroeval (full correctness.csv)")
    summ = json.loads((resolve_pool(pool).parent / "summary.json").read_text())
    ours = {m["model"]: m["score_mean"] for m in summ["models"]}
    assert ours == pytest.approx(_csv_acc(path))


def _vote_graph():
    return moagraph.builders.parallel_vote(
        ["Qwen2.5-7B-Instruct", "gemma-2-9b-it", "Meta-Llama-3.1-8B-Instruct"]
    )


def test_exact_replay_vote_cli_no_live_call(tmp_path: Path) -> None:
    g = tmp_path / "vote.json"
    g.write_text(json.dumps(_vote_graph().to_dict()))
    res = CliRunner().invoke(
        _cli(),
        [
            "eval",
            "--pool",
            "zeroeval-math",
            "--task",
            "math",
            "--split",
            "zeroeval",
            "--graph",
            str(g),
            "--n",
            "40",
            "--store",
            str(tmp_path / "r.sqlite"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "errors" in res.output
    row = next(ln for ln in res.output.splitlines() if "errors" in ln)
    assert row.split("│")[-2].strip() == "0"  # every call was answered from the recording


def test_vote_accuracy_equals_labels() -> None:
    """The vote's winner is a recorded output; its recorded label is the ground truth.
    moagraph's grader gives the same accuracy except on known upstream mistakes."""
    pool = load_pool(resolve_pool("zeroeval-math"))
    task = moagraph.get_task("math")
    exs = task.load("zeroeval")
    ex = moagraph.GraphExecutor(PoolRuntime(pool), task)
    g = _vote_graph()

    async def go() -> tuple[list[float], list[float], list[str]]:
        labels, grades, diff = [], [], []
        for e in exs:
            t = await ex.run(g, e)
            assert t.error is None
            labels.append(float(t.meta["sink_score"]))
            grades.append(task.grade(t.output, e))
            if labels[-1] != grades[-1]:
                diff.append(e.id)
        return labels, grades, diff

    labels, grades, diff = asyncio.run(go())
    # 698: ZeroEval's first-number rule accepts "2, -1" for the reference "2".
    assert diff == ["zeroeval-math/698"]
    assert abs(sum(labels) - sum(grades)) == 1


def test_hybrid_pool_flops_of_recorded_nodes_from_recorded_lengths(tmp_path: Path) -> None:
    pool = extend_pool(
        "zeroeval-math",
        ["local"],
        tmp_path / "hybrid.yaml",
        models=["Qwen2.5-7B-Instruct", "gemma-2-9b-it"],
    )
    pool = load_pool(tmp_path / "hybrid.yaml")
    assert {m.backend for m in pool.models} == {"replay", "llamacpp"}
    live = pool.models[-1].name
    fake = ScriptedBackend(respond=lambda r: "\\boxed{7}")
    task = moagraph.get_task("math")
    e = task.load("zeroeval", n=1, seed=3)[0]
    graph = moagraph.builders.moa([["Qwen2.5-7B-Instruct", "gemma-2-9b-it"]], aggregator=live)
    ex = moagraph.GraphExecutor(PoolRuntime(pool, overrides={live: fake}), task)
    trace = asyncio.run(ex.run(graph, e))
    assert trace.error is None and trace.output == "\\boxed{7}"
    recs = {
        (r.model, r.query_id): r
        for r in read_records(resolve_pool("zeroeval-math").parent / "records.jsonl.gz")
        if r.query_id == e.id
    }
    for node in trace.nodes:
        if node.model in ("Qwen2.5-7B-Instruct", "gemma-2-9b-it"):
            r = recs[(node.model, e.id)]
            assert node.flops == pytest.approx(
                call_flops(pool[node.model], r.prompt_tokens, r.completion_tokens)
            )
    assert len(fake.calls) == 1 and fake.calls[0].model == live


def test_split_ids_deterministic_and_stable() -> None:
    ids = [f"q{i}" for i in range(2000)]
    a = split_ids(ids, seed=0)
    assert {k: sorted(v) for k, v in a.items()} == {
        k: sorted(v) for k, v in split_ids(list(reversed(ids)), seed=0).items()
    }
    assert sum(map(len, a.values())) == 2000 and not set(a["train"]) & set(a["test"])
    assert abs(len(a["train"]) / 2000 - 0.5) < 0.05 and abs(len(a["test"]) / 2000 - 0.3) < 0.05
    grown = split_ids([*ids, "new1", "new2"], seed=0)
    assert set(a["test"]) <= set(grown["test"])  # a growing pool keeps assignments
    assert split_ids(ids, seed=1) != a
    with pytest.raises(ValueError, match="sum to 1"):
        split_ids(ids, fractions=(0.5, 0.5, 0.5))


def test_new_tasks_offline() -> None:
    mp = moagraph.get_task("mmlu-pro")
    ex = Example(id="x", question="q", reference="J", meta={"choices": [str(i) for i in range(10)]})
    assert mp.grade("Step by step ... The answer is (J).", ex) == 1.0
    assert mp.grade("The answer is (C).", ex) == 0.0
    qs = mp.load("test", n=5)
    assert all(e.id.startswith("mmlu-pro/") and e.reference in "ABCDEFGHIJ" for e in qs)
    mm = moagraph.get_task("mmlu").load("sample")
    assert len(mm) == 114 and all(e.reference in "ABCD" for e in mm)
    mb = moagraph.get_task("mbpp").load("sample")
    assert len(mb) == 20 and all(11 <= int(e.id.split("/")[1]) <= 510 for e in mb)
