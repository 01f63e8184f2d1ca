"""Graph -> reward: the expensive step every optimiser's ask/tell loop waits on.

* :class:`ExecutorEvaluator` runs the graph through ``GraphExecutor`` (live,
  local or replay backends; the runtime's SQLite call cache makes repeated
  graphs cheap) and scores with the task's grader.
* :class:`ExactReplayEvaluator` scores *flat* graphs (first-layer assistants
  feeding the sink) from recorded samples with no LLM call at all, fast
  enough for exhaustive enumeration. Node ``k`` of model ``m`` reads sample
  ``k`` of ``m`` for the query, exactly as the executor's replay path does.
  ``mode="vote"``: majority over the recorded answers, same clustering and
  tie-break as the executor's vote node. ``mode="select"``: best-of-n with an
  *oracle* verifier (the highest recorded score), an upper-bound objective
  for recordings that cannot be voted on (AlpacaEval chat outputs with
  judge win probabilities). It is labelled as such wherever it is used.

:func:`is_votable` says whether a task's answers can be majority-voted
(math, choice, code kinds); :func:`pool_replay_records` and
:meth:`ExactReplayEvaluator.from_pool` build the exact evaluator straight
from an all-replay pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from moagraph.errors import ConfigError
from moagraph.graph.spec import Graph
from moagraph.search.space import SearchSpace, graph_key
from moagraph.tasks.base import Example, Task

Split = Literal["train", "heldout", "test"]
"""``train``: search; ``heldout``: the validation ids the final graph is picked on;
``test``: reported once, on the picked graph only (never seen during search)."""


def _split_key(split: str) -> str:
    return "heldout" if split == "validation" else split


VOTABLE_KINDS = frozenset({"math", "choice", "code", "exact"})
"""Task kinds whose extracted answers cluster, so a vote sink is meaningful."""


def is_votable(task: Any) -> bool:
    """True when majority vote over ``task.extract`` answers means something.

    Free-form chat answers never cluster (each is its own "answer"), so a
    vote sink would just pass its first input on: not a collaboration.
    """
    return getattr(task, "kind", None) in VOTABLE_KINDS


def is_replay_pool(pool: Any, models: Sequence[str] | None = None) -> bool:
    """Every (searched) model of the pool answers from recordings."""
    specs = [pool[m] for m in models] if models else list(pool.models)
    return bool(specs) and all(m.backend == "replay" for m in specs)


def pool_replay_records(
    pool: Any, models: Sequence[str] | None = None, query_ids: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Recorded samples of the pool's replay models, renamed to pool model names.

    Reads each distinct replay file once; ``query_ids`` keeps only those queries.
    """
    from moagraph.models.replay import ReplayStore

    specs = [pool[m] for m in models] if models else list(pool.models)
    keep = None if query_ids is None else {str(q) for q in query_ids}
    by_file: dict[Any, list[Any]] = {}
    for spec in specs:
        if spec.backend != "replay" or not spec.replay:
            raise EvaluatorError(
                f"model {spec.name!r} is not a replay model; the exact evaluator needs recordings"
            )
        by_file.setdefault(pool.resolve(spec.replay), []).append(spec)
    out: list[dict[str, Any]] = []
    for path, group in by_file.items():
        recorded: dict[str, list[str]] = {}
        for spec in group:
            recorded.setdefault(spec.replay_model or spec.name, []).append(spec.name)
        for rec in ReplayStore(path).records():
            if keep is not None and str(rec["query_id"]) not in keep:
                continue
            for name in recorded.get(str(rec["model"]), ()):
                out.append({**rec, "model": name})
    return out


def recorded_copies(
    records: Iterable[dict[str, Any]], models: Sequence[str], query_ids: Sequence[str]
) -> dict[str, int]:
    """Per model: consecutive samples 0..n-1 recorded for *every* query (the copies a flat graph may use)."""
    have: set[tuple[str, str, int]] = {
        (str(r["model"]), str(r["query_id"]), int(r.get("sample", 0))) for r in records
    }
    out: dict[str, int] = {}
    for m in models:
        n = 0
        while query_ids and all((m, str(q), n) in have for q in query_ids):
            n += 1
        out[m] = n
    return out


