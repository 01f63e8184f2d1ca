"""Studies: every trial of a search in SQLite, resumable, with a held-out pick.

Resume works by *replay*: the optimiser is rebuilt with the stored seed and
options, and each stored trial is asked again and told its stored reward
(no evaluation). Seeded optimisers reproduce their proposals exactly; an
agent's replies come back from the call cache. Should a proposal differ
anyway (an uncached, sampling agent), the stored graph is told instead and
the mismatch is counted, so the optimiser's history always matches the file.

The returned graph is the best of the top few training graphs re-evaluated
on held-out (validation) questions, not the last graph tried; when the
evaluator has test questions, that one graph is then scored on them once
(mean with a 95% CI). The search itself never evaluates a test id.

Every trial stores its phase (``pilot``, ``pretest``, ``search``,
``proposal``); :func:`phase_counts` splits a study's evaluations into pilot
and agent-guided ones.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moagraph.errors import ConfigError
from moagraph.graph.spec import Graph
from moagraph.search.base import Optimizer
from moagraph.search.evaluator import GraphEvaluator, mean_ci
from moagraph.search.space import graph_key
from moagraph.search.storage import (
    COMPLETE,
    FAILED,
    StorageLike,
    StudyStorage,
    TrialRow,
    get_storage,
)

__all__ = [
    "COMPLETE",
    "FAILED",
    "Study",
    "StudyError",
    "StudyResult",
    "TrialRow",
    "list_studies",
    "pareto_front",
    "phase_counts",
    "run_study",
]

GUIDED_PHASES = ("search", "proposal")


def phase_counts(trials: list[TrialRow]) -> dict[str, int]:
    """Evaluations per phase, plus ``guided`` (search + proposal) and ``prior`` (pilot + pretest)."""
    out: dict[str, int] = {}
    failed = sum(1 for t in trials if t.failed)
    for t in trials:
        out[t.phase] = out.get(t.phase, 0) + 1
    out["guided"] = sum(out.get(p, 0) for p in GUIDED_PHASES)
    out["prior"] = out.get("pilot", 0) + out.get("pretest", 0)
    if failed:
        out["failed"] = failed
    return out


# Config fields that must match for --resume to continue the same study.
RESUME_KEYS = ("optimizer", "seed", "task", "pool", "space", "train_ids", "optimizer_options")
# Also checked, but only when the stored config has them (studies made before they were
# recorded stay resumable): the pool's model identities and how trials were scored.
RESUME_KEYS_IF_STORED = (
    "pool_models",
    "heldout_ids",
    "sink_mode",
    "evaluator",
    "objective",
    "multi_objective",
    "agent_model",
)


class StudyError(ConfigError):
    """A study cannot be created or resumed as asked; the message says what to change."""


@dataclass
class StudyResult:
    best_graph: Graph
    train_reward: float
    heldout_reward: float | None
    cost: float
    latency: float
    n_trials: int
    stats: dict[str, Any] = field(default_factory=dict)
    pareto: list[TrialRow] = field(default_factory=list)
    heldout: list[dict[str, Any]] = field(default_factory=list)
    test_reward: float | None = None
    test_ci: tuple[float, float] | None = None
    test_n: int = 0
    phases: dict[str, int] = field(default_factory=dict)
    n_failed: int = 0
    study_name: str | None = None
    test_cost: float | None = None
    """Expected normalised FLOPs per test question (conditional graphs: of the nodes that ran)."""
    worst_cost: float | None = None
    """Conditional graphs: normalised FLOPs when every node runs (what a request budget caps)."""
    escalated: float | None = None
    """Conditional graphs: share of test questions on which some conditional node ran."""


def _where(storage: StudyStorage) -> str:
    return str(getattr(storage, "path", "in-memory storage"))


class Study:
    """One named study inside a storage (SQLite file or memory; a storage holds many)."""

    def __init__(self, storage: StorageLike, name: str) -> None:
        owned = not isinstance(storage, StudyStorage)
        self.storage: StudyStorage = get_storage(storage)
        self._owned = owned  # built here from a path: closed with the study
        self.name = name

    @property
    def path(self) -> Path | None:
        """The SQLite file, or None for an in-memory study."""
        p = getattr(self.storage, "path", None)
        return Path(p) if p is not None else None

    # --- lifecycle ---------------------------------------------------------------
    @classmethod
    def open(
        cls, storage: StorageLike, name: str, config: dict[str, Any], *, resume: bool = False
    ) -> Study:
        """Create a study, or reopen it with ``resume=True`` (config must match)."""
        s = cls(storage, name)
        old = s.storage.study_config(name)
        if old is None:
            s.storage.create_study(name, config)
            return s
        if not resume:
            s.close()
            raise StudyError(
                f"--study-name {name!r} already exists in {_where(s.storage)}; pass --resume to "
                "continue it or choose another --study-name"
            )
        for k in (*RESUME_KEYS, *(k for k in RESUME_KEYS_IF_STORED if k in old)):
            if json.dumps(old.get(k), sort_keys=True) != json.dumps(config.get(k), sort_keys=True):
                s.close()
                raise StudyError(
                    f"--resume: `{k}` differs from the stored study {name!r} "
                    f"(stored {old.get(k)!r}, now {config.get(k)!r}); use the same options or a new --study-name"
                )
        return s

    @classmethod
    def load(cls, storage: StorageLike, name: str) -> Study:
        is_file = isinstance(storage, (str, Path)) and not str(storage).startswith("sqlite:///")
        if is_file and not Path(str(storage)).exists():
            raise StudyError(f"study file {storage} does not exist")
        s = cls(storage, name)
        if s.storage.study_config(name) is None:
            known = s.storage.study_names()
            s.close()
            raise StudyError(
                f"study {name!r} is not in {_where(s.storage)}; known: {', '.join(known) or 'none'}"
            )
        return s

    def close(self) -> None:
        if self._owned:
            self.storage.close()

    @property
    def config(self) -> dict[str, Any]:
        cfg = self.storage.study_config(self.name)
        if cfg is None:
            raise StudyError(f"study {self.name!r} is not in {_where(self.storage)}")
        return cfg

    # --- trials ---------------------------------------------------------------
    def add_trial(self, t: TrialRow) -> None:
        self.storage.add_trial(self.name, t)

    def trials(self) -> list[TrialRow]:
        return self.storage.trials(self.name)

    def add_heldout(
        self,
        graph: Graph,
        source: str,
        train_reward: float | None,
        heldout: float,
        cost: float,
        latency: float,
    ) -> None:
        self.storage.add_heldout(
            self.name,
            {
                "graph": graph.to_dict(),
                "source": source,
                "train_reward": train_reward,
                "heldout_reward": heldout,
                "cost": cost,
                "latency": latency,
            },
        )

    def heldout_rows(self) -> list[dict[str, Any]]:
        return self.storage.heldout_rows(self.name)

    def set_result(self, result: dict[str, Any], status: str = "done") -> None:
        self.storage.set_result(self.name, result, status)

    def result(self) -> dict[str, Any] | None:
        return self.storage.result(self.name)


def list_studies(path: str | Path) -> list[str]:
    db = sqlite3.connect(str(path))
    try:
        return [r[0] for r in db.execute("SELECT name FROM studies ORDER BY created")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def pareto_front(trials: list[TrialRow], use_latency: bool = True) -> list[TrialRow]:
    """Trials not dominated on (reward up, cost down, latency down)."""

    def vec(t: TrialRow) -> tuple[float, ...]:
        return (-t.reward, t.cost, t.latency) if use_latency else (-t.reward, t.cost)

    uniq: dict[str, TrialRow] = {}
    for t in trials:
        if t.failed:
            continue
        k = graph_key(t.graph)
        if k not in uniq or t.reward > uniq[k].reward:
            uniq[k] = t
    pts = list(uniq.values())
    front = []
    for t in pts:
        a = vec(t)
        dominated = any(
            all(x <= y for x, y in zip(vec(o), a)) and any(x < y for x, y in zip(vec(o), a))
            for o in pts
            if o is not t
        )
        if not dominated:
            front.append(t)
    return sorted(front, key=lambda t: t.cost)


ProgressFn = Callable[[int, int, TrialRow, float], None]


async def run_study(
    study: Study,
    optimizer: Optimizer,
    evaluator: GraphEvaluator,
    iterations: int,
    *,
    heldout_top: int = 3,
    multi_objective: bool = False,
    cost_weight: float = 0.05,
    latency_weight: float = 0.0,
    on_trial: ProgressFn | None = None,
    catch: tuple[type[Exception], ...] = (Exception,),
) -> StudyResult:
    """Drive ``optimizer`` for at most ``iterations`` evaluations (resuming stored
    ones; an optimiser that is ``finished`` earlier, e.g. after its guided
    iterations, stops the loop), pick on held-out, then report on test.

    Objective: the reward; with ``multi_objective`` minus ``cost_weight`` x
    cost / budget; with ``latency_weight`` > 0 (latency-aware search) also
    minus ``latency_weight`` x latency / the first trial's latency.

    An evaluation that raises one of ``catch`` is stored as a ``failed`` trial
    (with its error; the optimiser is told ``fail``, not a reward) and the search
    goes on; failed trials count towards ``iterations`` but never as best. Pass
    ``catch=()`` to let the first error stop the study instead.
    """
    if iterations < 1:
        raise StudyError(f"iterations={iterations}: use --iterations >= 1")
    budget = optimizer.space.budget or 1.0
    lat_ref: list[float] = []

    def objective(
        reward: float, cost: float, latency: float = 0.0, over_budget: str | None = None
    ) -> float:
        if over_budget:  # a conditional graph whose expected cost breaks the budget:
            # below every feasible objective, less so the closer it comes
            return -max(cost / budget - 1.0, 1e-6)
        obj = reward - cost_weight * cost / budget if multi_objective else reward
        if latency_weight > 0:
            if not lat_ref:
                lat_ref.append(latency if latency > 0 else 1.0)
            obj -= latency_weight * latency / lat_ref[0]
        return obj

    stored = study.trials()
    mismatches = 0
    best = float("-inf")
    for row in stored[:iterations]:
        cand = await optimizer.ask()
        if graph_key(cand.graph) != graph_key(row.graph):
            mismatches += 1
            cand.graph = row.graph
        if row.failed:
            await optimizer.fail(cand, row.error or "")
        else:
            if latency_weight > 0 and not lat_ref:
                lat_ref.append(row.latency if row.latency > 0 else 1.0)
            await optimizer.tell(
                cand,
                row.objective,
                {
                    "cost": row.cost,
                    "latency": row.latency,
                    "node_scores": row.state.get("node_scores", {}),
                    "escalated": row.state.get("escalated"),
                    "over_budget": row.state.get("over_budget"),
                },
            )
            best = max(best, row.reward)
        if on_trial:
            on_trial(row.number + 1, iterations, row, best)
    for number in range(len(stored), iterations):
        if optimizer.finished:
            break
        cand = await optimizer.ask()
        try:
            res = await evaluator.evaluate(cand.graph, "train")
        except catch as e:
            error = f"{type(e).__name__}: {e}"
            await optimizer.fail(cand, error)
            row = TrialRow(
                number,
                cand.phase,
                cand.graph,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                {"snapshot": optimizer.snapshot(), "info": cand.info},
                FAILED,
                error,
            )
            study.add_trial(row)
            if on_trial:
                on_trial(number + 1, iterations, row, best)
            continue
        over = getattr(res, "over_budget", None)
        obj = objective(res.reward, res.cost, res.latency_s, over)
        node_scores = dict(getattr(res, "node_scores", None) or {})
        await optimizer.tell(
            cand,
            obj,
            {
                "cost": res.cost,
                "latency": res.latency_s,
                "node_scores": node_scores,
                "escalated": getattr(res, "escalated", None),
                "over_budget": over,
            },
        )
        state: dict[str, Any] = {"snapshot": optimizer.snapshot(), "info": cand.info}
        if over:
            state["over_budget"] = over
        if getattr(res, "worst_cost", None) is not None:
            state["worst_cost"] = res.worst_cost
            state["escalated"] = res.escalated
        if node_scores:
            state["node_scores"] = node_scores  # told again on resume
        row = TrialRow(
            number,
            cand.phase,
            cand.graph,
            res.reward,
            obj,
            res.cost,
            res.dollars,
            res.latency_s,
            state,
        )
        study.add_trial(row)
        best = max(best, res.reward)
        if on_trial:
            on_trial(number + 1, iterations, row, best)

    all_trials = study.trials()
    if not all_trials:
        raise StudyError("the study has no trials; the optimiser proposed nothing")
    trials = [t for t in all_trials if t.status == COMPLETE]
    if not trials:
        first = all_trials[0]
        raise StudyError(
            f"every trial failed ({len(all_trials)}); the first (trial {first.number}): {first.error}"
        )
    # Held-out pick: top-k distinct training graphs; the optimiser's final graph takes the last slot.
    ranked: list[TrialRow] = []
    seen: set[str] = set()
    # graphs whose expected cost broke the budget are never picked while another fits
    fitting = [t for t in trials if not t.state.get("over_budget")] or trials
    for t in sorted(fitting, key=lambda t: (-t.objective, t.cost, t.number)):
        k = graph_key(t.graph)
        if k not in seen:
            seen.add(k)
            ranked.append(t)
    picks: list[tuple[Graph, str, float | None]] = [
        (t.graph, f"trial {t.number}", t.reward) for t in ranked[:heldout_top]
    ]
    for g in optimizer.final_candidates():
        if graph_key(g) not in {graph_key(p[0]) for p in picks}:
            tr = next((t.reward for t in trials if graph_key(t.graph) == graph_key(g)), None)
            if len(picks) >= heldout_top and picks:
                picks[-1] = (g, "final", tr)
            else:
                picks.append((g, "final", tr))
    has_heldout = bool(
        getattr(evaluator, "examples", {}).get("heldout")
        or getattr(evaluator, "ids", {}).get("heldout")
    )
    chosen: tuple[Graph, float | None, float | None, float, float] | None = None
    held: list[dict[str, Any]] = []
    for g, src, tr in picks:
        if has_heldout:
            r = await evaluator.evaluate(g, "heldout")
            study.add_heldout(g, src, tr, r.reward, r.cost, r.latency_s)
            held.append(
                {"source": src, "train_reward": tr, "heldout_reward": r.reward, "cost": r.cost}
            )
            score = objective(r.reward, r.cost, r.latency_s, getattr(r, "over_budget", None))
            if chosen is None or (score, tr or 0.0) > (
                objective(chosen[2] or 0.0, chosen[3], chosen[4]),
                chosen[1] or 0.0,
            ):
                chosen = (g, tr, r.reward, r.cost, r.latency_s)
    if chosen is None:
        top = ranked[0]
        chosen = (top.graph, top.reward, None, top.cost, top.latency)
    g, tr, hr, cost, lat = chosen
    if tr is None:
        tr = (await evaluator.evaluate(g, "train")).reward
    test_reward: float | None = None
    test_ci: tuple[float, float] | None = None
    test_n = 0
    test_cost: float | None = None
    worst: float | None = None
    escalated: float | None = None
    has_test = bool(
        getattr(evaluator, "examples", {}).get("test") or getattr(evaluator, "ids", {}).get("test")
    )
    if has_test:  # the picked graph only, once
        rt = await evaluator.evaluate(g, "test")
        test_reward, lo, hi = mean_ci(rt.scores) if rt.scores else (rt.reward, rt.reward, rt.reward)
        test_ci, test_n = (lo, hi), rt.n
        test_cost = rt.cost
        worst, escalated = getattr(rt, "worst_cost", None), getattr(rt, "escalated", None)
    phases = phase_counts(all_trials)
    stats = {
        **optimizer.stats(),
        "resume_mismatches": mismatches,
        "trials": len(all_trials),
        "failed": len(all_trials) - len(trials),
        "phases": phases,
    }
    front = pareto_front(trials)
    result = StudyResult(
        best_graph=g,
        train_reward=tr,
        heldout_reward=hr,
        cost=cost,
        latency=lat,
        n_trials=len(all_trials),
        stats=stats,
        pareto=front,
        heldout=held,
        test_reward=test_reward,
        test_ci=test_ci,
        test_n=test_n,
        phases=phases,
        n_failed=len(all_trials) - len(trials),
        study_name=study.name,
        test_cost=test_cost,
        worst_cost=worst,
        escalated=escalated,
    )
    study.set_result(
        {
            "best_graph": g.to_dict(),
            "train_reward": tr,
            "heldout_reward": hr,
            "cost": cost,
            "latency": lat,
            "n_trials": len(all_trials),
            "n_failed": len(all_trials) - len(trials),
            "stats": stats,
            "phases": phases,
            "test_reward": test_reward,
            "test_ci": list(test_ci) if test_ci else None,
            "test_n": test_n,
            "test_cost": test_cost,
            "worst_cost": worst,
            "escalated": escalated,
            "pareto": [
                {"number": t.number, "reward": t.reward, "cost": t.cost, "latency": t.latency}
                for t in front
            ],
        }
    )
    return result
