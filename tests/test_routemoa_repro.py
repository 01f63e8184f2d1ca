"""benchmarks/bench_routemoa_repro.py on a tiny SYNTHETIC file set in the
released RouteMoA format (emoa_large/eval/*.json): parsing, re-grading,
disagreement detection, the paper's aggregate, and the error naming --repo.

Every item below is made up; none comes from the RouteMoA repository.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_routemoa_repro.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_routemoa_repro", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()

CATS = {
    "Language Understanding": {
        "sst2": [("s1", "Positive", "Is it positive? Answer with Negative or Positive!")],
        "msra": [("m1", "Paris", "Extract the place names")],
    },
    "Math Reasoning": {
        "bigmath": [("b1", "12", "5+7="), ("b2", "30", "10+20=")],
        "geometry": [("g1", "So the side is $\\boxed{5}$.", "A synthetic geometry question")],
    },
}

# system -> item id -> (response, released fields, latency, cost)
REPLIES = {
    "moa": {
        "s1": ("Positive", {"is_correct": 1, "parsed_answer": "Positive"}, 100.0, 0.04),
        "m1": ("Paris", {"is_correct": None, "parsed_answer": "['Paris']"}, 100.0, 0.04),
        "b1": ("5 + 7 = 12", {"is_correct": 1, "parsed_answer": "12"}, 100.0, 0.04),
        "b2": ("10 + 20 = 31", {"is_correct": 0, "parsed_answer": "31"}, 100.0, 0.0),
        "g1": (
            "The side is \\boxed{5}.",
            {"is_correct": None, "parsed_answer": "judge text ... Score: 4"},
            100.0,
            0.04,
        ),
    },
    "routemoa": {
        "s1": (
            '```json\n{"answer": "Positive"}\n```',
            {"is_correct": 1, "parsed_answer": "Positive"},
            40.0,
            0.004,
        ),
        "m1": ("Paris", {"is_correct": None, "parsed_answer": "['Paris']"}, 40.0, 0.004),
        # a right JSON answer the released NumberParser reads as its self_score
        "b1": (
            '```json\n{"answer": "12", "self_score": 1.0}\n```',
            {"is_correct": 0, "parsed_answer": "1"},
            40.0,
            0.004,
        ),
        "b2": ("\\boxed{30}", {"is_correct": 1, "parsed_answer": "30"}, 40.0, 0.004),
        # right final answer, the judge gives 2 of 4
        "g1": (
            "\\boxed{5}",
            {"is_correct": None, "parsed_answer": "judge text ... Score: 2"},
            40.0,
            0.004,
        ),
    },
    "smoa": {
        "s1": ("Negative", {"is_correct": 0, "parsed_answer": "Negative"}, 60.0, 0.01),
        "m1": ("Lyon", {"is_correct": None, "parsed_answer": "['Lyon']"}, 60.0, 0.01),
        "b1": ("12", {"is_correct": 1, "parsed_answer": "12"}, 60.0, 0.01),
        "b2": ("30", {"is_correct": 1, "parsed_answer": "30"}, 60.0, 0.01),
        "g1": ("\\boxed{4}", {"is_correct": None, "parsed_answer": "Score: 0"}, 60.0, 0.01),
    },
}
METRIC = {"sst2": "accuracy", "msra": "recall", "bigmath": "accuracy", "geometry": "norm_score"}
MSRA_RECALL = {"moa": 1.0, "routemoa": 1.0, "smoa": 0.0}


def _released_acc(system: str, ds: str) -> float:
    if ds == "msra":
        return MSRA_RECALL[system]
    vals = []
    for iid, _, _ in [x for c in CATS.values() for d, xs in c.items() if d == ds for x in xs]:
        f = REPLIES[system][iid][1]
        if f["is_correct"] is not None:
            vals.append(float(f["is_correct"]))
        else:
            vals.append(float(f["parsed_answer"].rsplit("Score: ", 1)[1]) / 4)
    return sum(vals) / len(vals)


def write_release(root: Path) -> Path:
    d = root / "emoa_large" / "eval"
    d.mkdir(parents=True)
    bench_q = {"metadata": {"synthetic": True}, "data": {}}
    summary = {
        "metadata": {"synthetic": True},
        "per_dataset": {},
        "category_avg": {},
        "global_avg": {},
        "global_avg_by_category": {},
    }
    for cat, dss in CATS.items():
        bench_q["data"][cat] = {}
        summary["per_dataset"][cat] = {}
        for ds, items in dss.items():
            bench_q["data"][cat][ds] = {
                "total_items": len(items),
                "items": [
                    {
                        "dataset": ds,
                        "item_id": iid,
                        "question": q,
                        "ground_truth": gt,
                        "full_prompt": q,
                    }
                    for iid, gt, q in items
                ],
            }
            summary["per_dataset"][cat][ds] = {
                s: {"accuracy": _released_acc(s, ds), "metric_name": METRIC[ds]} for s in REPLIES
            }
    for s in REPLIES:
        res = {}
        for cat, dss in CATS.items():
            res[cat] = {}
            for ds, items in dss.items():
                rows = []
                for iid, gt, q in items:
                    text, fields, lat, cost = REPLIES[s][iid]
                    rows.append(
                        {
                            "dataset": ds,
                            "item_id": iid,
                            "question": q,
                            "ground_truth": gt,
                            "full_prompt": q,
                            "model_response": text,
                            "reasoning_content": "",
                            **fields,
                            "latency": lat,
                            "cost": cost,
                            "token_usage": {},
                        }
                    )
                res[cat][ds] = {
                    "summary": {"dataset_name": ds, "metric_name": METRIC[ds]},
                    "items": rows,
                }
        (d / f"{s}.json").write_text(
            json.dumps({"metadata": {"model_name": s}, "results": res}), encoding="utf-8"
        )
        ds_acc = {
            (c, ds): summary["per_dataset"][c][ds][s]["accuracy"] for c in CATS for ds in CATS[c]
        }
        cat_means = [sum(ds_acc[(c, ds)] for ds in CATS[c]) / len(CATS[c]) for c in CATS]
        summary["global_avg_by_category"][s] = {
            "accuracy_macro_avg": sum(cat_means) / len(cat_means),
            "latency_avg_macro_avg": REPLIES[s]["s1"][2],
            "cost_normalized_macro_avg": 1.0,
        }
        summary["global_avg"][s] = {"accuracy_macro_avg": sum(ds_acc.values()) / len(ds_acc)}
    (d / "benchmark_questions.json").write_text(json.dumps(bench_q), encoding="utf-8")
    (d / "summary_all.json").write_text(json.dumps(summary), encoding="utf-8")
    return d


@pytest.fixture
def release(tmp_path: Path) -> Path:
    write_release(tmp_path)
    return tmp_path


def test_missing_files_name_repo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="--repo"):
        bench.find_eval_dir(None)
    with pytest.raises(SystemExit, match="--repo"):
        bench.find_eval_dir(tmp_path)
    assert bench.main(["--repo", str(tmp_path), "--out", str(tmp_path / "o.md")]) == 2
    err = capsys.readouterr().err
    assert "--repo" in err and "moa.json" in err


def test_help_runs_without_data() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--repo" in out.stdout


def test_parsing_and_released_grades(release: Path) -> None:
    d = bench.find_eval_dir(release)
    assert d == release / "emoa_large" / "eval"
    assert bench.find_eval_dir(d) == d  # the eval folder itself works too
    items, summary, metrics = bench.load(d)
    assert set(items) == {"moa", "routemoa", "smoa"}
    assert all(len(v) == 5 for v in items.values())
    by = {(i.system, i.item_id): i for v in items.values() for i in v}
    assert by[("routemoa", "g1")].released == 0.5  # judge "Score: 2" / 4
    assert by[("moa", "m1")].released is None  # recall: dataset-level only
    assert by[("routemoa", "b1")].released == 0.0
    assert metrics["moa"]["geometry"] == "norm_score"


def test_item_set_must_match_questions(release: Path) -> None:
    d = release / "emoa_large" / "eval"
    data = json.loads((d / "smoa.json").read_text(encoding="utf-8"))
    data["results"]["Math Reasoning"]["bigmath"]["items"][0]["item_id"] = "zzz"
    (d / "smoa.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="not in benchmark_questions"):
        bench.load(d)


def test_grading_and_disagreements(release: Path) -> None:
    items, summary, _ = bench.load(bench.find_eval_dir(release))
    bench.grade_all(items)
    by = {(i.system, i.item_id): i for v in items.values() for i in v}
    assert by[("routemoa", "b1")].mg == 1.0  # JSON answer read by math_equiv
    assert by[("routemoa", "s1")].mg == 1.0  # JSON answer unwrapped for the choice grader
    # a lettered JSON reply: extract_choice alone does not read it
    reply = '```json\n{"answer": "B", "self_score": 1.0}\n```'
    assert bench.moagraph_grade("race", reply, "B")[0] == 1.0
    assert bench.moagraph_grade("race", reply, "B", unwrap_json=False)[0] == 0.0
    assert by[("moa", "m1")].mg is None  # no moagraph grader for NER recall
    assert by[("moa", "g1")].mg == 1.0 and by[("smoa", "g1")].mg == 0.0
    dis = {(it.system, it.item_id): kind for kind, it in bench.disagreements(items)}
    assert dis == {
        ("routemoa", "b1"): "released error: NumberParser reads the JSON self_score (last number)",
        ("routemoa", "g1"): "judge: partial credit (< 3 of 4) for a right final answer",
    }


def test_aggregate_cost_and_latency(release: Path, tmp_path: Path) -> None:
    items, summary, _ = bench.load(bench.find_eval_dir(release))
    bench.grade_all(items)
    res = bench.analyse(items, summary)
    S = res["systems"]
    # the released per-item grades reproduce the summary's category macro
    for s in ("moa", "routemoa", "smoa"):
        assert S[s]["released_macro"] == pytest.approx(S[s]["summary_acc"])
    # RouteMoA by moagraph: LU (sst2 1, msra 1 released) = 1; math (bigmath 1, geometry 1) = 1
    assert S["routemoa"]["moagraph_macro"] == pytest.approx(1.0)
    # released: math = mean(bigmath 0.5, geometry 0.5) = 0.5 -> macro 0.75
    assert S["routemoa"]["released_macro"] == pytest.approx(0.75)
    # MoA's b2 has cost 0 (not recorded): left out of the released-style mean
    assert S["moa"]["cost_unrecorded"] == 1
    assert S["moa"]["cost_macro"] == pytest.approx(400.0)
    assert S["moa"]["cost_macro_zero"] == pytest.approx(0.5 * 400 + 0.5 * (200 + 400) / 2)
    assert res["pairs"]["cost_rel"][0] == pytest.approx(0.004 / 0.04 - 1)
    assert res["pairs"]["latency_rel"][0] == pytest.approx(40 / 100 - 1)
    d, lo, hi = res["pairs"]["macro_acc_moagraph"]
    assert lo <= d <= hi
    out = tmp_path / "out.md"
    assert bench.main(["--repo", str(release), "--out", str(out)]) == 0
    md = out.read_text(encoding="utf-8")
    assert "| accuracy RouteMoA | 78.6 |" in md and "-89.8%" in md
    assert "## Disagreements: 2 (system, item) pairs" in md


def test_released_judge_score_rules() -> None:
    # the release reads the first "Score: N" and scores a timed-out reply 0
    judge = {"is_correct": None, "model_response": "x", "parsed_answer": "Score: 4 ... Score: 3"}
    assert bench.released_grade(judge, "norm_score") == 1.0
    timeout = {
        "is_correct": None,
        "model_response": "Error Occur! response text: ",
        "parsed_answer": "Error Occur! response text: ",
    }
    assert bench.is_timeout(timeout["model_response"])
    assert bench.released_grade(timeout, "norm_score") == 0.0
    assert bench.released_grade({"is_correct": None, "parsed_answer": "x"}, "recall") is None
