"""Issue 10: bad input gives a clear error naming the file/field and the fix; resumes
refuse to mix configurations; large graphs validate quickly (timing: benchmarks/bench_validate.py)."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moagraph.graph.spec import Graph, GraphError
from moagraph.graph.testing import ArithmeticTask
from moagraph.graph.trace import Trace
from moagraph.models.base import Completion, LLMRequest, TokenCallback
from moagraph.models.pool import ModelSpec, Pool, PoolError, load_pool, pool_from_dict
from moagraph.store import RunStore, RunStoreError, config_diff
from moagraph.tasks.base import TaskError
from moagraph.tasks.registry import get_task

# --- graphs: finite, in-range node fields; big graphs ------------------------------


def _one_node(**fields: object) -> dict:
    return {"name": "g", "nodes": [{"id": "a", "model": "m", **fields}], "sink": "a"}


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("temperature", float("inf"), "finite"),
        ("temperature", float("nan"), "finite"),
        ("temperature", -0.5, "greater than or equal to 0"),
        ("max_tokens", 0, "greater than or equal to 1"),
        ("max_tokens", -5, "greater than or equal to 1"),
        ("sample_index", -1, "greater than or equal to 0"),
    ],
)
def test_node_fields_must_be_finite_and_in_range(field: str, value: float, needle: str) -> None:
    with pytest.raises(GraphError) as err:
        Graph.from_dict(_one_node(**{field: value}), "g.yaml")
    msg = str(err.value)
    assert "g.yaml" in msg and "node 'a'" in msg and field in msg and needle in msg
    assert "remove it to use the default" in msg


def test_yaml_inf_temperature_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "g.yaml"
    p.write_text("nodes:\n  - {id: a, model: m, temperature: .inf}\nsink: a\n")
    with pytest.raises(GraphError, match="temperature"):
        Graph.load(p)


def test_valid_node_fields_still_load() -> None:
    g = Graph.from_dict(_one_node(temperature=0.0, max_tokens=1, sample_index=0))
    assert g.nodes[0].max_tokens == 1


def _chain(n: int) -> dict:
    nodes = [{"id": "n0", "model": "m"}]
    nodes += [{"id": f"n{i}", "model": "m", "inputs": [f"n{i - 1}"]} for i in range(1, n)]
    return {"name": "chain", "nodes": nodes, "sink": f"n{n - 1}"}


def test_10k_node_chain_and_wide_graph_validate() -> None:
    chain = Graph.from_dict(_chain(10_000))
    assert chain.depth == 10_000 and chain.width == 1
    wide = {
        "name": "wide",
        "nodes": [{"id": f"a{i}", "model": "m"} for i in range(9_999)]
        + [
            {
                "id": "agg",
                "role": "aggregator",
                "model": "m",
                "inputs": [f"a{i}" for i in range(9_999)],
            }
        ],
        "sink": "agg",
    }
    g = Graph.from_dict(wide)
    assert g.width == 9_999 and g.depth == 2


def test_10k_node_chain_keeps_the_rules() -> None:
    raw = _chain(10_000)
    raw["nodes"][0]["inputs"] = ["n9999"]  # close the chain into a ring
    with pytest.raises(GraphError, match=r"cycle n0 -> n1 -> .* -> n9999 -> n0 \(rule: acyclic\)"):
        Graph.from_dict(raw)
    raw = _chain(10_000)
    raw["nodes"].append({"id": "stray", "model": "m"})
    with pytest.raises(GraphError, match=r"node\(s\) 'stray' never reach the sink 'n9999'"):
        Graph.from_dict(raw)


def test_cycle_in_the_middle_is_named_in_edge_order() -> None:
    raw = {
        "nodes": [
            {"id": "s", "model": "m"},
            {"id": "a", "model": "m", "inputs": ["s", "c"]},
            {"id": "b", "model": "m", "inputs": ["a"]},
            {"id": "c", "model": "m", "inputs": ["b"]},
            {"id": "t", "model": "m", "inputs": ["c"]},
        ],
        "sink": "t",
    }
    with pytest.raises(GraphError, match=r"cycle a -> b -> c -> a"):
        Graph.from_dict(raw)


# --- pools -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_pool_params_b_must_be_finite(tmp_path: Path, value: str) -> None:
    p = tmp_path / "pool.yaml"
    p.write_text(
        "name: p\nmodels:\n"
        f"  - {{name: a, backend: replay, replay: r.jsonl, params_b: {value}, layers: 2, hidden_size: 8}}\n"
    )
    with pytest.raises(PoolError) as err:
        load_pool(p)
    msg = str(err.value)
    assert str(p) in msg and "model 'a', field `params_b`" in msg and "finite" in msg


@pytest.mark.parametrize("field", ["price_in", "price_out", "timeout_s"])
def test_other_pool_numbers_must_be_finite(field: str) -> None:
    spec = {
        "name": "a",
        "backend": "replay",
        "replay": "r",
        "params_b": 1,
        "layers": 2,
        "hidden_size": 8,
    }
    with pytest.raises(PoolError, match=field):
        pool_from_dict({"models": [{**spec, field: float("inf")}]})


def test_pool_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(PoolError, match=r"is a directory with no pool.yaml"):
        load_pool(tmp_path)


def test_pool_file_that_is_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "pool.yaml"
    p.write_bytes(b"name: \xff\xfe\x00bad\n")
    with pytest.raises(PoolError, match=r"cannot be read"):
        load_pool(p)


# --- run store -----------------------------------------------------------------------


def test_config_diff_names_the_deepest_field() -> None:
    old = {"graph": {"nodes": [{"id": "a", "model": "x"}]}, "seed": 0}
    new = {"graph": {"nodes": [{"id": "a", "model": "y"}]}, "seed": 0, "n": 3}
    assert config_diff(old, new) == [("graph.nodes.0.model", "x", "y"), ("n", "(not recorded)", 3)]
    assert config_diff(old, json.loads(json.dumps(old))) == []


def test_store_strict_resume(tmp_path: Path) -> None:
    with RunStore(tmp_path / "s.sqlite") as st:
        with pytest.raises(RunStoreError, match=r"'r' is not in .*drop --resume"):
            st.create_run("r", {"a": 1}, resume=True, strict=True)
        assert st.runs() == []
        st.create_run("r", {"a": 1, "t": (1, 2)})
        st.create_run("r", {"a": 1, "t": [1, 2]}, resume=True, strict=True)  # tuple == list
        with pytest.raises(RunStoreError, match=r"`a`: stored 1, now 2"):
            st.create_run("r", {"a": 2, "t": [1, 2]}, resume=True, strict=True)
        # lenient reopen (the server's request log): creates or reopens, config kept
        st.create_run("log", {"k": 1}, resume=True)
        assert st.create_run("log", {"k": 2}, resume=True).config == {"k": 1}


def test_store_disk_full_while_writing_results(mount_tmpfs) -> None:  # type: ignore[no-untyped-def]
    from conftest import fill_disk

    mnt = mount_tmpfs("256k")
    with RunStore(mnt / "runs.sqlite") as st:
        st.create_run("r", {})
        st.add_result("r", Trace(query_id="q0", policy="p", output="ok"))
        fill_disk(mnt)
        with pytest.raises(RunStoreError) as err:
            for i in range(20):
                st.add_result("r", Trace(query_id=f"q{i + 1}", policy="p", output="x" * 200_000))
        msg = str(err.value)
        assert "no space left" in msg and str(mnt / "runs.sqlite") in msg and "--store" in msg
    with sqlite3.connect(mnt / "runs.sqlite") as c:  # what was committed before is kept
        assert ("q0",) in c.execute("SELECT example_id FROM results").fetchall()


def test_store_garbage_file(tmp_path: Path) -> None:
    p = tmp_path / "s.sqlite"
    p.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(RunStoreError, match=r"is not a SQLite database or is corrupt"):
        RunStore(p)


# --- task data rows: file, line, field, fix ----------------------------------------


def _write(tmp_path: Path, rel: str, rows: list[object]) -> Path:
    p = tmp_path / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


GOOD = {
    "gsm8k": ("gsm8k/test.jsonl", {"question": "1+1?", "answer": "so #### 2"}),
    "math": ("math/test.jsonl", {"id": "m1", "problem": "1+1?", "solution": "\\boxed{2}"}),
    "humaneval": (
        "humaneval/humaneval-py.jsonl",
        {
            "name": "HumanEval_0_f",
            "prompt": "def f():\n",
            "test": "def check(c): pass",
            "entry_point": "f",
        },
    ),
    "mbpp": (
        "mbpp/test.jsonl",
        {"task_id": 11, "text": "Do it.", "test_list": ["assert f() == 1"]},
    ),
    "mmlu": ("mmlu/test.jsonl", {"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 1}),
}
BAD = [  # (task, field to break, replacement or None to delete, expected words)
    ("gsm8k", "answer", None, "lacks field `answer`"),
    ("gsm8k", "question", 7, "field `question` is int"),
    ("math", "solution", None, "lacks field `solution`"),
    ("math", "problem", ["x"], "field `problem` is list"),
    ("humaneval", "entry_point", None, "lacks field `entry_point`"),
    ("humaneval", "test", {"a": 1}, "field `test` is dict"),
    ("mbpp", "test_list", "assert x", "field `test_list` is str"),
    ("mbpp", "text", None, "lacks field `text`"),
    ("mmlu", "choices", None, "lacks field `choices`"),
    ("mmlu", "answer", 9, "answer index 9 is out of range"),
    ("mmlu", "answer", True, "field `answer` is bool"),
]


@pytest.mark.parametrize(("task", "field", "value", "needle"), BAD)
def test_bad_data_row_names_file_line_field_and_fix(
    tmp_path: Path, task: str, field: str, value: object, needle: str
) -> None:
    rel, good = GOOD[task]
    bad = dict(good)
    if value is None:
        del bad[field]
    else:
        bad[field] = value
    path = _write(tmp_path, rel, [good, good, bad])  # the bad row is line 3
    with pytest.raises(TaskError) as err:
        get_task(task, data_dir=tmp_path).load("test")
    msg = str(err.value)
    assert f"{path}:3" in msg and needle in msg and "fix or remove that line" in msg


@pytest.mark.parametrize("task", sorted(GOOD))
def test_good_rows_load_and_non_object_rows_are_named(tmp_path: Path, task: str) -> None:
    rel, good = GOOD[task]
    path = _write(tmp_path, rel, [good])
    split = "all" if task == "humaneval" else "test"
    assert len(get_task(task, data_dir=tmp_path).load(split)) == 1
    _write(tmp_path, rel, [good, [1, 2]])
    with pytest.raises(TaskError, match=rf"{path}:2: .*JSON object"):
        get_task(task, data_dir=tmp_path).load(split)


def test_data_file_that_is_not_utf8_or_gzip(tmp_path: Path) -> None:
    p = tmp_path / "gsm8k" / "test.jsonl"
    p.parent.mkdir()
    p.write_bytes(b'{"question": "\xff\xfe"}\n')
    with pytest.raises(TaskError, match=rf"data file {p} cannot be read"):
        get_task("gsm8k", data_dir=tmp_path).load("test")


def test_data_errors_reach_the_cli_without_traceback(tmp_path: Path) -> None:
    from moagraph.cli import _register, app

    _register()
    _write(tmp_path / "data", "gsm8k/test.jsonl", [{"question": "q"}])
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "--split",
            "test",
            "--data-dir",
            str(tmp_path / "data"),
            "--store",
            str(tmp_path / "r.sqlite"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert (
        "test.jsonl:1" in " ".join(res.output.split()).replace(" ", "")
        or "test.jsonl:1" in res.output
    )


# --- record resume: same model identity ----------------------------------------------


class _Fake:
    kind = "fake"

    def identity(self, model: ModelSpec) -> str:
        return f"fake:{model.name}"

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        return Completion(
            text="\\boxed{1}",
            prompt_tokens=5,
            completion_tokens=3,
            latency_s=0.0,
            model=request.model.name,
            backend="fake",
        )

    async def aclose(self) -> None:
        pass


async def test_record_resume_refuses_another_model_under_the_same_name(tmp_path: Path) -> None:
    from moagraph.models.runtime import PoolRuntime
    from moagraph.pools.record import RecordSettings, RecordSettingsError, record_pool

    def pool(endpoint_model: str) -> Pool:
        return Pool(
            name="live",
            models=[
                ModelSpec(
                    name="a",
                    backend="openai",
                    base_url="http://127.0.0.1:9/v1",
                    model=endpoint_model,
                    params_b=1,
                    layers=2,
                    hidden_size=8,
                )
            ],
        )

    s = RecordSettings(task="gsm8k", split="sample", n=2, samples=1)
    out = tmp_path / "rec"
    p1 = pool("org/model-1")
    await record_pool(
        p1,
        get_task("gsm8k"),
        out,
        s,
        runtime=PoolRuntime(p1, overrides={"a": _Fake()}),
        show_progress=False,
    )
    p2 = pool("org/model-2")
    with pytest.raises(RecordSettingsError) as err:
        await record_pool(
            p2,
            get_task("gsm8k"),
            out,
            s.model_copy(update={"n": 3}),
            runtime=PoolRuntime(p2, overrides={"a": _Fake()}),
            show_progress=False,
        )
    msg = str(err.value)
    assert (
        "model 'a'" in msg and "org/model-1" in msg and "org/model-2" in msg and "new folder" in msg
    )
    res = await record_pool(
        p1,
        get_task("gsm8k"),
        out,
        s.model_copy(update={"n": 3}),
        runtime=PoolRuntime(p1, overrides={"a": _Fake()}),
        show_progress=False,
    )
    assert res.skipped == 2 and res.new_records == 1  # same model: resumes


# --- search resume --------------------------------------------------------------------


@pytest.fixture
def search_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    import yaml

    import moagraph.tasks.registry as reg
    from moagraph.cli import _register, app
    from moagraph.models.replay import write_records

    task = ArithmeticTask()
    rng = random.Random(0)
    recs = [
        {
            "model": m,
            "query_id": ex.id,
            "sample": s,
            "text": f"so it is {ex.reference + rng.choice([0, 1])}",
            "prompt_tokens": 40,
            "completion_tokens": 10,
            "latency_s": 0.1,
        }
        for m in ("a", "b")
        for ex in task.load(n=12)
        for s in range(3)
    ]
    write_records(tmp_path / "rec.jsonl.gz", recs)
    spec = {
        "backend": "replay",
        "replay": str(tmp_path / "rec.jsonl.gz"),
        "layers": 16,
        "hidden_size": 2048,
    }
    raw = {
        "name": "rp",
        "models": [{"name": "a", "params_b": 1.0, **spec}, {"name": "b", "params_b": 2.0, **spec}],
    }
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(reg, "get_task", lambda name, data_dir=None: task)
    _register()
    args = [
        "search",
        "--task",
        "arith",
        "--pool",
        str(pool_file),
        "--budget",
        "8",
        "--optimizer",
        "random",
        "--iterations",
        "3",
        "--train-n",
        "6",
        "--heldout-n",
        "4",
        "--flat",
        "--study",
        str(tmp_path / "s.sqlite"),
        "--cache",
        str(tmp_path / "c.sqlite"),
        "--study-name",
        "st",
    ]
    return app, args, pool_file


def test_search_resume_of_unknown_study_is_an_error(search_cli) -> None:  # type: ignore[no-untyped-def]
    app, args, _ = search_cli
    res = CliRunner().invoke(app, [*args, "--resume"])
    assert res.exit_code == 2 and "'st' is not in" in res.output and "drop --resume" in res.output


def test_search_resume_refuses_a_changed_pool_model(search_cli) -> None:  # type: ignore[no-untyped-def]
    app, args, pool_file = search_cli
    assert CliRunner().invoke(app, args).exit_code == 0
    pool_file.write_text(pool_file.read_text().replace("params_b: 2.0", "params_b: 3.0"))
    res = CliRunner().invoke(app, [*args, "--resume"])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert (
        "--resume" in out and ("`pool_models`" in out or "`space`" in out) and "--study-name" in out
    )
    pool_file.write_text(pool_file.read_text().replace("params_b: 3.0", "params_b: 2.0"))
    ok = CliRunner().invoke(app, [*args, "--resume", "--iterations", "4"])
    assert ok.exit_code == 0, ok.output
