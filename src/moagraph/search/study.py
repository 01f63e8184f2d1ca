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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moagraph.errors import ConfigError
from moagraph.graph.spec import Graph
from moagraph.search.base import Optimizer
from moagraph.search.evaluator import GraphEvaluator, mean_ci
from moagraph.search.space import graph_key

GUIDED_PHASES = ("search", "proposal")


def phase_counts(trials: list[TrialRow]) -> dict[str, int]:
    """Evaluations per phase, plus ``guided`` (search + proposal) and ``prior`` (pilot + pretest)."""
    out: dict[str, int] = {}
    for t in trials:
        out[t.phase] = out.get(t.phase, 0) + 1
    out["guided"] = sum(out.get(p, 0) for p in GUIDED_PHASES)
    out["prior"] = out.get("pilot", 0) + out.get("pretest", 0)
    return out


SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
  name TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL,
  status TEXT NOT NULL DEFAULT 'running', result TEXT
);
CREATE TABLE IF NOT EXISTS trials (
  study TEXT NOT NULL, number INTEGER NOT NULL, phase TEXT NOT NULL,
  graph TEXT NOT NULL, graph_key TEXT NOT NULL, reward REAL NOT NULL, objective REAL NOT NULL,
  cost REAL NOT NULL, dollars REAL NOT NULL, latency REAL NOT NULL, state TEXT, created REAL NOT NULL,
  PRIMARY KEY (study, number)
);
CREATE TABLE IF NOT EXISTS heldout (
  study TEXT NOT NULL, graph_key TEXT NOT NULL, graph TEXT NOT NULL, source TEXT NOT NULL,
  train_reward REAL, heldout_reward REAL NOT NULL, cost REAL NOT NULL, latency REAL NOT NULL,
  PRIMARY KEY (study, graph_key)
);
"""

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
class TrialRow:
    number: int
    phase: str
    graph: Graph
    reward: float
    objective: float
    cost: float
    dollars: float
    latency: float
    state: dict[str, Any]


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


class Study:
    """One named study inside a SQLite file (a file can hold many studies)."""

    def __init__(self, path: str | Path, name: str) -> None:
        self.path = Path(path)
        self.name = name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path))
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    # --- lifecycle ---------------------------------------------------------------
    @classmethod
    def open(
        cls, path: str | Path, name: str, config: dict[str, Any], *, resume: bool = False
    ) -> Study:
        """Create a study, or reopen it with ``resume=True`` (config must match)."""
        s = cls(path, name)
        row = s.db.execute("SELECT config FROM studies WHERE name=?", (name,)).fetchone()
        if row is None:
            s.db.execute(
                "INSERT INTO studies(name, config, created) VALUES (?,?,?)",
                (name, json.dumps(config, sort_keys=True), time.time()),
            )
            s.db.commit()
            return s
        if not resume:
            s.close()
            raise StudyError(
                f"--study-name {name!r} already exists in {path}; pass --resume to continue it "
                "or choose another --study-name"
            )
        old = json.loads(row[0])
        for k in (*RESUME_KEYS, *(k for k in RESUME_KEYS_IF_STORED if k in old)):
            if json.dumps(old.get(k), sort_keys=True) != json.dumps(config.get(k), sort_keys=True):
                s.close()
                raise StudyError(
                    f"--resume: `{k}` differs from the stored study {name!r} "
                    f"(stored {old.get(k)!r}, now {config.get(k)!r}); use the same options or a new --study-name"
                )
        return s

    @classmethod
    def load(cls, path: str | Path, name: str) -> Study:
        if not Path(path).exists():
            raise StudyError(f"study file {path} does not exist")
        s = cls(path, name)
        if s.db.execute("SELECT 1 FROM studies WHERE name=?", (name,)).fetchone() is None:
            s.close()
            raise StudyError(
                f"study {name!r} is not in {path}; known: {', '.join(list_studies(path))}"
            )
        return s

    def close(self) -> None:
        self.db.close()

    @property
    def config(self) -> dict[str, Any]:
        row = self.db.execute("SELECT config FROM studies WHERE name=?", (self.name,)).fetchone()
        return json.loads(row[0])

    # --- trials ---------------------------------------------------------------
    def add_trial(self, t: TrialRow) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO trials VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                self.name,
                t.number,
                t.phase,
                json.dumps(t.graph.to_dict()),
                graph_key(t.graph),
                t.reward,
                t.objective,
                t.cost,
                t.dollars,
                t.latency,
                json.dumps(t.state),
                time.time(),
            ),
        )
        self.db.commit()

    def trials(self) -> list[TrialRow]:
        rows = self.db.execute(
            "SELECT number, phase, graph, reward, objective, cost, dollars, latency, state "
            "FROM trials WHERE study=? ORDER BY number",
            (self.name,),
        ).fetchall()
        return [
            TrialRow(
                n, ph, Graph.model_validate(json.loads(g)), r, o, c, d, lat, json.loads(st or "{}")
            )
            for n, ph, g, r, o, c, d, lat, st in rows
        ]

    def add_heldout(
        self,
        graph: Graph,
        source: str,
        train_reward: float | None,
        heldout: float,
        cost: float,
        latency: float,
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO heldout VALUES (?,?,?,?,?,?,?,?)",
            (
                self.name,
                graph_key(graph),
                json.dumps(graph.to_dict()),
                source,
                train_reward,
                heldout,
                cost,
                latency,
            ),
        )
        self.db.commit()

    def heldout_rows(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT graph, source, train_reward, heldout_reward, cost, latency FROM heldout WHERE study=?",
            (self.name,),
        ).fetchall()
        return [
            {
                "graph": json.loads(g),
                "source": s,
                "train_reward": tr,
                "heldout_reward": h,
                "cost": c,
                "latency": lat,
            }
            for g, s, tr, h, c, lat in rows
        ]

    def set_result(self, result: dict[str, Any], status: str = "done") -> None:
        self.db.execute(
            "UPDATE studies SET result=?, status=? WHERE name=?",
            (json.dumps(result), status, self.name),
        )
        self.db.commit()

    def result(self) -> dict[str, Any] | None:
        row = self.db.execute("SELECT result FROM studies WHERE name=?", (self.name,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None


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
) -> StudyResult:
    """Drive ``optimizer`` for at most ``iterations`` evaluations (resuming stored
    ones; an optimiser that is ``finished`` earlier, e.g. after its guided
    iterations, stops the loop), pick on held-out, then report on test.

    Objective: the reward; with ``multi_objective`` minus ``cost_weight`` x
    cost / budget; with ``latency_weight`` > 0 (latency-aware search) also
    minus ``latency_weight`` x latency / the first trial's latency.
    """
    if iterations < 1:
        raise StudyError(f"iterations={iterations}: use --iterations >= 1")
    budget = optimizer.space.budget or 1.0
    lat_ref: list[float] = []

    def objective(reward: float, cost: float, latency: float = 0.0) -> float:
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
        if latency_weight > 0 and not lat_ref:
            lat_ref.append(row.latency if row.latency > 0 else 1.0)
        await optimizer.tell(cand, row.objective, {"cost": row.cost, "latency": row.latency})
        best = max(best, row.reward)
        if on_trial:
            on_trial(row.number + 1, iterations, row, best)
    for number in range(len(stored), iterations):
        if optimizer.finished:
            break
        cand = await optimizer.ask()
        res = await evaluator.evaluate(cand.graph, "train")
        obj = objective(res.reward, res.cost, res.latency_s)
        await optimizer.tell(cand, obj, {"cost": res.cost, "latency": res.latency_s})
        row = TrialRow(
            number,
            cand.phase,
            cand.graph,
            res.reward,
            obj,
            res.cost,
            res.dollars,
            res.latency_s,
            {"snapshot": optimizer.snapshot(), "info": cand.info},
        )
        study.add_trial(row)
        best = max(best, res.reward)
        if on_trial:
            on_trial(number + 1, iterations, row, best)

    trials = study.trials()
    if not trials:
        raise StudyError("the study has no trials; the optimiser proposed nothing")
    # Held-out pick: top-k distinct training graphs; the optimiser's final graph takes the last slot.
    ranked: list[TrialRow] = []
    seen: set[str] = set()
    for t in sorted(trials, key=lambda t: (-t.objective, t.cost, t.number)):
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
            score = objective(r.reward, r.cost, r.latency_s)
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
    has_test = bool(
        getattr(evaluator, "examples", {}).get("test") or getattr(evaluator, "ids", {}).get("test")
    )
    if has_test:  # the picked graph only, once
        rt = await evaluator.evaluate(g, "test")
        test_reward, lo, hi = mean_ci(rt.scores) if rt.scores else (rt.reward, rt.reward, rt.reward)
        test_ci, test_n = (lo, hi), rt.n
    phases = phase_counts(trials)
    stats = {
        **optimizer.stats(),
        "resume_mismatches": mismatches,
        "trials": len(trials),
        "phases": phases,
    }
    front = pareto_front(trials)
    result = StudyResult(
        best_graph=g,
        train_reward=tr,
        heldout_reward=hr,
        cost=cost,
        latency=lat,
        n_trials=len(trials),
        stats=stats,
        pareto=front,
        heldout=held,
        test_reward=test_reward,
        test_ci=test_ci,
        test_n=test_n,
        phases=phases,
    )
    study.set_result(
        {
            "best_graph": g.to_dict(),
            "train_reward": tr,
            "heldout_reward": hr,
            "cost": cost,
            "latency": lat,
            "n_trials": len(trials),
            "stats": stats,
            "phases": phases,
            "test_reward": test_reward,
            "test_ci": list(test_ci) if test_ci else None,
            "test_n": test_n,
            "pareto": [
                {"number": t.number, "reward": t.reward, "cost": t.cost, "latency": t.latency}
                for t in front
            ],
        }
    )
    return result
