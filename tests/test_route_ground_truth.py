"""RouteMoA on the bundled ground-truth pools: labels from recorded scores, split by id,
held-out-only evaluation, scorer heads, and the live-aggregator path with a scripted backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moagraph.cli import _register, app
from moagraph.graph.testing import ScriptedBackend
from moagraph.models.base import LLMRequest
from moagraph.models.runtime import PoolRuntime
from moagraph.route import get_router_class
from moagraph.route.encoders import HashingEncoder
from moagraph.route.evaluate import hit_rate
from moagraph.route.gt import load_ground_truth, small_open_models
from moagraph.route.gt_eval import evaluate_gt, live_routemoa, paired_bootstrap, vote_correct
from moagraph.route.scorer import Scorer


def test_labels_are_the_pools_recorded_scores() -> None:
    gt = load_ground_truth("zeroeval-math")
    assert gt.table.labels.shape == (538, 40)
    assert set(np.unique(gt.table.labels[np.isfinite(gt.table.labels)])) <= {0.0, 1.0}
    # the task grader agrees with the recorded labels on almost every record
    agree = [
        gt.correct(i, gt.answers[i][j]) == (gt.table.labels[i, j] == 1)
        for i in range(60)
        for j in range(40)
        if np.isfinite(gt.table.labels[i, j])
    ]
    assert np.mean(agree) > 0.95
    sp = gt.split(0)
    assert not set(sp["train"]) & set(sp["test"]) and len(sp["test"]) > 100
    mp = load_ground_truth("mmlu-pro")
    assert len(small_open_models(mp, 8.6)) == 14


def test_hit_rate_counts_any_tied_best_model() -> None:
    labels = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1], [0.9, 0.1, 0.5]])
    assert hit_rate(scores, labels, 1) == pytest.approx(2 / 3)  # row 2: no one right, all tied
    assert hit_rate(scores, labels, 3) == 1.0


@pytest.mark.parametrize(
    "head", ["logistic", pytest.param("routerdc", marks=pytest.mark.needs_extra("torch"))]
)
def test_right_wrong_heads_predict_probabilities(head: str) -> None:
    gt = load_ground_truth("zeroeval-math")
    tr = gt.table.subset(gt.rows(gt.split(0)["train"]))
    s = Scorer(HashingEncoder(256), gt.models, head=head, alpha=10.0).fit(tr.texts, tr.labels)  # type: ignore[arg-type]
    p = s.predict(tr.texts[:5])
    assert p.shape == (5, 40) and (p >= 0).all() and (p <= 1).all()
    if head == "logistic":  # the best model on average gets a high probability
        best = int(np.nanargmax(np.nanmean(tr.labels, axis=0)))
        assert p[:, best].mean() > 0.6


def test_vote_and_policies_on_ground_truth() -> None:
    gt = load_ground_truth("zeroeval-gsm8k")
    sp = gt.split(0)
    tr = gt.table.subset(gt.rows(sp["train"]))
    s = Scorer(HashingEncoder(256), gt.models, head="logistic", alpha=10.0).fit(
        tr.texts, tr.labels, gt.pool
    )
    rt = PoolRuntime(gt.pool)
    rows = gt.rows(sp["test"])[:40]
    pols = [
        get_router_class("routemoa")(s, rt),
        get_router_class("dense")(rt, s),
        get_router_class("smoa")(rt, s),
        get_router_class("single")(rt, s),
    ]
    res = {r.policy: r for r in evaluate_gt(pols, gt, rows)}
    assert res["dense"].calls.mean() == 3 * 42 + 1
    assert res["routemoa"].flops.mean() < 0.1 * res["dense"].flops.mean()
    assert res["single"].calls.mean() == 1
    assert vote_correct(gt, int(rows[0]), [gt.models[0]]) == (gt.table.labels[rows[0], 0] == 1)
    d, lo, hi = paired_bootstrap(res["routemoa"].vote, res["dense"].vote)
    assert lo <= d <= hi


def test_cli_train_on_pool_split_by_id_and_held_out_eval(tmp_path: Path) -> None:
    _register()
    r = tmp_path / "r.npz"
    out = CliRunner().invoke(
        app, ["route", "train", "--pool", "zeroeval-math", "--encoder", "hashing", "-o", str(r)]
    )
    assert out.exit_code == 0, out.output
    s = Scorer.load(r)
    assert s.meta["split"]["by"].startswith("split_ids") and s.meta["split"]["seed"] == 0
    train_ids = set(s.meta["train_ids"])
    assert train_ids == set(load_ground_truth("zeroeval-math").split(0)["train"])
    ev = CliRunner().invoke(
        app,
        [
            "route",
            "eval",
            "--pool",
            "zeroeval-math",
            "--router",
            str(r),
            "--policies",
            "routemoa,single",
        ],
    )
    assert ev.exit_code == 0, ev.output
    # every query it was not trained on (CLI training uses no validation ids), and says so
    text = " ".join(ev.output.split())
    assert f"scoring {538 - len(train_ids)} of 538 queries" in text
    assert f"dropped {len(train_ids)} the router was trained on" in text
    # --test-frac 0: trains on everything; eval then refuses to call anything held-out
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
    assert len(Scorer.load(r_all).meta["train_ids"]) == 538
    ev = CliRunner().invoke(
        app, ["route", "eval", "--pool", "zeroeval-math", "--router", str(r_all)]
    )
    assert ev.exit_code != 0 and "no held-out queries" in ev.output
    bad = CliRunner().invoke(
        app, ["route", "train", "--pool", "zeroeval-math", "--data", "x", "-o", str(r)]
    )
    assert bad.exit_code != 0 and "carries its own labels" in bad.output


async def test_live_aggregator_path_with_scripted_backend(tmp_path: Path) -> None:
    seen: list[str] = []

    def respond(req: LLMRequest) -> str:
        seen.append(req.model.name)
        return '{"answer": "42"}'

    be = ScriptedBackend(respond=respond)
    cache = tmp_path / "cache.sqlite"
    res = await live_routemoa(3, cache=str(cache), overrides={"qwen-coder-1.5b": be})
    assert res["n"] == 3 and seen == ["qwen-coder-1.5b"] * 3  # recorded models come from the replay
    assert all(q["final"].startswith("aggregator (qwen-coder-1.5b)") for q in res["per_query"])
    again = await live_routemoa(3, cache=str(cache), overrides={"qwen-coder-1.5b": be})
    assert len(seen) == 3 and again["mean"] == res["mean"]  # rerun: every call from the cache


async def test_live_compare_routemoa_dense_single_share_cached_calls(tmp_path: Path) -> None:
    """Live comparison: RouteMoA (top 3) and dense (all recorded models; the aggregator reads
    the top ``dense_inputs`` by prior) with the same live aggregator; replayed round-1 calls
    shared; a rerun is free; the best single is a recorded label."""
    from moagraph.route.gt_eval import live_compare

    prompts: list[str] = []

    def respond(req: LLMRequest) -> str:
        prompts.append(req.messages[-1]["content"] + req.messages[0]["content"])
        return "The answer is $\\boxed{42}$."

    be = ScriptedBackend(respond=respond)
    cache = tmp_path / "cache.sqlite"
    res = await live_compare(2, cache=str(cache), overrides={"qwen-coder-1.5b": be}, dense_inputs=4)
    gt = load_ground_truth("zeroeval-math")
    assert res["n"] == 2 and len(prompts) == 6  # one aggregator call per policy and query
    assert res["best_single"] in gt.models
    for q in res["per_query"]:
        rm, dn = q["routemoa"], q["dense"]
        assert rm["agg_ok"] and dn["agg_ok"] and not rm["agg_cached"]
        assert rm["n_answers"] == 3 and dn["n_answers"] > 30  # every recorded model answers
        assert dn["flops"] > rm["flops"] > 0
        assert "qwen-coder-1.5b" in dn["final"]
        qi = int(gt.rows([q["query_id"]])[0])
        assert q["single"]["label"] == float(
            np.nan_to_num(gt.table.labels[qi, gt.models.index(res["best_single"])])
        )
    # order per query: routemoa (official prompt), routemoa-moa (MoA prompt), dense
    official, moa, dense_prompt = prompts[:3]
    assert "Responses from models:" in official and "Response 1:" not in official
    assert "Response 3:" in moa and "Response 4:" not in moa  # same 3 answers, MoA prompt
    assert q["routemoa-moa"]["n_answers"] == 3
    # the dense aggregator reads exactly dense_inputs numbered answers
    assert "Response 4:" in dense_prompt and "Response 5:" not in dense_prompt
    again = await live_compare(
        2, cache=str(cache), overrides={"qwen-coder-1.5b": be}, dense_inputs=4
    )
    assert len(prompts) == 6 and all(q["routemoa"]["agg_cached"] for q in again["per_query"])
    assert [q["dense"]["aggregated"] for q in again["per_query"]] == [
        q["dense"]["aggregated"] for q in res["per_query"]
    ]


async def test_live_compare_on_mmlu_pro_builds_the_prompt_with_options(tmp_path: Path) -> None:
    """Regression: the live path built MMLU-Pro examples without their options (KeyError
    'choices'); the aggregator must see the options and the recorded letter answers."""
    from moagraph.route.gt_eval import live_compare

    prompts: list[str] = []

    def respond(req: LLMRequest) -> str:
        prompts.append("\n".join(m["content"] for m in req.messages))
        return "The answer is (A)."

    gt = load_ground_truth("mmlu-pro")
    res = await live_compare(
        1,
        pool_name="mmlu-pro",
        models=small_open_models(gt, 8.6),
        cache=str(tmp_path / "c.sqlite"),
        overrides={"qwen-coder-1.5b": ScriptedBackend(respond=respond)},
        policies=("routemoa",),
    )
    assert res["n"] == 1 and len(prompts) == 1
    assert "\nA. " in prompts[0] and "\nB. " in prompts[0]  # the options reach the prompt
    assert "The answer is (" in prompts[0]  # recorded answers are letters only
    q = res["per_query"][0]["routemoa"]
    assert q["aggregated"] == float(
        gt.references[gt.rows([res["per_query"][0]["query_id"]])[0]] == "A"
    )
