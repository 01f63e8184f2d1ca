"""Answer evidence on replay: RouteMoA's agreement assessment on real recordings (the bundled
ground-truth pools) and on a live (scripted) pool."""

from __future__ import annotations

import numpy as np
import pytest

from moagraph.graph.executor import vote
from moagraph.graph.testing import ArithmeticTask, ScriptedBackend, fake_pool
from moagraph.models.base import LLMRequest
from moagraph.models.runtime import PoolRuntime
from moagraph.route import RouteMoA, RouteMoAConfig
from moagraph.route.encoders import HashingEncoder
from moagraph.route.gt import _task, load_ground_truth, small_open_models
from moagraph.route.gt_eval import evaluate_gt, routemoa_replay_layers
from moagraph.route.routemoa import agreement_scores, answer_clusters, replay_rounds
from moagraph.route.scorer import Scorer


def fitted(pool_name: str) -> tuple[object, Scorer]:
    gt = load_ground_truth(pool_name)
    if pool_name == "zeroeval-math":  # small open models: priors too low for the scorer alone
        gt = gt.subset_models(small_open_models(gt))
    tr = gt.table.subset(gt.rows(gt.split(0)["train"]))
    s = Scorer(HashingEncoder(256), gt.models, head="logistic", alpha=10.0).fit(
        tr.texts, tr.labels, gt.pool
    )
    return gt, s


def test_clusters_are_the_graph_votes_clusters_on_recorded_answers() -> None:
    gt = load_ground_truth("zeroeval-math")
    task = _task(gt.task_name)
    for qi in range(40):
        answers = gt.answers[qi][:7]
        clusters = answer_clusters(task.equivalent, answers)
        winner, sizes = vote(task, answers)
        assert sorted(len(c) for c in clusters) == sorted(sizes.values())
        if clusters:  # the biggest cluster (earliest on ties) holds the vote's winner
            best = max(clusters, key=lambda c: (len(c), -c[0]))
            assert best[0] == winner


def _queries(gt: object, models: list[str], agree: bool, n: int = 3) -> list[int]:
    col = {m: j for j, m in enumerate(gt.models)}  # type: ignore[attr-defined]
    task = _task(gt.task_name)  # type: ignore[attr-defined]
    out = []
    for qi in range(len(gt.answers)):  # type: ignore[attr-defined]
        ans = {m: gt.answers[qi][col[m]] for m in models}  # type: ignore[attr-defined]
        if any(a is None for a in ans.values()):
            continue
        sc = agreement_scores(ans, task.equivalent)
        if (min(sc.values()) == 1.0) == agree and (agree or max(sc.values()) < 1.0):
            out.append(qi)
        if len(out) == n:
            break
    return out


def test_agreement_stops_when_round1_answers_agree_and_continues_when_not() -> None:
    gt = load_ground_truth("zeroeval-gsm8k")
    task = _task(gt.task_name)
    col = {m: j for j, m in enumerate(gt.models)}
    models = gt.models[:3]
    prior = {m: 0.5 for m in gt.models}  # a prior that alone would never stop
    order = models + [m for m in gt.models if m not in models]
    cfg = RouteMoAConfig(assessment="agreement")
    agree, split = _queries(gt, models, True), _queries(gt, models, False)
    assert agree and split
    for qi in agree + split:
        rounds, why = replay_rounds(
            cfg,
            prior,
            order,
            answer_of=lambda m, qi=qi: gt.answers[qi][col[m]],
            equivalent=task.equivalent,
        )
        assert rounds[0] == models
        if qi in agree:
            assert len(rounds) == 1 and why.startswith("early stop after round 1"), why
        else:
            assert len(rounds) >= 2, why
        # without answer evidence the scorer alone decides: the same rounds for both
        blind, _ = replay_rounds(RouteMoAConfig(), prior, order)
        assert len(blind) == 3