class EvaluatorError(ConfigError):
    """The evaluator cannot score this graph or these records; the message says why."""


@dataclass
class EvalResult:
    reward: float
    cost: float  # normalised planned FLOPs per query: expected (mean over the questions scored)
    dollars: float  # expected, likewise
    latency_s: float  # mean critical-path latency per query
    n: int
    errors: int = 0
    scores: list[float] = field(default_factory=list)
    worst_cost: float | None = None
    """Normalised FLOPs when every node runs (None: the same as ``cost``, a plain graph)."""
    costs: list[float] = field(default_factory=list)
    """Per question: normalised planned FLOPs of the nodes that ran (conditional graphs)."""
    escalated: float | None = None
    """Conditional graphs: the share of questions on which some conditional node ran."""
    over_budget: str | None = None
    """Why the expected cost breaks the search budget (None: it fits). Such a graph is
    scored but never picked (the study tells the optimiser a reward of 0)."""
    node_scores: dict[str, float] = field(default_factory=dict)
    """Per worker node id: the mean score of that node's own answer on the split (the exact
    replay evaluator measures it for free; empty where it is not measured). Agent-REINFORCE's
    ``pilot="coverage"`` reads single-model accuracies from it."""


class GraphEvaluator(Protocol):
    space: SearchSpace

    async def evaluate(self, graph: Graph, split: Split = "train") -> EvalResult: ...


class ExecutorEvaluator:
    """Mean task score over the split's examples, through the real executor."""

    def __init__(
        self,
        runtime: Any,
        task: Task,
        space: SearchSpace,
        train: Sequence[Example],
        heldout: Sequence[Example] = (),
        *,
        concurrency: int = 8,
        default_params: Any = None,
        test: Sequence[Example] = (),
    ) -> None:
        from moagraph.graph.executor import GraphExecutor

        if not train:
            raise EvaluatorError("train examples: none given; use --train-n >= 1")
        self.runtime = runtime
        self.task = task
        self.space = space
        self.examples: dict[str, list[Example]] = {
            "train": list(train),
            "heldout": list(heldout),
            "test": list(test),
        }
        self.executor = GraphExecutor(runtime, task, default_params=default_params)
        self.concurrency = concurrency
        self._memo: dict[tuple[str, str], EvalResult] = {}
        self.evaluated_ids: dict[str, set[str]] = {"train": set(), "heldout": set(), "test": set()}
        """Query ids each split was actually evaluated on (a study must never touch test ids while searching)."""

    async def evaluate(self, graph: Graph, split: Split = "train") -> EvalResult:
        from moagraph.graph.evaluate import aevaluate
        from moagraph.graph.policy import GraphPolicy

        split = _split_key(split)  # type: ignore[assignment]
        exs = self.examples[split]
        if not exs:
            raise EvaluatorError(f"{split} examples: none given; use --heldout-n / --test-n >= 1")
        key = (graph_key(graph), split)
        if key in self._memo:
            return self._memo[key]
        self.evaluated_ids[split].update(e.id for e in exs)
        policy = _SkipRecorder(GraphPolicy(graph, self.executor))
        rep = await aevaluate(policy, self.task, exs, concurrency=self.concurrency, progress=False)
        scores = [r.score if r.score is not None else 0.0 for r in rep.rows]
        res = EvalResult(
            reward=float(np.mean(scores)) if scores else 0.0,
            cost=self.space.graph_cost(graph),
            dollars=self.space.graph_dollars(graph),
            latency_s=rep.mean_latency_s,
            n=rep.n,
            errors=rep.errors,
            scores=scores,
        )
        if graph.conditional:
            node_cost = self.space.node_costs(graph)
            per_q = [policy.skipped.get(r.example_id, set()) for r in rep.rows]
            _expected_cost(res, self.space, graph, node_cost, per_q)
        self._memo[key] = res
        return res


