"""Per-query, per-model quality labels: what the scorer learns from.

A :class:`LabelTable` is a dense (queries x models) matrix of labels in [0, 1]
(NaN where a model has no label) plus the query texts and, when known, each
output's length in tokens (the replay cost model needs it). The AlpacaEval
adapter reads ``/work/shared/data/alpaca_eval`` directly; its label is the
AlpacaEval 2.0 judge's win probability (``preference - 1``).
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moagraph.errors import DataError
from moagraph.models.pool import Pool


class LabelDataError(DataError):
    """Label data is missing or does not match the pool; the message says how to fix it."""


CHARS_PER_TOKEN = 4.0
"""Token count estimate for recorded texts that carry no token counts (English ~4 chars/token)."""


def estimate_tokens(text: str) -> int:
    return max(1, int(round(len(text) / CHARS_PER_TOKEN)))


def shared_data_dir() -> Path:
    """``$MOAGRAPH_DATA_DIR`` or ``<repo root>/../shared/data`` (uses the tasks helper when present)."""
    try:
        from moagraph.tasks.registry import shared_data_dir as _sdd

        found = _sdd()
        if found is not None:
            return Path(found)
    except Exception:
        pass
    env = os.environ.get("MOAGRAPH_DATA_DIR")
    if env:
        return Path(env).expanduser()
    root = Path(__file__).resolve().parents[3]  # src/moagraph/route/data.py -> repo root
    return root.parent / "shared" / "data"


@dataclass
class LabelTable:
    """Labels of every model on every query (rows follow ``query_ids``, columns ``models``)."""

    query_ids: list[str]
    texts: list[str]
    models: list[str]
    labels: np.ndarray  # (n_queries, n_models), NaN = unknown
    out_tokens: np.ndarray | None = None  # (n_queries, n_models) recorded output length
    outputs: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    source: str = ""

    def __post_init__(self) -> None:
        if self.labels.shape != (len(self.query_ids), len(self.models)):
            raise LabelDataError(
                f"labels shape {self.labels.shape} != ({len(self.query_ids)}, {len(self.models)})"
            )

    def __len__(self) -> int:
        return len(self.query_ids)

    def subset(self, rows: np.ndarray | list[int]) -> LabelTable:
        idx = np.asarray(rows, dtype=int)
        keep = {self.query_ids[i] for i in idx}
        return LabelTable(
            query_ids=[self.query_ids[i] for i in idx],
            texts=[self.texts[i] for i in idx],
            models=list(self.models),
            labels=self.labels[idx],
            out_tokens=None if self.out_tokens is None else self.out_tokens[idx],
            outputs={k: v for k, v in self.outputs.items() if k[0] in keep},
            source=self.source,
        )

    def select_models(self, models: list[str]) -> LabelTable:
        missing = [m for m in models if m not in self.models]
        if missing:
            raise LabelDataError(
                f"models {missing} have no labels in {self.source or 'the label data'}; "
                f"labelled models: {', '.join(self.models)}"
            )
        cols = [self.models.index(m) for m in models]
        return LabelTable(
            query_ids=list(self.query_ids),
            texts=list(self.texts),
            models=list(models),
            labels=self.labels[:, cols],
            out_tokens=None if self.out_tokens is None else self.out_tokens[:, cols],
            outputs={k: v for k, v in self.outputs.items() if k[1] in set(models)},
            source=self.source,
        )

    def split(self, test_frac: float = 0.25, seed: int = 0) -> tuple[LabelTable, LabelTable]:
        """Seeded split into (train, held-out test) by query."""
        if not 0.0 < test_frac < 1.0:
            raise LabelDataError(f"test_frac={test_frac}: must be in (0, 1), e.g. 0.25")
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(self))
        n_test = max(1, int(round(len(self) * test_frac)))
        return self.subset(np.sort(perm[n_test:])), self.subset(np.sort(perm[:n_test]))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def alpaca_eval_dir(data_dir: str | Path | None = None) -> Path:
    d = Path(data_dir) if data_dir is not None else shared_data_dir() / "alpaca_eval"
    if d.is_dir() and (d / "alpaca_eval").is_dir():
        d = d / "alpaca_eval"
    if not (d / "labels.jsonl.gz").exists():
        raise LabelDataError(
            f"--data {d}: no labels.jsonl.gz there; point --data at the alpaca_eval folder "
            "of the shared data (or set MOAGRAPH_DATA_DIR)"
        )
    return d


def load_alpaca_eval(data_dir: str | Path | None = None, with_outputs: bool = False) -> LabelTable:
    """The AlpacaEval label table: 600 instructions x 21 models, label = win probability."""
    d = alpaca_eval_dir(data_dir)
    instr = {str(r["id"]): r["instruction"] for r in _read_jsonl(d / "instructions.jsonl.gz")}
    models = list(json.loads((d / "models.json").read_text(encoding="utf-8")))
    qids = sorted(instr, key=lambda s: int(s) if s.isdigit() else s)
    qpos = {q: i for i, q in enumerate(qids)}
    mpos = {m: j for j, m in enumerate(models)}
    labels = np.full((len(qids), len(models)), np.nan)
    for r in _read_jsonl(d / "labels.jsonl.gz"):
        q, m = str(r["id"]), r["model"]
        if q in qpos and m in mpos and r.get("preference") is not None:
            labels[qpos[q], mpos[m]] = float(np.clip(float(r["preference"]) - 1.0, 0.0, 1.0))
    out_tokens = np.full(labels.shape, np.nan)
    outputs: dict[tuple[str, str], str] = {}
    for r in _read_jsonl(d / "outputs.jsonl.gz"):
        q, m = str(r["id"]), r["model"]
        if q in qpos and m in mpos:
            text = r.get("output") or ""
            out_tokens[qpos[q], mpos[m]] = estimate_tokens(text)
            if with_outputs:
                outputs[(q, m)] = text
    return LabelTable(
        query_ids=qids,
        texts=[instr[q] for q in qids],
        models=models,
        labels=labels,
        out_tokens=out_tokens,
        outputs=outputs,
        source=str(d),
    )


def alpaca_eval_pool(data_dir: str | Path | None = None) -> Pool:
    """The bundled ``alpaca_eval`` replay pool: the one definition of the 21 AlpacaEval models.

    ``data_dir`` is accepted for symmetry with :func:`load_alpaca_eval` and ignored: the
    pool's architectures and prices must not depend on where the labels were read from,
    or a router trained with one would be refused by the other (its fingerprint differs).
    """
    from moagraph.models.pool import load_pool
    from moagraph.pools import resolve_pool

    return load_pool(resolve_pool("alpaca_eval"))


def labels_for_pool(table: LabelTable, pool: Pool) -> LabelTable:
    """Columns of ``table`` in pool order, matching each spec by ``replay_model`` or name."""
    names = [m.replay_model or m.name for m in pool.models]
    sub = table.select_models(names)
    sub.models = list(pool.names)
    return sub