def test_replay_pools_default_to_agreement_live_pools_keep_the_official_assessment() -> None:
    gt, s = fitted("zeroeval-gsm8k")
    rt = PoolRuntime(gt.pool)  # type: ignore[attr-defined]
    assert RouteMoAConfig().assessment == "inline"  # the official default is untouched
    r = RouteMoA(s, rt)
    assert r.config.assessment == "agreement" and "replay-pool default" in r.assessment_label
    named = RouteMoA(s, rt, assessment="inline")
    assert named.config.assessment == "inline" and "named" in named.assessment_label
    pool = fake_pool("m1", "m2", "m3")
    live = RouteMoA(
        Scorer(HashingEncoder(16), pool.names), PoolRuntime(pool, overrides={}), name="x"
    )
    assert live.config.assessment == "inline"


def test_evidence_on_recordings_changes_rounds_and_is_stated() -> None:
    gt, s = fitted("zeroeval-math")
    rt = PoolRuntime(gt.pool)  # type: ignore[attr-defined]
    rows = gt.rows(gt.split(0)["test"])[:40]  # type: ignore[attr-defined]
    ev, blind = RouteMoA(s, rt), RouteMoA(s, rt, name="blind", assessment="inline")
    res = {r.policy: r for r in evaluate_gt([ev, blind], gt, rows)}  # type: ignore[arg-type]
    # a query stops after round 1 exactly when its three round-1 answers agree
    task = _task(gt.task_name)  # type: ignore[attr-defined]
    col = {m: j for j, m in enumerate(gt.models)}  # type: ignore[attr-defined]
    for i, qi in enumerate(rows):
        layers, why = routemoa_replay_layers(ev, gt, int(qi))  # type: ignore[arg-type]
        ans = {m: gt.answers[int(qi)][col[m]] for m in layers[0]}  # type: ignore[attr-defined]
        unanimous = min(agreement_scores(ans, task.equivalent).values()) == 1.0
        assert (len(layers) == 1) == unanimous, why
        assert res["routemoa"].rounds[i] == len(layers)
    assert not np.array_equal(res["routemoa"].rounds, res["blind"].rounds)
    # agreement only adds evidence (agreement_floor): the rounds keep their models, so on a
    # replay the final vote is the no-evidence one on every query, at no more cost
    assert np.array_equal(res["routemoa"].vote, res["blind"].vote)
    assert (res["routemoa"].flops <= res["blind"].flops + 1e-6).all()
    assert (
        ev.plan(gt.example(int(rows[0])))
        .meta["assessment"]
        .startswith(  # type: ignore[attr-defined]
            "assessment=agreement"
        )
    )


def _answers(per_model: dict[str, str]) -> ScriptedBackend:
    def respond(r: LLMRequest) -> str:
        return f"The answer is {per_model.get(r.model.name, '7')}."

    return ScriptedBackend(respond=respond)


@pytest.mark.parametrize("same", [True, False])
async def test_live_agreement_assessment_reads_the_answers(same: bool) -> None:
    names = ("m1", "m2", "m3", "m4", "m5")
    pool = fake_pool(*names)
    be = _answers({"m2": "3", "m3": "3", "m5": "3" if same else "4"})
    s = Scorer(HashingEncoder(16), pool.names)
    prior = [0.2, 0.5, 0.45, 0.1, 0.4]  # a prior that alone never stops (mapped <= 0.76)
    s.weights = [np.zeros((16, 5), np.float32), np.asarray(prior, np.float32)]
    s.prior = np.asarray(prior)
    router = RouteMoA(
        s, PoolRuntime(pool, overrides={m: be for m in names}), assessment="agreement"
    )
    task = ArithmeticTask()
    trace = await router.answer(task.load(n=1)[0], task)
    first = trace.meta["rounds"][0]
    assert first["models"] == ["m2", "m3", "m5"]
    if same:
        assert first["agreement"] == {"m2": 1.0, "m3": 1.0, "m5": 1.0}
        assert trace.meta["stop_reason"].startswith("early stop after round 1")
    else:
        assert first["agreement"]["m5"] < first["agreement"]["m2"] < 1.0
        assert len(trace.meta["rounds"]) >= 2
        # agreement adds evidence, never drops a model below its prior: the round is kept
        assert trace.meta["rounds"][1]["models"] == ["m2", "m3", "m5"]