class _SkipRecorder:
    """A policy wrapper that remembers, per query, which nodes a conditional graph skipped."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.name = policy.name
        self.skipped: dict[str, set[str]] = {}

    async def answer(self, example: Example, task: Task, on_token: Any = None) -> Any:
        trace = await self.policy.answer(example, task, on_token)
        self.skipped[example.id] = set(trace.meta.get("skipped_nodes", ()))
        return trace


def _expected_cost(
    res: EvalResult,
    space: SearchSpace,
    graph: Graph,
    node_cost: dict[str, tuple[float, float]],
    skipped: Sequence[set[str]],
) -> None:
    """Fill a conditional graph's expected and worst-case cost from which nodes ran."""
    flops = [sum(c for nid, (c, _) in node_cost.items() if nid not in sk) for sk in skipped]
    dollars = [sum(d for nid, (_, d) in node_cost.items() if nid not in sk) for sk in skipped]
    cond = {n.id for n in graph.nodes if n.condition is not None}
    res.worst_cost = res.cost
    res.costs = flops
    res.cost = float(np.mean(flops)) if flops else res.cost
    res.dollars = float(np.mean(dollars)) if dollars else res.dollars
    res.escalated = float(np.mean([bool(cond - sk) for sk in skipped])) if skipped else 0.0
    res.over_budget = space.expected_over_budget(res.cost, res.dollars)


@dataclass(frozen=True)
class Sample:
    answer: Any
    score: float
    latency_s: float = 0.0


