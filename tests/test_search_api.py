"""moagraph.search.optimize / create_study / load_study, storages, failed trials, --dry-run."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import moagraph
from moagraph.cli import _register, app
from moagraph.search import (
    InMemoryStorage,
    SQLiteStorage,
    create_study,
    get_storage,
    load_study,
    optimize,
)
from moagraph.search.space import graph_key
from moagraph.search.storage import StorageError
from moagraph.search.study import StudyError
from moagraph.testing.search import SyntheticEvaluator, small_space

OPTS = dict(split="zeroeval", optimizer="random", n_trials=4, budget=4, flat=True,
            models=["gemma-2-9b-it", "Meta-Llama-3-8B-Instruct"], train_n=6, heldout_n=3,
            test_n=4, seed=1)  # fmt: skip


def test_get_storage_forms(tmp_path) -> None:
    assert isinstance(get_storage(None), InMemoryStorage)
    s = get_storage(f"sqlite:///{tmp_path}/a.sqlite")
    assert isinstance(s, SQLiteStorage) and s.path == tmp_path / "a.sqlite"
    s.close()
    mem = InMemoryStorage()
    assert get_storage(mem) is mem
    with pytest.raises(StorageError, match="sqlite:///"):
        get_storage("postgresql://x/y")


def test_optimize_sqlite_then_load_and_resume(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/st.sqlite"
    res = optimize("zeroeval-math", "math", storage=url, study_name="a", **OPTS)
    assert res.n_trials == 4 and res.study_name == "a"
    st = load_study(url, "a")
    assert len(st.trials()) == 4 and st.result() is not None
    st.close()
    with pytest.raises(StudyError, match="--resume"):
        optimize("zeroeval-math", "math", storage=url, study_name="a", **OPTS)
    more = optimize(
        "zeroeval-math", "math", storage=url, study_name="a", resume=True, **{**OPTS, "n_trials": 6}
    )
    assert more.n_trials == 6 and more.stats["resume_mismatches"] == 0
    mem = InMemoryStorage()
    fresh = optimize(
        "zeroeval-math", "math", storage=mem, study_name="a", **{**OPTS, "n_trials": 6}
    )
    st, ref = load_study(url, "a"), load_study(mem, "a")
    assert [(graph_key(t.graph), t.reward) for t in st.trials()] == [
        (graph_key(t.graph), t.reward) for t in ref.trials()
    ]  # resumed == uninterrupted
    assert graph_key(fresh.best_graph) == graph_key(more.best_graph)
    st.close()


def test_optimize_on_a_space_with_failures_in_memory() -> None:
    sp = small_space()
    storage = InMemoryStorage()
    ev = SyntheticEvaluator(sp, fail_on=(1,))
    res = moagraph.optimize(sp, evaluator=ev, storage=storage, optimizer="random", n_trials=6)
    assert res.n_trials == 6 and res.n_failed == 1
    st = load_study(storage, res.study_name or "")
    rows = st.trials()
    assert rows[1].status == "failed" and "scripted failure" in (rows[1].error or "")
    with pytest.raises(StudyError, match="every trial failed"):
        moagraph.optimize(
            sp,
            evaluator=SyntheticEvaluator(sp, fail_on=range(100)),
            optimizer="random",
            n_trials=3,
        )
    with pytest.raises(ValueError, match="evaluator="):
        moagraph.optimize(sp, optimizer="random")


def test_create_study_in_memory() -> None:
    mem = InMemoryStorage()
    st = create_study(mem, "x", {"optimizer": "random"})
    assert st.config == {"optimizer": "random"} and mem.study_names() == ["x"]
    with pytest.raises(StudyError, match="already exists"):
        create_study(mem, "x", {})


def test_search_dry_run_calls_nothing(tmp_path) -> None:
    _register()
    study = tmp_path / "st.sqlite"
    r = CliRunner().invoke(
        app,
        ["search", "--pool", "zeroeval-math", "--task", "math", "--split", "zeroeval",
         "--optimizer", "random", "-n", "5", "--flat", "--budget", "4",
         "--models", "gemma-2-9b-it,Meta-Llama-3-8B-Instruct", "--train-n", "6",
         "--heldout-n", "3", "--test-n", "4", "--study", str(study), "--dry-run"],
        terminal_width=200,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())  # rich wraps lines
    assert "dry run: no model was called; at most 43 graph evaluations" in out  # 5*6+3*3+4
    assert "train 30, validation 9, test 4" in out
    assert "normalised FLOPs" in out and "0 model calls (exact replay" in out
    assert not study.exists()  # no study was written
