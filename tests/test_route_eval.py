"""The one router evaluator (``route eval``, the benchmark, the Python API) on the bundled
ground-truth pools: which ids it scores, how baselines are chosen, one grader, no torch."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moagraph.cli import _register, app
from moagraph.models.runtime import PoolRuntime
from moagraph.pools import resolve_pool
from moagraph.route import RouteMoA, evaluate_router
from moagraph.route.encoders import HashingEncoder
from moagraph.route.evaluator import (
    EvalError,
    choose_baselines,
    fit_answer_model,
    graded_labels,
    select_ids,
)
from moagraph.route.gt import GroundTruth, load_ground_truth
from moagraph.route.scorer import Scorer

ROOT = Path(__file__).resolve().parents[1]
HIDE_TORCH = """
import sys, runpy
class _NoTorch:  # as if torch were not installed (sys.modules['torch'] = None trips scipy)
    def find_spec(self, name, path=None, target=None):
        if name == 'torch' or name.startswith('torch.'):
            raise ImportError('torch is hidden in this test')
sys.meta_path.insert(0, _NoTorch())
"""


def trained(gt: GroundTruth, ids: list[str]) -> Scorer:
    t = gt.table.subset(gt.rows(ids))
    s = Scorer(HashingEncoder(256), gt.models, head="logistic", alpha=10.0).fit(
        t.texts, t.labels, gt.pool
    )
    s.meta["train_ids"] = list(ids)
    return s


def test_drops_exactly_the_trained_ids_and_says_how_many() -> None:
    gt = load_ground_truth("zeroeval-gsm8k")
    train = gt.split(0)["train"]
    s = trained(gt, train)
    ev = evaluate_router(s, gt, policies=["single"])
    assert set(ev.ids.dropped) == set(train) and len(ev.ids.dropped) == len(train)
    assert set(ev.ids.ids) == set(gt.table.query_ids) - set(train)
    assert f"dropped {len(train)} the router was trained on" in ev.ids.line()
    # an id list: only its trained ids go
    some = gt.table.query_ids[:50]
    sel = select_ids(s, gt.table.query_ids, some)
    assert sel.ids == [q for q in some if q not in set(train)]
    assert len(sel.dropped) == len([q for q in some if q in set(train)])
    with pytest.raises(EvalError, match="not in the pool"):
        select_ids(s, gt.table.query_ids, ["no-such-id"])
    s.meta["selection_ids"] = list(sel.ids[:5])  # ids a setting was tuned on go as well
    assert select_ids(s, gt.table.query_ids, some).ids == sel.ids[5:]


def test_baselines_are_chosen_without_the_test_ids() -> None:
    gt = load_ground_truth("zeroeval-math")
    sp = gt.split(0)
    s = trained(gt, sp["train"])
    base = choose_baselines(s, gt, k=3)
    acc = graded_labels(gt, gt.rows(sp["train"])).mean(axis=0)
    assert base["best_single"] == gt.models[int(np.argmax(acc))]
    # wipe every answer outside the training ids: the choice does not move
    train = set(gt.rows(sp["train"]).tolist())
    blind = dataclasses.replace(
        gt,
        answers=[row if i in train else [None] * len(row) for i, row in enumerate(gt.answers)],
        ref_correct={},
    )
    again = choose_baselines(s, blind, k=3)
    assert (again["best_single"], again["top_k"]) == (base["best_single"], base["top_k"])


def test_every_policy_is_graded_by_the_task_grader() -> None:
    gt = load_ground_truth("zeroeval-math")
    sp = gt.split(0)
    s = trained(gt, sp["train"])
    ids = sp["test"][:60]
    ev = evaluate_router(s, gt, ids, policies=["single", "routemoa"])
    best = ev.baselines["best_single"]
    j = gt.models.index(best)
    graded = graded_labels(gt, gt.rows(ids))[:, j]
    assert np.array_equal(ev.get(ev.baselines["best_single_policy"]).vote, graded)
    assert "assessment=agreement" in ev.assessments["routemoa"]
    row = next(r for r in ev.rows() if r["policy"] == "routemoa")
    lo, hi = row["vote_ci"]
    assert lo <= row["vote"] <= hi and len(row["minus_best_single"]) == 3


def _external_pool(tmp: Path, n: int = 25, prefix: str = "ext-") -> Path:
    """A pool folder with ``n`` of zeroeval-math's recordings under new ids (kept-back
    questions as an external test pool would hold them)."""
    src = resolve_pool("zeroeval-math").parent
    dst = tmp / "ext-pool"
    dst.mkdir()
    shutil.copy(src / "pool.yaml", dst / "pool.yaml")
    qs = [json.loads(x) for x in (src / "queries.jsonl").read_text().splitlines() if x.strip()]
    keep = {q["query_id"] for q in qs[-n:]}
    with open(dst / "queries.jsonl", "w") as f:
        for q in qs[-n:]:
            f.write(json.dumps({**q, "query_id": prefix + str(q["query_id"])}) + "\n")
    with (
        gzip.open(src / "records.jsonl.gz", "rt") as fi,
        gzip.open(dst / "records.jsonl.gz", "wt") as fo,
    ):
        for line in fi:
            r = json.loads(line)
            if r["query_id"] in keep:
                fo.write(json.dumps({**r, "query_id": prefix + str(r["query_id"])}) + "\n")
    return dst


def test_external_pool_scores_every_query_a_router_trained_on_all_data(tmp_path: Path) -> None:
    _register()
    r_all = tmp_path / "all.npz"
    out = CliRunner().invoke(
        app,
        [
            "route",
            "train",
            "--pool",
            "zeroeval-math",
            "--encoder",
            "hashing",
            "--test-frac",
            "0",
            "--val-frac",
            "0",
            "-o",
            str(r_all),
        ],
    )
    assert out.exit_code == 0, out.output
    ext = _external_pool(tmp_path)
    ev = CliRunner().invoke(
        app,
        [
            "route",
            "eval",
            "--pool",
            str(ext / "pool.yaml"),
            "--router",
            str(r_all),
            "--policies",
            "routemoa,single",
        ],
    )
    assert ev.exit_code == 0, ev.output
    text = " ".join(ev.output.split())
    assert "scoring 25 of 25 queries" in text and "dropped 0" in text
    assert "stored training prior" in text  # this pool holds none of its training ids
    # the same router on its own pool: every id was trained on -> refused, and says so
    same = CliRunner().invoke(
        app, ["route", "eval", "--pool", "zeroeval-math", "--router", str(r_all)]
    )
    assert same.exit_code != 0 and "no held-out queries" in " ".join(same.output.split())


def test_cli_eval_on_an_id_list_prints_cis(tmp_path: Path) -> None:
    _register()
    r = tmp_path / "r.npz"
    out = CliRunner().invoke(
        app, ["route", "train", "--pool", "zeroeval-gsm8k", "--encoder", "hashing", "-o", str(r)]
    )
    assert out.exit_code == 0, out.output
    gt = load_ground_truth("zeroeval-gsm8k")
    train = set(Scorer.load(r).meta["train_ids"])
    ids = gt.table.query_ids[:40]
    (tmp_path / "ids.txt").write_text("\n".join(ids))
    js = tmp_path / "ev.json"
    ev = CliRunner().invoke(
        app,
        [
            "route",
            "eval",
            "--pool",
            "zeroeval-gsm8k",
            "--router",
            str(r),
            "--ids",
            str(tmp_path / "ids.txt"),
            "--policies",
            "routemoa,dense",
            "--json",
            str(js),
        ],
    )
    assert ev.exit_code == 0, ev.output
    n_tr = sum(q in train for q in ids)
    text = " ".join(ev.output.split())
    assert f"scoring {40 - n_tr} of 40 queries" in text
    assert f"dropped {n_tr} the router was trained on" in text
    res = json.loads(js.read_text())
    assert res["n_dropped_trained"] == n_tr
    rm = next(p for p in res["policies"] if p["policy"] == "routemoa")
    assert len(rm["vote_ci"]) == 2 and len(rm["minus_dense"]) == 3


def test_answer_model_fits_on_held_out_ids_and_drives_the_rounds() -> None:
    gt = load_ground_truth("zeroeval-gsm8k")
    sp = gt.split(0)
    s = trained(gt, sp["train"])
    rt = PoolRuntime(gt.pool)
    coef, rep = fit_answer_model(RouteMoA(s, rt), gt, gt.rows(sp["validation"]))
    assert rep["coef"]["agreement"] > 0  # agreeing answers are more often right
    r = RouteMoA(s, rt, name="features", answer_model=coef)
    assert "answer features" in r.assessment_label
    ev = evaluate_router(s, gt, sp["test"][:30], policies=["routemoa"], extra=[r])
    assert ev.get("features").n == 30


def test_bench_route_runs_without_torch(tmp_path: Path) -> None:
    """The benchmark's training and evaluation path with the hashing encoder, torch hidden."""
    code = (
        HIDE_TORCH
        + f"""
sys.argv = ['bench_route.py']
mod = runpy.run_path({str(ROOT / "benchmarks" / "bench_route.py")!r})
from moagraph.route.gt import load_ground_truth
from moagraph.route.evaluator import evaluate_router
gt = load_ground_truth('zeroeval-gsm8k')
sp = gt.split(0)
s, cands = mod['train_scorer'](gt, sp, 'hashing', 0)
assert any('skipped' in v for v in cands.values()), cands
ev = evaluate_router(s, gt, sp['test'][:15], ['routemoa', 'single'])
assert not any(k == 'torch' or k.startswith('torch.') for k in sys.modules)
print('ok', len(ev.ids.ids))
"""
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok 15" in out.stdout
    helped = subprocess.run(
        [
            sys.executable,
            "-c",
            HIDE_TORCH + "sys.argv = ['bench_route.py', '--help']\n"
            f"runpy.run_path({str(ROOT / 'benchmarks' / 'bench_route.py')!r}, run_name='__main__')",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert helped.returncode == 0 and "--test-pool" in helped.stdout, helped.stderr[-2000:]


def test_cli_eval_a_router_of_a_model_subset_on_the_full_pool(tmp_path: Path) -> None:
    """A router trained on some of a pool's models (the benchmark's mmlu-pro-small) is
    evaluated on the full pool's recordings of those models, on a user's id list."""
    from moagraph.route.gt import load_setting

    _register()
    gt = load_setting("mmlu-pro-small")
    train = gt.table.query_ids[:300]
    s = trained(gt, train)
    r = tmp_path / "small.npz"
    s.save(r)
    ids = gt.table.query_ids[280:320]  # 20 trained on, 20 not
    (tmp_path / "ids.txt").write_text("\n".join(ids))
    ev = CliRunner().invoke(
        app,
        [
            "route",
            "eval",
            "--pool",
            "mmlu-pro",
            "--router",
            str(r),
            "--ids",
            str(tmp_path / "ids.txt"),
            "--policies",
            "routemoa,sparse",
        ],
    )
    assert ev.exit_code == 0, ev.output
    text = " ".join(ev.output.split())
    assert f"covers {len(gt.models)} of the pool's models" in text
    assert "scoring 20 of 40 queries" in text and "dropped 20 the router was trained on" in text


@pytest.mark.needs_shared_data("alpaca_eval", "labels.jsonl.gz")
def test_cli_eval_on_alpaca_labels_drops_trained_ids_and_prints_cis(tmp_path: Path) -> None:
    _register()
    r = tmp_path / "alp.npz"
    out = CliRunner().invoke(app, ["route", "train", "--encoder", "hashing", "-o", str(r)])
    assert out.exit_code == 0, out.output
    n_train = len(Scorer.load(r).meta["train_ids"])
    ev = CliRunner().invoke(
        app, ["route", "eval", "--router", str(r), "--policies", "routemoa,dense,single"]
    )
    assert ev.exit_code == 0, ev.output
    text = " ".join(ev.output.split())
    assert f"dropped {n_train} the router was trained on" in text
    assert "CIs: 95% bootstrap" in text