class ExactReplayEvaluator:
    """Score flat graphs from recorded samples, with no LLM call (see module doc)."""

    def __init__(
        self,
        samples: dict[tuple[str, str, int], Sample],
        space: SearchSpace,
        train_ids: Sequence[str],
        heldout_ids: Sequence[str] = (),
        *,
        mode: Literal["vote", "select"] = "vote",
        task: Task | None = None,
        test_ids: Sequence[str] = (),
    ) -> None:
        if space.sink_mode == "llm":
            raise EvaluatorError(
                "the exact replay evaluator scores vote/select sinks from recordings; a charged LLM output "
                "node needs real calls (use the executor evaluator, or --sink vote on a replay pool)"
            )
        if mode == "vote" and task is None:
            raise EvaluatorError("mode='vote' needs the task (answer clustering); pass task=")
        if not train_ids:
            raise EvaluatorError("train ids: none given; use --train-n >= 1")
        self.samples = samples
        self.space = space
        self.mode = mode
        self.task = task
        self.ids: dict[str, list[str]] = {
            "train": list(train_ids),
            "heldout": list(heldout_ids),
            "test": list(test_ids),
        }
        self._memo: dict[tuple[str, str], EvalResult] = {}
        self._eq: dict[tuple[Any, Any], bool] = {}
        self.calls = 0
        self.evaluated_ids: dict[str, set[str]] = {"train": set(), "heldout": set(), "test": set()}
        """Query ids each split was actually evaluated on (a study must never touch test ids while searching)."""

    @classmethod
    def from_records(
        cls,
        records: Iterable[dict[str, Any]],
        space: SearchSpace,
        train: Sequence[Example],
        heldout: Sequence[Example] = (),
        *,
        mode: Literal["vote", "select"] = "vote",
        task: Task | None = None,
        model_map: dict[str, str] | None = None,
        test: Sequence[Example] = (),
    ) -> ExactReplayEvaluator:
        """From replay records ({model, query_id, sample, text, score?, latency_s?}).

        ``model_map`` maps a recorded model name to the pool name. A record
        without ``score`` is graded with ``task.grade`` against its example.
        """
        by_id = {ex.id: ex for ex in [*train, *heldout, *test]}
        mm = model_map or {}
        samples: dict[tuple[str, str, int], Sample] = {}
        for rec in records:
            qid = str(rec["query_id"])
            if qid not in by_id:
                continue
            model = mm.get(str(rec["model"]), str(rec["model"]))
            text = str(rec.get("text", ""))
            score = rec.get("score")
            if score is None:
                if task is None:
                    raise EvaluatorError(
                        f"record {model}/{qid} has no `score` and no task to grade it"
                    )
                score = task.grade(text, by_id[qid])
            answer = task.extract(text) if (task is not None and mode == "vote") else None
            samples[(model, qid, int(rec.get("sample", 0)))] = Sample(
                answer, float(score), float(rec.get("latency_s") or 0.0)
            )
        return cls(
            samples,
            space,
            [e.id for e in train],
            [e.id for e in heldout],
            mode=mode,
            task=task,
            test_ids=[e.id for e in test],
        )

    @classmethod
    def from_store(
        cls,
        store: Any,
        space: SearchSpace,
        train: Sequence[Example],
        heldout: Sequence[Example] = (),
        **kw: Any,
    ) -> ExactReplayEvaluator:
        """From a ``moagraph.models.replay.ReplayStore``."""
        return cls.from_records(store.records(), space, train, heldout, **kw)

    @classmethod
    def from_pool(
        cls,
        pool: Any,
        space: SearchSpace,
        train: Sequence[Example],
        heldout: Sequence[Example] = (),
        *,
        mode: Literal["vote", "select"] = "vote",
        task: Task | None = None,
        records: Sequence[dict[str, Any]] | None = None,
        test: Sequence[Example] = (),
    ) -> ExactReplayEvaluator:
        """From an all-replay pool (records of the space's models, renamed to pool names)."""
        if records is None:
            records = pool_replay_records(
                pool, space.model_names, [e.id for e in [*train, *heldout, *test]]
            )
        return cls.from_records(records, space, train, heldout, mode=mode, task=task, test=test)

    def n_samples(self, model: str) -> int:
        """Samples recorded for every train/heldout/test query (the copies the pool can answer)."""
        qids = self.ids["train"] + self.ids["heldout"] + self.ids["test"]
        n = 0
        while all((model, q, n) in self.samples for q in qids):
            n += 1
        return n

    def _samples_of(self, graph: Graph) -> dict[str, tuple[str, int]]:
        """(model, recorded sample) per worker node, numbered per model in topological order
        (the executor's rule); refuses a node with inputs (its answer was never recorded)."""
        counts: dict[str, int] = {}
        sample_of: dict[str, tuple[str, int]] = {}
        for nid in graph.topological_order():
            n = graph.node(nid)
            if nid == graph.sink:
                continue
            if n.inputs:
                raise EvaluatorError(
                    f"exact replay evaluator: node {nid!r} has inputs; it scores flat graphs only "
                    "(first-layer assistants into the sink, conditions allowed); use the executor "
                    "evaluator"
                )
            idx = n.sample_index if n.sample_index is not None else counts.get(n.model or "", 0)
            counts[n.model or ""] = counts.get(n.model or "", 0) + 1
            sample_of[nid] = (n.model or "", idx)
        return sample_of

    def _equivalent(self, a: Any, b: Any) -> bool:
        """``task.equivalent``, memoised (a cascade search compares the same answers often)."""
        try:
            key = (a, b)
            hit = self._eq.get(key)
        except TypeError:  # unhashable answers: no memo
            return bool(self.task.equivalent(a, b))  # type: ignore[union-attr]
        if hit is None:
            hit = bool(self.task.equivalent(a, b))  # type: ignore[union-attr]
            self._eq[key] = hit
        return hit

    async def evaluate(self, graph: Graph, split: Split = "train") -> EvalResult:
        return self.evaluate_sync(graph, split)

    def evaluate_sync(self, graph: Graph, split: Split = "train") -> EvalResult:
        """Score ``graph`` on ``split`` from the recordings: per query, the nodes whose
        condition holds run (clustered with the vote's rule), the sink votes (or selects)
        over the answers that ran, and the cost is that of the nodes that ran."""
        from moagraph.graph.agreement import condition_holds, majority

        split = _split_key(split)  # type: ignore[assignment]
        key = (graph_key(graph), split)
        if key in self._memo:
            return self._memo[key]
        if not self.ids[split]:
            raise EvaluatorError(f"{split} ids: none given; use --heldout-n / --test-n >= 1")
        self.evaluated_ids[split].update(self.ids[split])
        self.calls += 1
        sample_of = self._samples_of(graph)
        order = [nid for nid in graph.topological_order() if nid in sample_of]
        pos = {nid: j for j, nid in enumerate(order)}
        conds = [graph.node(nid).condition for nid in order]
        among = [[pos[i] for i in c.among] if c is not None else [] for c in conds]
        sink_idx = [pos[i] for i in graph.node(graph.sink).inputs]
        scores: list[float] = []
        lats: list[float] = []
        skipped: list[set[str]] = []
        own: dict[str, list[float]] = {nid: [] for nid in order}
        for qid in self.ids[split]:
            recs = []
            for nid in order:
                model, s = sample_of[nid]
                rec = self.samples.get((model, qid, s))
                if rec is None:
                    raise EvaluatorError(
                        f"no recording of {model!r} sample {s} for query {qid!r}: the pool holds "
                        f"{self.n_samples(model)} sample(s) per query; cap copies with max_copies"
                    )
                recs.append(rec)
            ran = [True] * len(order)
            finish = [0.0] * len(order)
            for j, cond in enumerate(conds):
                ready = max((finish[i] for i in among[j]), default=0.0)
                if cond is not None:
                    answers = [recs[i].answer for i in among[j] if ran[i]]
                    ran[j] = condition_holds(cond, answers, self._equivalent)
                finish[j] = ready + (recs[j].latency_s if ran[j] else 0.0)
            for j, nid in enumerate(order):
                if ran[j]:
                    own[nid].append(recs[j].score)
            voters = [i for i in sink_idx if ran[i]]
            if not voters:  # every input of the sink skipped: no answer
                scores.append(0.0)
            elif self.mode == "select":
                scores.append(max(recs[i].score for i in voters))
            else:
                win, _ = majority([recs[i].answer for i in voters], self._equivalent)
                scores.append(recs[voters[win]].score)
            lats.append(max((finish[i] for i in voters), default=0.0))
            skipped.append({nid for j, nid in enumerate(order) if not ran[j]})
        res = EvalResult(
            reward=float(np.mean(scores)) if scores else 0.0,
            cost=self.space.graph_cost(graph),
            dollars=self.space.graph_dollars(graph),
            latency_s=float(np.mean(lats)) if lats else 0.0,
            n=len(scores),
            scores=scores,
            node_scores={nid: float(np.mean(v)) for nid, v in own.items() if v},
        )
        if graph.conditional:
            _expected_cost(res, self.space, graph, self.space.node_costs(graph), skipped)
        self._memo[key] = res
        return res


def mean_ci(scores: Sequence[float], z: float = 1.96) -> tuple[float, float, float]:
    """Mean and 95% confidence interval of per-query scores.

    0/1 scores (accuracy): the Wilson score interval; other scores: the normal
    approximation with the sample standard deviation.
    """
    n = len(scores)
    if n == 0:
        return 0.0, 0.0, 0.0
    m = float(np.mean(scores))
    if all(s in (0.0, 1.0) for s in scores):
        den = 1 + z * z / n
        centre = (m + z * z / (2 * n)) / den
        half = z * float(np.sqrt(m * (1 - m) / n + z * z / (4 * n * n))) / den
        return m, max(0.0, centre - half), min(1.0, centre + half)
    sd = float(np.std(scores, ddof=1)) if n > 1 else 0.0
    half = z * sd / float(np.sqrt(n))
    return m, m - half, m + half


async def gather_limited(coros: Sequence[Any], limit: int = 4) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))
