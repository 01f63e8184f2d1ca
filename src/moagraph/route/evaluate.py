"""Scorer quality: top-k hit rate, calibration, and the baselines they are read against.

Hit rate (the RouteMoA paper's metric): a query counts as a hit at k when
the scorer's first k models include *a* best model. Best = the highest label
on that query; labels within ``tie_tol`` of the maximum all count as best
(ties: choosing any tied-best model is a hit). Models without a label on a
query are never best.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from moagraph.route.data import LabelTable
from moagraph.route.scorer import Scorer


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first (stable: lower index wins ties)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


def hit_rate(scores: np.ndarray, labels: np.ndarray, k: int, tie_tol: float = 0.0) -> float:
    """Fraction of labelled queries whose best model (any tied-best) is in the scorer's top k."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=float)
    if scores.shape != labels.shape:
        raise ValueError(f"scores shape {scores.shape} != labels shape {labels.shape}")
    if k < 1:
        raise ValueError(f"k={k}: must be >= 1")
    lab = np.where(np.isnan(labels), -np.inf, labels)
    rows = np.isfinite(lab).any(axis=1)
    if not rows.any():
        return float("nan")
    best = lab >= (lab.max(axis=1, keepdims=True) - tie_tol)
    chosen = top_k(np.where(np.isnan(scores), -np.inf, scores), k)
    hits = np.asarray(np.take_along_axis(best, chosen, axis=1).any(axis=1))
    return float(hits[rows].mean())


@dataclass
class Calibration:
    mse: float  # Brier score with probabilistic labels: mean (pred - label)^2
    ece: float  # expected calibration error over equal-width bins
    bins: list[dict[str, float]] = field(default_factory=list)  # lo, hi, n, pred, actual


def calibration(scores: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> Calibration:
    p = np.asarray(scores, float).ravel()
    y = np.asarray(labels, float).ravel()
    ok = ~np.isnan(y) & ~np.isnan(p)
    p, y = p[ok], y[ok]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        m = idx == b
        if not m.any():
            continue
        pm, ym = float(p[m].mean()), float(y[m].mean())
        ece += m.mean() * abs(pm - ym)
        bins.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": int(m.sum()),
                "pred": pm,
                "actual": ym,
            }
        )
    return Calibration(mse=float(np.mean((p - y) ** 2)), ece=float(ece), bins=bins)


@dataclass
class ScorerReport:
    n_train: int
    n_test: int
    n_models: int
    rows: list[dict[str, Any]]  # one per ranking: name, top1, top3, mean label of top-1 pick
    calibration: Calibration
    prior_calibration: Calibration

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self, title: str) -> Table:
        """Hit rates per ranking (scorer, prior, random, oracle, paper) as a rich table."""
        t = Table(title=title)
        for c in ("ranking", "top-1 hit", "top-3 hit", "mean label of top-1 pick"):
            t.add_column(c, justify="left" if c == "ranking" else "right")
        for r in self.rows:
            label = r["top1_label"]
            t.add_row(
                r["ranking"],
                f"{r['top1']:.3f}",
                f"{r['top3']:.3f}",
                "-" if np.isnan(label) else f"{label:.3f}",
            )
        return t

    def calibration_line(self) -> str:
        c, p = self.calibration, self.prior_calibration
        return f"calibration: scorer MSE {c.mse:.4f} ECE {c.ece:.4f} | prior MSE {p.mse:.4f} ECE {p.ece:.4f}"


def _row(name: str, scores: np.ndarray, labels: np.ndarray, tie_tol: float) -> dict[str, Any]:
    pick = top_k(scores, 1)[:, 0]
    val = labels[np.arange(len(labels)), pick]
    return {
        "ranking": name,
        "top1": hit_rate(scores, labels, 1, tie_tol),
        "top3": hit_rate(scores, labels, 3, tie_tol),
        "top1_label": float(np.nanmean(val)),
    }


def evaluate_scorer(
    scorer: Scorer, train: LabelTable, test: LabelTable, tie_tol: float = 0.0, seed: int = 0
) -> ScorerReport:
    """Held-out hit rates of the scorer vs the global prior, a random ranking and the oracle."""
    y = test.labels
    pred = scorer.predict(test.texts)
    prior = np.tile(np.nan_to_num(np.nanmean(train.labels, axis=0)), (len(test), 1))
    rng = np.random.default_rng(seed)
    rand = [_row("random", rng.random(y.shape), y, tie_tol) for _ in range(20)]
    random_row = {
        k: (float(np.mean([r[k] for r in rand])) if k != "ranking" else "random (mean of 20)")
        for k in rand[0]
    }
    rows = [
        _row("scorer", pred, y, tie_tol),
        _row("prior (global best models)", prior, y, tie_tol),
        random_row,
        _row("oracle", np.nan_to_num(y, nan=-1.0), y, tie_tol),
        {"ranking": "paper (RouteMoA)", "top1": 0.907, "top3": 0.979, "top1_label": float("nan")},
    ]
    return ScorerReport(
        n_train=len(train),
        n_test=len(test),
        n_models=len(test.models),
        rows=rows,
        calibration=calibration(pred, y),
        prior_calibration=calibration(prior, y),
    )


def plot_calibration(report: ScorerReport, path: str | Path) -> Path:
    """Reliability diagram (predicted vs actual win probability) for scorer and prior."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect")
    for cal, name in ((report.calibration, "scorer"), (report.prior_calibration, "prior")):
        ax.plot(
            [b["pred"] for b in cal.bins],
            [b["actual"] for b in cal.bins],
            "o-",
            label=f"{name} (ECE {cal.ece:.3f}, MSE {cal.mse:.3f})",
        )
    ax.set_xlabel("predicted quality")
    ax.set_ylabel("actual label (mean in bin)")
    ax.set_title(f"Scorer calibration, {report.n_test} held-out queries")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p
