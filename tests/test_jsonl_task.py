"""Your own task (jsonl:PATH:GRADER), importers that check the task of a dump, the math
grader on plain words, and --data-dir / --name on the commands that read task data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moagraph.cli._options import resolve_task
from moagraph.pools.ground_truth import detect_zeroeval_task, import_zeroeval
from moagraph.tasks.base import TaskError
from moagraph.tasks.grading.math_equiv import equivalent
from moagraph.tasks.jsonl import GRADERS, JsonlTask
from moagraph.tasks.registry import get_task

FIX = Path(__file__).parent / "fixtures" / "ground_truth"


def _write(p: Path, rows: list[object]) -> Path:
    p.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n",
        encoding="utf-8",
    )
    return p


def _cli(args: list[str]) -> tuple[int, str]:
    from moagraph.cli import _register, app

    _register()
    res = CliRunner().invoke(app, args)
    return res.exit_code, res.output


# --------------------------------------------------------------------- the task


def test_spec_resolves_everywhere_a_task_name_does(tmp_path: Path) -> None:
    f = _write(tmp_path / "q.jsonl", [{"question": "1+1?", "reference": 2}])
    for t in (get_task(f"jsonl:{f}:number"), resolve_task(f"jsonl:{f}:number")):
        assert isinstance(t, JsonlTask)
        assert t.name == f"jsonl:{f}:number" and t.kind == "math"
        assert [e.id for e in t.load("test")] == ["q/0"]
    # relative to --data-dir when not found from the cwd
    t = resolve_task("jsonl:q.jsonl:exact", tmp_path)
    assert t.load("all")[0].reference == "2"
    assert {get_task(f"jsonl:{f}:{g}").kind for g in GRADERS} == {"exact", "math", "choice", "code"}


def test_spec_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=r"unknown grader 'fuzzy'; use one of: exact, number"):
        get_task("jsonl:q.jsonl:fuzzy")
    with pytest.raises(TaskError, match=r"name the grader after the file, e\.g\. jsonl:q\.jsonl"):
        get_task("jsonl:q.jsonl")
    with pytest.raises(TaskError, match=r"does not exist"):
        get_task(f"jsonl:{tmp_path}/nope.jsonl:exact").load("test")
    with pytest.raises(TaskError, match="jsonl:PATH:GRADER"):
        get_task("nope")


@pytest.mark.parametrize(
    ("rows", "grader", "match"),
    [
        (['{"question": "a", "reference": 1}', "{oops"], "number", r"q\.jsonl:2 is not valid JSON"),
        ([{"question": "a"}], "exact", r"q\.jsonl:1: field `reference` is missing"),
        ([{"reference": "a"}], "exact", r"q\.jsonl:1: field `question` is missing"),
        ([[1, 2]], "exact", r"q\.jsonl:1: a row must be a JSON object"),
        (
            [{"question": "a", "reference": "ten"}],
            "number",
            r"q\.jsonl:1: field `reference`.*not a number",
        ),
        ([{"question": "a", "reference": "B"}], "choice", r"q\.jsonl:1: field `choices`"),
        (
            [{"question": "a", "reference": "E", "choices": ["x", "y"]}],
            "choice",
            r"q\.jsonl:1: field `reference` 'E' is not a letter A-B",
        ),
        (
            [{"question": "a", "reference": 3}],
            "code",
            r"q\.jsonl:1: field `reference` must be Python",
        ),
        (
            [
                {"id": "x", "question": "a", "reference": 1},
                {"id": "x", "question": "b", "reference": 2},
            ],
            "number",
            r"q\.jsonl:2: id 'x' repeats line 1",
        ),
    ],
)
def test_bad_rows_name_file_line_and_field(
    tmp_path: Path, rows: list[object], grader: str, match: str
) -> None:
    f = _write(tmp_path / "q.jsonl", rows)
    with pytest.raises(TaskError, match=match):
        get_task(f"jsonl:{f}:{grader}").load("test")


def test_graders(tmp_path: Path) -> None:
    def task(grader: str, row: dict[str, object]) -> tuple[object, object]:
        f = _write(tmp_path / f"{grader}.jsonl", [row])
        t = get_task(f"jsonl:{f}:{grader}")
        return t, t.load("test")[0]

    exact, e = task("exact", {"question": "Capital of France?", "reference": "Paris"})
    assert exact.grade("Let me think.\nAnswer:   paris ", e) == 1.0  # type: ignore[attr-defined]
    assert exact.grade("Answer: Pariss", e) == 0.0  # type: ignore[attr-defined]
    assert exact.equivalent("ccwcu", "cwcuc") is False  # type: ignore[attr-defined]

    number, n = task("number", {"question": "How many?", "reference": "1,000"})
    assert number.grade("so\nAnswer: 1000.0", n) == 1.0  # type: ignore[attr-defined]
    assert number.grade("The answer is \\boxed{1000}", n) == 1.0  # type: ignore[attr-defined]
    assert number.grade("Answer: 1001", n) == 0.0  # type: ignore[attr-defined]
    assert number.equivalent("3/4", "0.75")  # type: ignore[attr-defined]
    assert not number.equivalent("abc", "abc")  # type: ignore[attr-defined]

    math_t, m = task("math", {"question": "Half?", "reference": "\\frac{1}{2}"})
    assert math_t.grade("\\boxed{0.5}", m) == 1.0  # type: ignore[attr-defined]

    choice, c = task("choice", {"question": "Pick", "reference": 1, "choices": ["red", "blue"]})
    assert c.reference == "B"  # type: ignore[attr-defined]
    assert "B. blue" in choice.format_question(c)  # type: ignore[attr-defined]
    assert choice.grade("The answer is (B).", c) == 1.0  # type: ignore[attr-defined]
    assert choice.grade("The answer is (A).", c) == 0.0  # type: ignore[attr-defined]


def test_code_grader_runs_the_reference_tests_in_the_sandbox(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "code.jsonl",
        [
            {
                "id": "add",
                "question": "Write add(a, b) returning a + b.",
                "reference": "assert add(2, 3) == 5\nassert add(-1, 1) == 0",
            }
        ],
    )
    task = get_task(f"jsonl:{f}:code")
    ex = task.load("test")[0]
    assert task.grade("```python\ndef add(a, b):\n    return a + b\n```", ex) == 1.0
    assert task.grade("```python\ndef add(a, b):\n    return a - b\n```", ex) == 0.0


# --------------------------------------------------------------------- math grader


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("ccwcu", "cwcuc", False),  # CRUXEval outputs: words, not products of symbols
        ("'ccwcu'", "'cwcuc'", False),
        ("xy", "yx", False),
        ("Monday", "monday", True),
        ("\\text{yes}", "yes", True),
        ("x y", "y x", True),  # single-letter variables stay symbolic
        ("2ab", "2ba", True),
        ("\\frac{1}{2}", "0.5", True),
    ],
)
def test_math_grader_compares_words_as_strings(a: str, b: str, same: bool) -> None:
    assert equivalent(a, b) is same
    assert equivalent(b, a) is same


# --------------------------------------------------------------------- importers


def _crux_folder(root: Path, name: str = "crux", ids: list[object] | None = None) -> Path:
    """A synthetic CRUXEval-like dump in ZeroEval's layout (questions, outputs, correctness)."""
    d = root / name
    d.mkdir()
    ids = ids if ids is not None else ["sample_0", "sample_1"]
    qs = [
        {
            "id": ids[0],
            "question": "def f(text):\n    return text[1:] + text[0]\n\nassert f('cwcuc') == ??",
            "answer": "'wcucc'",
        },
        {
            "id": ids[1],
            "question": "def f(s):\n    return s[::-1]\n\nassert f('ucwcc') == ??",
            "answer": "'ccwcu'",
        },
    ]
    _write(d / "questions.jsonl", qs)  # type: ignore[arg-type]
    with gzip.open(d / "outputs.jsonl.gz", "wt", encoding="utf-8") as fh:
        for q, out, ok in zip(qs, ["'wcucc'", "'cwcuc'"], [1, 0], strict=True):
            fh.write(
                json.dumps(
                    {
                        "id": q["id"],
                        "model": "gpt-4o-mini-2024-07-18",
                        "output": json.dumps({"reasoning": "...", "answer": out}),
                        "correct": ok,
                    }
                )
                + "\n"
            )
    (d / "correctness.csv").write_text(
        "id,answer,gpt-4o-mini-2024-07-18\n"
        + "".join(f'{q["id"]},"{q["answer"]}",{ok}\n' for q, ok in zip(qs, [1, 0], strict=True)),
        encoding="utf-8",
    )
    return d


