"""Ground-truth replay pools as routing data: right/wrong labels read from the pool itself.

The labels are the pool's recorded ``score`` (0/1 correctness for
``zeroeval-math``, ``zeroeval-gsm8k`` and ``mmlu-pro``; see
``src/moagraph/pools/data/*/README.md``), never a separate ``--data`` folder,
so a router trained on a pool learns exactly what that pool will be scored on.

For the offline "vote" final answer every recorded answer is extracted once
with the task's own extractor (zeroeval: the JSON ``answer`` field of the
recorded text; mmlu-pro: the recorded letter) and graded with the task's
grader against the pool's reference. Queries are split by question id with
:func:`moagraph.pools.splits.split_ids` (train / validation / test).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from moagraph.models.pool import Pool, load_pool
from moagraph.pools import resolve_pool
from moagraph.pools.splits import split_ids
from moagraph.route.data import LabelDataError, LabelTable
from moagraph.tasks.base import Example

GROUND_TRUTH_TASKS = {"zeroeval-math": "math", "zeroeval-gsm8k": "gsm8k", "mmlu-pro": "mmlu-pro"}
"""Bundled ground-truth pools and the task whose extractor/grader reads their answers."""

SPLIT_FRACTIONS = (0.5, 0.2, 0.3)
"""Default train / validation / test fractions (by question id)."""


@dataclass
class GroundTruth:
    """A ground-truth pool as matrices over (queries x models), plus what votes need."""

    pool: Pool
    task_name: str
    table: LabelTable  # labels = recorded 0/1 score (NaN = no record)
    prompt_tokens: np.ndarray  # (n, m) recorded (estimated) prompt tokens
    answers: list[list[Any]]  # [query][model] extracted answer (None = none / no record)
    references: list[Any]
    ref_correct: dict[tuple[int, Any], bool] = field(default_factory=dict, repr=False)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        return self.table.models

    def subset_models(self, models: list[str]) -> GroundTruth:
        cols = [self.models.index(m) for m in models]
        pool = Pool(name=f"{self.pool.name}[{len(models)}]", models=[self.pool[m] for m in models])
        t = self.table.select_models(models)
        return GroundTruth(
            pool,
            self.task_name,
            t,
            self.prompt_tokens[:, cols],
            [[row[c] for c in cols] for row in self.answers],
            list(self.references),
            self.ref_correct,
            dict(self.meta),
        )

    def example(self, qi: int) -> Example:
        """Query ``qi`` as the task's :class:`Example`, with its recorded metadata (MMLU-Pro's
        ``options`` become the task's ``choices``, without which its prompt cannot be built)."""
        qm = dict((self.meta.get("query_meta") or [{}] * len(self.references))[qi] or {})
        if "options" in qm and "choices" not in qm:
            qm["choices"] = list(qm["options"])
        return Example(
            id=self.table.query_ids[qi],
            question=self.table.texts[qi],
            reference=self.references[qi],
            meta=qm,
        )

    def rows(self, ids: list[str]) -> np.ndarray:
        pos = {q: i for i, q in enumerate(self.table.query_ids)}
        missing = [q for q in ids if q not in pos]
        if missing:
            raise LabelDataError(
                f"{len(missing)} ids are not in pool {self.pool.name!r}, e.g. {missing[0]}"
            )
        return np.asarray([pos[q] for q in ids], dtype=int)

    def split(
        self, seed: int = 0, fractions: tuple[float, ...] = SPLIT_FRACTIONS
    ) -> dict[str, list[str]]:
        """train / validation / test question ids (``split_ids``, hash of seed and id)."""
        return split_ids(self.table.query_ids, seed=seed, fractions=fractions)

    def correct(self, qi: int, answer: Any) -> bool:
        """Whether an extracted answer is right on query ``qi`` (task grader, memoised)."""
        if answer is None:
            return False
        key = (qi, answer if isinstance(answer, str | int | float) else repr(answer))
        hit = self.ref_correct.get(key)
        if hit is None:
            hit = bool(_task(self.task_name).equivalent(answer, self.references[qi]))
            self.ref_correct[key] = hit
        return hit


@lru_cache(maxsize=8)
def _task(name: str) -> Any:
    from moagraph.tasks.registry import get_task

    return get_task(name)


def _open(path: Path) -> Any:
    return (
        gzip.open(path, "rt", encoding="utf-8")
        if path.suffix == ".gz"
        else open(path, encoding="utf-8")
    )


