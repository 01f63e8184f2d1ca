"""One router evaluator: the same rules for ``route eval``, the benchmarks and the Python API.

>>> from moagraph.route.evaluator import evaluate_router      # doctest: +SKIP
>>> ev = evaluate_router(scorer, load_ground_truth("zeroeval-math"))  # doctest: +SKIP
>>> console.print(ev.table())                                  # doctest: +SKIP

Rules (each one is checked by ``tests/test_route_eval*.py``):

- **Which queries.** Any ground-truth pool (a bundled one or a pool folder: an external
  test pool) and optionally any id list. Every chosen query is scored except the ids the
  router was trained on (``scorer.meta["train_ids"]``) or used to choose its settings
  (``scorer.meta["selection_ids"]``, e.g. the validation ids a benchmark picks the head
  on); how many were dropped is stated. A router trained on every query of one pool is
  therefore evaluated on another pool's queries in full.
- **Baselines chosen on training ids only.** The best single model and the top-``k`` vote
  are the models with the best task-graded accuracy on the router's training queries of
  this pool; when the pool does not hold all of them (an external pool), the router's
  stored training prior (training accuracy by the recorded grade). Sparse, SMoA, dense and threshold rank models by that prior too.
- **One grader.** Every policy, single models and baselines included, is graded with
  the task's grader on the recorded extracted answer (:mod:`moagraph.route.gt_eval`).
- **Uncertainty.** 95% bootstrap CIs for each accuracy and paired-bootstrap 95% CIs for
  differences (same queries), against dense and against the best single model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moagraph.route.gt import GroundTruth, _task
from moagraph.route.gt_eval import (
    FINAL_ANSWER_NOTE,
    GTResult,
    _Cost,
    _eq,
    bootstrap_ci,
    evaluate_gt,
    paired_bootstrap,
    vote_correct,
)
from moagraph.route.routemoa import RouteMoA, agreement_scores, answer_features

DEFAULT_POLICIES = (
    "routemoa",
    "routemoa-noevidence",
    "routemoa-1r",
    "sparse",
    "smoa",
    "dense",
    "single",
    "random",
    "threshold",
    "oracle",
)
"""Policies ``route eval`` and the benchmark compare on ground-truth pools. ``routemoa``
uses answer agreement on replay pools (its default there); ``routemoa-noevidence`` is
the official in-answer assessment, which on a replay reads no score (the old behaviour)."""


class EvalError(ValueError):
    """Nothing left to evaluate, or an id the pool does not hold."""


def trained_ids(scorer: Any) -> set[str]:
    """Ids the router was trained on or had its settings chosen on."""
    meta = getattr(scorer, "meta", {}) or {}
    return set(meta.get("train_ids") or []) | set(meta.get("selection_ids") or [])


@dataclass
class EvalIds:
    """The queries an evaluation scores and the ones it refused."""

    ids: list[str]
    n_requested: int
    dropped: list[str]
    source: str

    def line(self) -> str:
        return (
            f"scoring {len(self.ids)} of {self.n_requested} queries ({self.source}); "
            f"dropped {len(self.dropped)} the router was trained on"
        )


def select_ids(
    scorer: Any,
    pool_ids: list[str],
    ids: Iterable[str] | None = None,
    source: str = "",
    fallback: Callable[[], list[str]] | None = None,
) -> EvalIds:
    """``ids`` (default: every id of the pool) minus the ids the router was trained on.

    A router file that records no train ids cannot tell them apart: ``fallback`` (e.g.
    the old stored split re-applied) gives the held-out ids, else it is refused."""
    known = set(pool_ids)
    want = list(dict.fromkeys(ids)) if ids is not None else list(pool_ids)
    missing = [q for q in want if q not in known]
    if missing:
        raise EvalError(
            f"{len(missing)} of the {len(want)} requested ids are not in the pool, e.g. "
            f"{missing[0]!r}"
        )
    seen = trained_ids(scorer)
    if not seen:
        if fallback is None:
            raise EvalError(
                "the router file records no train ids; cannot tell held-out queries apart "
                "(retrain it with `moagraph route train`)"
            )
        held = set(fallback())
        keep = [q for q in want if q in held]
        return EvalIds(
            keep, len(want), [q for q in want if q not in held], source + ", old split re-applied"
        )
    keep = [q for q in want if q not in seen]
    dropped = [q for q in want if q in seen]
    if not keep:
        raise EvalError(
            f"no held-out queries: every one of the {len(want)} chosen queries was used to "
            "train this router; evaluate on other ids or another pool"
        )
    return EvalIds(keep, len(want), dropped, source or "chosen ids")


@dataclass
class RouterEval:
    """Per-policy results on the same queries, with what the baselines were chosen on."""

    setting: str
    ids: EvalIds
    results: list[GTResult]
    baselines: dict[str, Any]
    assessments: dict[str, str]
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    def get(self, policy: str) -> GTResult:
        for r in self.results:
            if r.policy == policy:
                return r
        raise KeyError(policy)

    def diff(self, a: str, b: str) -> tuple[float, float, float]:
        """Paired difference of vote accuracy a - b with its 95% CI."""
        return paired_bootstrap(self.get(a).vote, self.get(b).vote, seed=self.seed)

    def rows(self) -> list[dict[str, Any]]:
        names = {r.policy for r in self.results}
        dense = self.get("dense") if "dense" in names else None
        single = self.baselines.get("best_single_policy")
        out = []
        for r in self.results:
            lo, hi = bootstrap_ci(r.vote, seed=self.seed)
            row: dict[str, Any] = {"policy": r.policy, "n": r.n, **r.mean, "vote_ci": [lo, hi]}
            if dense is not None:
                row["flops_vs_dense"] = float(r.flops.mean() / dense.flops.mean())
                dd = float(dense.dollars.mean())
                row["dollars_vs_dense"] = float(r.dollars.mean() / dd) if dd > 0 else None
                row["minus_dense"] = list(paired_bootstrap(r.vote, dense.vote, seed=self.seed))
            if single in names:
                row["minus_best_single"] = list(
                    paired_bootstrap(r.vote, self.get(single).vote, seed=self.seed)
                )
            if r.policy in self.assessments:
                row["assessment"] = self.assessments[r.policy]
            out.append(row)
        return out

    def table(self, title: str | None = None) -> Any:
        from rich.table import Table

        t = Table(
            title=title or f"{self.setting}: {self.ids.line()}",
            caption=FINAL_ANSWER_NOTE
            + "; CIs: 95% bootstrap, differences paired over the same queries",
        )
        cols = (
            "policy",
            "acc [95% CI]",
            "select",
            "FLOPs vs dense",
            "$ vs dense",
            "calls",
            "rounds",
            "- dense [CI]",
            "- best single [CI]",
        )
        for c in cols:
            t.add_column(c, justify="left" if c == "policy" else "right")

        def fmt(d: Any) -> str:
            return "-" if d is None else f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"

        for row in self.rows():
            fl, dl = row.get("flops_vs_dense"), row.get("dollars_vs_dense")
            t.add_row(
                row["policy"],
                f"{row['vote']:.3f} [{row['vote_ci'][0]:.3f}, {row['vote_ci'][1]:.3f}]",
                f"{row['select']:.3f}",
                "-" if fl is None else f"{100 * fl:.1f}%",
                "-" if dl is None else f"{100 * dl:.1f}%",
                f"{row['calls']:.1f}",
                f"{row['rounds']:.2f}",
                fmt(row.get("minus_dense")),
                fmt(row.get("minus_best_single")),
            )
        return t

    def summary_lines(self) -> list[str]:
        b = self.baselines
        out = [
            f"baselines chosen on {b['chosen_on']}: best single {b['best_single']} "
            f"(train acc {b['train_acc'][b['best_single']]:.3f}), top-{len(b['top_k'])} vote "
            f"{', '.join(b['top_k'])}",
        ]
        out += [f"{p}: {a}" for p, a in self.assessments.items()]
        return out + self.notes

    def to_dict(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "n": len(self.ids.ids),
            "n_requested": self.ids.n_requested,
            "n_dropped_trained": len(self.ids.dropped),
            "source": self.ids.source,
            "baselines": {k: v for k, v in self.baselines.items() if k != "train_acc"},
            "policies": self.rows(),
            "notes": self.notes,
        }


def graded_labels(gt: GroundTruth, rows: np.ndarray) -> np.ndarray:
    """(rows x models) 0/1 from the task grader on the recorded extracted answers."""
    return np.asarray(
        [
            [float(gt.correct(int(qi), gt.answers[int(qi)][j])) for j in range(len(gt.models))]
            for qi in rows
        ]
    ).reshape(len(rows), len(gt.models))


def _fixed_result(name: str, gt: GroundTruth, rows: np.ndarray, models: list[str]) -> GTResult:
    """The vote of a fixed model set answering once (no aggregator), graded."""
    v, f, d = [], [], []
    for qi in rows:
        qi = int(qi)
        v.append(float(vote_correct(gt, qi, models)))
        c = _Cost(gt, qi)
        for m in models:
            c.add(m, c.prompt[m], c.out[m])
        f.append(c.flops)
        d.append(c.dollars)
    sel = np.asarray(
        [float(gt.correct(int(qi), gt.answers[int(qi)][gt.models.index(models[0])])) for qi in rows]
    )
    n = len(rows)
    return GTResult(
        name,
        n,
        np.asarray(v),
        sel,
        np.asarray(f),
        np.asarray(d),
        np.full(n, float(len(models))),
        np.ones(n),
    )


def choose_baselines(scorer: Any, gt: GroundTruth, k: int = 3) -> dict[str, Any]:
    """Best single model and top-``k`` models by accuracy on the router's training ids
    (graded by the task grader); the stored training prior (training accuracy by the
    recorded grade) when this pool does not hold every training id (an external pool)."""
    pos = {q: i for i, q in enumerate(gt.table.query_ids)}
    all_train = list(scorer.meta.get("train_ids") or [])
    train = [pos[q] for q in all_train if q in pos]
    if train and len(train) == len(all_train):
        acc = graded_labels(gt, np.asarray(train)).mean(axis=0)
        train_acc = {m: float(a) for m, a in zip(gt.models, acc)}
        on = f"{len(train)} training queries of this pool (task grader)"
    else:
        prior = scorer.prior_scores()
        train_acc = {m: float(prior.get(m, 0.0)) for m in gt.models}
        on = (
            "the router's stored training prior (this pool does not hold all "
            f"{len(all_train)} of its training ids)"
        )
    order = sorted(gt.models, key=lambda m: (-train_acc[m], m))
    return {"best_single": order[0], "top_k": order[:k], "train_acc": train_acc, "chosen_on": on}


def evaluate_router(
    scorer: Any,
    gt: GroundTruth,
    ids: Iterable[str] | None = None,
    policies: Iterable[str] = DEFAULT_POLICIES,
    *,
    k: int = 3,
    layers: int = 3,
    seed: int = 0,
    extra: Iterable[Any] = (),
    setting: str | None = None,
    source: str | None = None,
    progress: Any = None,
) -> RouterEval:
    """Every named policy (plus ``extra`` routers) on the held-out queries of ``gt``
    (``ids`` or all of them, minus the router's training ids), with the train-chosen
    baselines ``best single`` and ``top-k vote``; see the module doc for the rules."""
    from moagraph.models.runtime import PoolRuntime
    from moagraph.route import build_policies

    sel = select_ids(scorer, gt.table.query_ids, ids, source or f"pool {gt.pool.name}")
    rows = gt.rows(sel.ids)
    lab = graded_labels(gt, rows)
    labels = {q: dict(zip(gt.models, map(float, row))) for q, row in zip(sel.ids, lab)}
    pols = build_policies(list(policies), scorer, PoolRuntime(gt.pool), k, layers, seed, labels)
    pols += list(extra)
    res = evaluate_gt(pols, gt, rows, progress=progress)
    base = choose_baselines(scorer, gt, k)
    single = f"best single (train): {base['best_single']}"
    base["best_single_policy"] = single
    res.append(_fixed_result(single, gt, rows, [base["best_single"]]))
    res.append(_fixed_result(f"top-{k} vote (train)", gt, rows, base["top_k"]))
    assessments = {p.name: p.assessment_label for p in pols if isinstance(p, RouteMoA)}
    return RouterEval(
        setting or gt.pool.name,
        sel,
        res,
        base,
        assessments,
        seed,
    )


# --- part 5: answer-level features after round 1 -------------------------------------------


def answer_feature_rows(
    router: RouteMoA, gt: GroundTruth, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Features (:func:`moagraph.route.routemoa.answer_features`) and graded 0/1 outcome of
    every round-1 answer RouteMoA would collect on ``rows``."""
    tk = _task(gt.task_name)
    col = {m: j for j, m in enumerate(gt.models)}
    out = gt.table.out_tokens
    x, y = [], []
    for qi in rows:
        qi = int(qi)
        scores, _ = router.score(gt.table.texts[qi])
        r1 = router.rank(scores)[: router.config.k]
        ans = {m: gt.answers[qi][col[m]] for m in r1}
        agree = agreement_scores(ans, lambda a, b: _eq(tk, a, b))
        for m in r1:
            t = float(out[qi, col[m]]) if out is not None and np.isfinite(out[qi, col[m]]) else 0.0
            x.append(answer_features(scores[m], agree[m], t))
            y.append(float(gt.correct(qi, ans[m])))
    return np.asarray(x), np.asarray(y)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """L2-regularised logistic regression (Newton steps; the intercept is not penalised)."""
    w = np.zeros(x.shape[1])
    pen = np.full(x.shape[1], l2)
    pen[0] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
        g = x.T @ (p - y) + pen * w
        h = (x * (p * (1 - p))[:, None]).T @ x + np.diag(pen) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def fit_answer_model(
    router: RouteMoA, gt: GroundTruth, rows: np.ndarray, l2: float = 1.0
) -> tuple[tuple[float, float, float, float], dict[str, Any]]:
    """Coefficients for ``RouteMoAConfig.answer_model`` fitted on ``rows`` (use ids the
    scorer was not trained on, e.g. validation: on its own training ids the scorer's prior
    is over-confident), and a report: the fitted weights and the held-in log-loss of the
    prior alone vs with answer features."""
    x, y = answer_feature_rows(router, gt, rows)
    w = fit_logistic(x, y, l2)
    w0 = fit_logistic(x[:, :2], y, l2)

    def logloss(p: np.ndarray) -> float:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    rep = {
        "n_answers": len(y),
        "coef": dict(zip(("intercept", "logit_prior", "agreement", "log_tokens"), map(float, w))),
        "logloss_prior_only": logloss(1 / (1 + np.exp(-(x[:, :2] @ w0)))),
        "logloss_with_answer_features": logloss(1 / (1 + np.exp(-(x @ w)))),
    }
    coef = (float(w[0]), float(w[1]), float(w[2]), float(w[3]))
    return coef, rep


# --- part 5: the scorer's per-query signal ---------------------------------------------------


def _hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per query: 1 when the top ``k`` by ``scores`` hold a best model (any tied-best; a
    query nobody answers right is a hit, as in :func:`moagraph.route.evaluate.hit_rate`)."""
    lab = np.where(np.isnan(labels), -np.inf, labels)
    best = lab >= lab.max(axis=1, keepdims=True)
    order = np.argsort(-np.where(np.isnan(scores), -np.inf, scores), axis=1, kind="stable")[:, :k]
    return np.asarray(np.take_along_axis(best, order, axis=1).any(axis=1), float)


def hit_rates_with_ci(scorer: Any, train: Any, test: Any, seed: int = 0) -> list[dict[str, Any]]:
    """Scorer vs global prior (training accuracy of each model) top-1 / top-3 hit rates on
    ``test`` with 95% bootstrap CIs and the paired difference scorer - prior."""
    y = test.labels
    pred = scorer.predict(test.texts)
    prior = np.tile(np.nan_to_num(np.nanmean(train.labels, axis=0)), (len(test), 1))
    out = []
    for k in (1, 3):
        a, b = _hits(pred, y, k), _hits(prior, y, k)
        out.append(
            {
                "k": k,
                "scorer": float(a.mean()),
                "scorer_ci": list(bootstrap_ci(a, seed=seed)),
                "prior": float(b.mean()),
                "prior_ci": list(bootstrap_ci(b, seed=seed)),
                "scorer_minus_prior": list(paired_bootstrap(a, b, seed=seed)),
            }
        )
    return out