def test_zeroeval_import_refuses_a_cruxeval_dump(tmp_path: Path) -> None:
    d = _crux_folder(tmp_path)
    assert detect_zeroeval_task(d, [json.loads(x) for x in (d / "questions.jsonl").open()])[0] == (
        "cruxeval"
    )
    with pytest.raises(ValueError, match=r"looks like cruxeval .*not GSM8K or MATH") as e:
        import_zeroeval(d, tmp_path / "out")
    assert "docs/own-task.md" in str(e.value) and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="looks like cruxeval"):
        import_zeroeval(d, tmp_path / "out", task="math")
    # no telltale folder name or ids: the questions are Python code
    d2 = _crux_folder(tmp_path, "math-l5", ids=[0, 1])
    with pytest.raises(ValueError, match=r"looks like cruxeval \(CRUXEval-like: 2 of 2 questions"):
        import_zeroeval(d2, tmp_path / "out2")
    code, out = _cli(["pool", "import", "zeroeval", str(d), "-o", str(tmp_path / "out3")])
    assert code == 2 and "cruxeval" in out and "MATH level 5" not in out


def test_zeroeval_import_checks_task_against_the_dump(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--task math: .* looks like gsm8k .*pass --task gsm8k"):
        import_zeroeval(FIX / "zeroeval-gsm", tmp_path / "a", task="math")
    with pytest.raises(ValueError, match=r"imports as one of: gsm8k, math"):
        import_zeroeval(FIX / "zeroeval-gsm", tmp_path / "b", task="mmlu")
    pool = import_zeroeval(FIX / "zeroeval-gsm", tmp_path / "my-gsm", task="gsm8k")
    assert pool.name == "my-gsm"  # --name defaults to the output folder's name


def test_pool_import_name_defaults_to_the_output_folder(tmp_path: Path) -> None:
    from moagraph.models.pool import load_pool

    code, out = _cli(
        ["pool", "import", "zeroeval", str(FIX / "zeroeval-math-l5"), "-o", str(tmp_path / "mine")]
    )
    assert code == 0, out
    assert load_pool(tmp_path / "mine" / "pool.yaml").name == "mine"
    code, out = _cli(
        ["pool", "import", "mmlu-pro", str(FIX / "mmlu_pro"), "-o", str(tmp_path / "mp")]
    )
    assert code == 0, out
    assert load_pool(tmp_path / "mp" / "pool.yaml").name == "mp"


@pytest.mark.parametrize(
    "cmd", [["eval"], ["record"], ["search"], ["route", "train"], ["route", "eval"]]
)
def test_every_command_that_reads_task_data_takes_data_dir(cmd: list[str]) -> None:
    code, out = _cli([*cmd, "--help"])
    assert code == 0 and "--data-dir" in out, out


def _records(tmp_path: Path, task: str | None) -> tuple[Path, Path]:
    recs = [
        {"model": "m1", "query_id": "q1", "sample": 0, "text": "Answer: 2", "score": 1.0}
        | ({"task": task} if task else {})
    ]
    models = tmp_path / "models.json"
    models.write_text(json.dumps([{"name": "m1", "params_b": 1}]), encoding="utf-8")
    return _write(tmp_path / "recs.jsonl", recs), models  # type: ignore[arg-type]


def test_pool_import_jsonl_takes_and_checks_task(tmp_path: Path) -> None:
    from moagraph.models.pool import load_pool
    from moagraph.pools.importers import import_jsonl
    from moagraph.pools.schema import ReplayFormatError

    recs, models = _records(tmp_path, "gsm8k")
    with pytest.raises(
        ReplayFormatError, match=r"--task math: the records were made on task 'gsm8k'"
    ):
        import_jsonl(recs, models, tmp_path / "a", task="math")
    import_jsonl(recs, models, tmp_path / "b")
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["task"] == "gsm8k"
    recs, models = _records(tmp_path, None)
    with pytest.raises(TaskError, match="unknown task 'nope'"):
        import_jsonl(recs, models, tmp_path / "c", task="nope")
    import_jsonl(recs, models, tmp_path / "d", task="jsonl:q.jsonl:number")
    assert load_pool(tmp_path / "d" / "pool.yaml").name == "d"
    assert (
        json.loads((tmp_path / "d" / "summary.json").read_text())["task"] == "jsonl:q.jsonl:number"
    )
    from moagraph.pools.schema import read_records

    assert {r.task for r in read_records(tmp_path / "d" / "records.jsonl.gz")} == {
        "jsonl:q.jsonl:number"
    }


@pytest.mark.parametrize("grader", list(GRADERS))
def test_every_grader_is_votable(grader: str, tmp_path: Path) -> None:
    from moagraph.search.evaluator import is_votable

    assert is_votable(get_task(f"jsonl:q.jsonl:{grader}"))