def _find(d: Path, stem: str) -> Path:
    for suffix in (".jsonl.gz", ".jsonl"):
        if (d / f"{stem}{suffix}").exists():
            return d / f"{stem}{suffix}"
    raise LabelDataError(f"pool folder {d} has no {stem}.jsonl(.gz): not a recorded pool")


def is_ground_truth_pool(name_or_path: str | Path) -> bool:
    try:
        d = resolve_pool(name_or_path).parent
    except Exception:
        return False
    return (d / "queries.jsonl").exists() or (d / "queries.jsonl.gz").exists()


@lru_cache(maxsize=4)
def load_ground_truth(name_or_path: str, task: str | None = None) -> GroundTruth:
    """Labels (recorded ``score``), lengths and extracted answers of a recorded pool."""
    pool_file = resolve_pool(name_or_path)
    pool = load_pool(pool_file)
    d = pool_file.parent
    queries = []
    with _open(_find(d, "queries")) as f:
        queries = [json.loads(line) for line in f if line.strip()]
    task_name = (
        task or GROUND_TRUTH_TASKS.get(pool.name) or (queries[0].get("task") if queries else None)
    )
    if not task_name:
        raise LabelDataError(f"pool {pool.name!r}: no task known for its answers; pass --task")
    qids = [str(q["query_id"]) for q in queries]
    qpos = {q: i for i, q in enumerate(qids)}
    by_replay = {(m.replay_model or m.name): j for j, m in enumerate(pool.models)}
    n, m = len(qids), len(pool.models)
    labels = np.full((n, m), np.nan)
    out_tok = np.full((n, m), np.nan)
    in_tok = np.full((n, m), np.nan)
    answers: list[list[Any]] = [[None] * m for _ in range(n)]
    tk = _task(task_name)
    with _open(_find(d, "records")) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if int(r.get("sample", 0)) != 0:
                continue
            qi, mj = qpos.get(str(r["query_id"])), by_replay.get(r["model"])
            if qi is None or mj is None:
                continue
            if r.get("score") is not None:
                labels[qi, mj] = float(r["score"])
            out_tok[qi, mj] = r.get("completion_tokens", np.nan)
            in_tok[qi, mj] = r.get("prompt_tokens", np.nan)
            meta = r.get("meta") or {}
            try:
                ans = (
                    meta["prediction"] if "prediction" in meta else tk.extract(r.get("text") or "")
                )
            except Exception:
                ans = None
            answers[qi][mj] = ans
    if np.isnan(labels).all():
        raise LabelDataError(
            f"pool {pool.name!r} has no recorded scores: it is not a ground-truth pool"
        )
    table = LabelTable(
        query_ids=qids,
        texts=[q["question"] for q in queries],
        models=list(pool.names),
        labels=labels,
        out_tokens=out_tok,
        source=str(d),
    )
    return GroundTruth(
        pool,
        task_name,
        table,
        in_tok,
        answers,
        [q.get("reference") for q in queries],
        meta={"pool_dir": str(d), "query_meta": [q.get("meta") or {} for q in queries]},
    )


def small_open_models(gt: GroundTruth, max_params_b: float = 8.5) -> list[str]:
    """Open models of at most ``max_params_b`` (FLOPs size, size not estimated)."""
    out = []
    for spec in gt.pool.models:
        extra = spec.extra or {}
        if extra.get("closed") or extra.get("size_estimated"):
            continue
        if spec.params_b <= max_params_b:
            out.append(spec.name)
    return out


SETTINGS: dict[str, tuple[str, float | None]] = {
    "mmlu-pro-small": ("mmlu-pro", 8.6),
    "mmlu-pro": ("mmlu-pro", None),
    "zeroeval-math": ("zeroeval-math", None),
    "zeroeval-gsm8k": ("zeroeval-gsm8k", None),
}
"""The benchmark settings: name -> (bundled ground-truth pool, largest open model in B or
None for all models). ``mmlu-pro-small`` is the 14 open models of at most 8.54B."""


def load_setting(name: str) -> GroundTruth:
    """The ground truth of one of :data:`SETTINGS`."""
    if name not in SETTINGS:
        raise ValueError(f"setting {name!r}: use one of {', '.join(SETTINGS)}")
    pool, max_b = SETTINGS[name]
    gt = load_ground_truth(pool)
    return gt.subset_models(small_open_models(gt, max_b)) if max_b is not None else gt
