"""The routing scorer: query text -> predicted quality of every pool model.

Encoder (see :mod:`encoders`) + a multi-output head. Heads:

- ``ridge`` / ``mlp``: regression on continuous labels (AlpacaEval win rates);
- ``logistic``: one logistic regression per model on right/wrong labels, so the
  output is a calibrated P(model answers correctly);
- ``routerdc``: the RouteMoA paper's scorer objective (official
  ``emoa/src/emoa/router/src/models/routerdc.py``, ``RouterModuleSingle``):
  query embedding vs a learned embedding per model, cosine similarity / t,
  trained with the sample-LLM contrastive loss (each correct model against the
  ``last_k`` lowest-labelled incorrect ones) and read out as ``sigmoid(sim / t)``
  as ``emoa_large/src/emoa/core/emoa_v2.py`` does. Deviation: the paper
  fine-tunes mDeBERTa-v3-base end to end; here the encoder (MiniLM or hashing)
  is frozen and a linear projection is trained instead, and the sample-sample
  (cluster) loss is left out.

Inference is pure numpy (a matrix product, or two), so a decision costs
microseconds once the query is embedded. A saved scorer records the pool's
fingerprint and refuses to score for a different pool: its outputs are
columns of particular models.

File format: a numpy ``.npz`` archive (whatever the file is called, e.g.
``router.pt``) holding the head's arrays and a JSON ``meta`` string; it loads
with ``allow_pickle=False``, so a router file can never run code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

from moagraph.errors import DataError
from moagraph.models.pool import Pool
from moagraph.route.encoders import Encoder, encoder_from_config

HeadKind = Literal["ridge", "mlp", "logistic", "routerdc"]
HEADS = ("ridge", "mlp", "logistic", "routerdc")
FORMAT_VERSION = 1


class ScorerError(DataError):
    """A scorer file is unreadable or belongs to another pool; the message says what to do."""


def pool_fingerprint(pool: Pool) -> dict[str, Any]:
    """Model names + a hash of the specs that define each model (not prices or endpoints)."""
    specs = sorted(
        (m.name, m.backend, m.replay_model or m.endpoint_model, m.params_b, m.layers, m.hidden_size)
        for m in pool.models
    )
    digest = hashlib.sha256(json.dumps(specs).encode()).hexdigest()[:16]
    return {"names": sorted(pool.names), "specs_hash": digest}


def check_fingerprint(saved: dict[str, Any], pool: Pool, source: str = "router") -> None:
    now = pool_fingerprint(pool)
    if saved.get("names") != now["names"]:
        missing = sorted(set(saved.get("names", [])) - set(now["names"]))
        extra = sorted(set(now["names"]) - set(saved.get("names", [])))
        raise ScorerError(
            f"{source} was trained for a different pool: pool {pool.name!r} lacks {missing or '-'} "
            f"and adds {extra or '-'}; retrain it with `moagraph route train --pool <this pool>`"
        )
    if saved.get("specs_hash") != now["specs_hash"]:
        raise ScorerError(
            f"{source} was trained for pool models with other specs (params/layers/backend changed: "
            f"saved {saved.get('specs_hash')}, now {now['specs_hash']}); retrain it with "
            "`moagraph route train --pool <this pool>`"
        )


class Scorer:
    """Predicts a [0, 1] quality per model from the query alone."""

    def __init__(
        self,
        encoder: Encoder,
        models: list[str],
        head: HeadKind = "ridge",
        alpha: float = 10.0,
        hidden: int = 64,
        seed: int = 0,
    ) -> None:
        if head not in HEADS:
            raise ScorerError(f"head={head!r}: use one of {', '.join(HEADS)}")
        self.encoder = encoder
        self.models = list(models)
        self.head = head
        self.alpha = alpha
        self.hidden = hidden
        self.seed = seed
        self.weights: list[np.ndarray] = []  # ridge: [W (d,m), b (m)]; mlp: [W1, b1, W2, b2]
        self.prior: np.ndarray = np.zeros(len(models))  # mean training label per model
        self.fingerprint: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}

    # --- training -------------------------------------------------------
    def fit(self, texts: list[str], labels: np.ndarray, pool: Pool | None = None) -> Scorer:
        """Fit on (queries, labels[n, m]); NaN labels are filled with the model's mean."""
        y = np.asarray(labels, dtype=np.float64)
        if y.shape != (len(texts), len(self.models)):
            raise ScorerError(f"labels shape {y.shape} != ({len(texts)}, {len(self.models)})")
        self.prior = np.nan_to_num(np.nanmean(y, axis=0), nan=0.0)
        y = np.where(np.isnan(y), self.prior[None, :], y)
        x = self.encoder.encode(texts).astype(np.float64)
        if self.head == "logistic":
            self.weights = _fit_logistic(
                x, np.asarray(labels, dtype=np.float64), self.prior, self.alpha
            )
        elif self.head == "routerdc":
            self.weights = _fit_routerdc(
                x, np.asarray(labels, dtype=np.float64), self.hidden, self.seed
            )
        elif self.head == "ridge":
            from sklearn.linear_model import Ridge

            r = Ridge(alpha=self.alpha).fit(x, y)
            self.weights = [r.coef_.T.astype(np.float32), np.asarray(r.intercept_, np.float32)]
        else:
            from sklearn.neural_network import MLPRegressor

            mlp = MLPRegressor(
                hidden_layer_sizes=(self.hidden,),
                alpha=self.alpha * 1e-3,
                max_iter=400,
                early_stopping=len(texts) >= 50,
                random_state=self.seed,
            ).fit(x, y)
            self.weights = [
                np.asarray(w, np.float32) for pair in zip(mlp.coefs_, mlp.intercepts_) for w in pair
            ]
        if pool is not None:
            self.fingerprint = pool_fingerprint(pool)
        self.meta["n_train"] = len(texts)
        return self

    # --- inference ------------------------------------------------------
    def predict_embedded(self, x: np.ndarray) -> np.ndarray:
        """Scores from ready embeddings (the cached-embedding hot path)."""
        if not self.weights:
            raise ScorerError("scorer is not trained; call fit() or Scorer.load()")
        x = np.asarray(x, dtype=np.float32)
        if self.head == "ridge":
            out = x @ self.weights[0] + self.weights[1]
        elif self.head == "logistic":
            out = _sigmoid(x @ self.weights[0] + self.weights[1])
        elif self.head == "routerdc":
            return _sigmoid(_routerdc_logits(x, self.weights))
        else:
            h = np.maximum(x @ self.weights[0] + self.weights[1], 0.0)
            out = h @ self.weights[2] + self.weights[3]
        return np.clip(out, 0.0, 1.0)

    def predict(self, texts: list[str]) -> np.ndarray:
        return self.predict_embedded(self.encoder.encode(texts))

    def scores(self, text: str) -> dict[str, float]:
        row = self.predict([text])[0]
        return {m: float(v) for m, v in zip(self.models, row)}

    def prior_scores(self) -> dict[str, float]:
        return {m: float(v) for m, v in zip(self.models, self.prior)}

    def check_pool(self, pool: Pool) -> None:
        if self.fingerprint:
            check_fingerprint(self.fingerprint, pool, "router file")

    # --- persistence ----------------------------------------------------
    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT_VERSION,
            "kind": "moagraph-route-scorer",
            "encoder": self.encoder.config(),
            "models": self.models,
            "head": self.head,
            "alpha": self.alpha,
            "hidden": self.hidden,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            "meta": self.meta,
        }
        arrays: dict[str, Any] = {f"w{i}": w for i, w in enumerate(self.weights)}
        arrays.update(meta=np.array(json.dumps(meta)), prior=self.prior)
        with open(p, "wb") as f:
            np.savez(f, **arrays)
        return p

    @classmethod
    def load(
        cls, path: str | Path, pool: Pool | None = None, cache_path: str | Path | None = None
    ) -> Scorer:
        p = Path(path)
        if not p.exists():
            raise ScorerError(f"--router {p} does not exist; train one with `moagraph route train`")
        try:
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                prior = z["prior"]
                weights = [
                    z[f"w{i}"] for i in range(len([k for k in z.files if k.startswith("w")]))
                ]
        except (OSError, ValueError, KeyError) as e:
            raise ScorerError(f"--router {p} is not a moagraph router file ({e})") from None
        if meta.get("kind") != "moagraph-route-scorer":
            raise ScorerError(f"--router {p} is not a moagraph router file")
        s = cls(
            encoder_from_config(meta["encoder"], cache_path=cache_path),
            meta["models"],
            head=meta["head"],
            alpha=meta["alpha"],
            hidden=meta["hidden"],
            seed=meta["seed"],
        )
        s.weights, s.prior = weights, prior
        s.fingerprint, s.meta = meta.get("fingerprint", {}), meta.get("meta", {})
        if pool is not None:
            s.check_pool(pool)
        return s


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -40, 40))), dtype=np.float32)


def _fit_logistic(
    x: np.ndarray, y: np.ndarray, prior: np.ndarray, alpha: float
) -> list[np.ndarray]:
    """One L2 logistic regression per model (C = 1/alpha); constant columns keep the prior."""
    from sklearn.linear_model import LogisticRegression

    d, m = x.shape[1], y.shape[1]
    w = np.zeros((d, m), np.float32)
    b = np.zeros(m, np.float32)
    for j in range(m):
        ok = ~np.isnan(y[:, j])
        yj = (y[ok, j] >= 0.5).astype(int)
        p = float(np.clip(prior[j], 1e-3, 1 - 1e-3))
        if ok.sum() < 2 or yj.min() == yj.max():
            b[j] = np.log(p / (1 - p))
            continue
        lr = LogisticRegression(C=1.0 / max(alpha, 1e-6), max_iter=500).fit(x[ok], yj)
        w[:, j] = lr.coef_[0]
        b[j] = lr.intercept_[0]
    return [w, b]


def _routerdc_logits(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    proj, emb, temp = weights[0], weights[1], float(weights[2][0])
    h = np.asarray(x, np.float32) @ proj
    h = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-8)
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-8)
    return np.asarray((h @ e.T) / temp, dtype=np.float32)


def _fit_routerdc(
    x: np.ndarray,
    y: np.ndarray,
    hidden: int,
    seed: int,
    epochs: int = 60,
    last_k: int = 3,
    temperature: float = 1.0,
) -> list[np.ndarray]:
    """RouterDC sample-LLM contrastive loss (official ``compute_sample_llm_loss``) on a
    projection of frozen embeddings; full-batch Adam, seeded."""
    import torch

    torch.manual_seed(seed)
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(np.nan_to_num(y, nan=0.0), dtype=torch.float32)
    d, m = x.shape[1], y.shape[1]
    h = max(8, hidden)
    proj = torch.nn.Parameter(torch.randn(d, h) / np.sqrt(d))
    emb = torch.nn.Parameter(torch.randn(m, h) * 0.78)  # official init std 0.78
    opt = torch.optim.Adam([proj, emb], lr=1e-2)
    k_neg = min(last_k, m)
    top_k = m  # every correct model is a positive (masked where the label is 0)
    for _ in range(epochs):
        opt.zero_grad()
        q = torch.nn.functional.normalize(xt @ proj, dim=1)
        e = torch.nn.functional.normalize(emb, dim=1)
        s = (q @ e.T) / temperature
        top_true, top_idx = yt.sort(dim=-1, descending=True)
        last_true, neg_idx = yt.topk(k=k_neg, largest=False, dim=-1)
        neg = torch.gather(s, 1, neg_idx)
        neg = torch.where(last_true > 0.5, torch.full_like(neg, float("-inf")), neg)
        loss = torch.zeros(())
        for i in range(top_k):
            pos = torch.gather(s, 1, top_idx[:, i : i + 1])
            mask = (top_true[:, i] > 0).float()
            logp = torch.log_softmax(torch.cat([pos, neg], dim=-1), dim=-1)[:, 0]
            loss = loss + torch.mean(-logp * mask)
        loss.backward()
        opt.step()
    return [
        proj.detach().numpy().astype(np.float32),
        emb.detach().numpy().astype(np.float32),
        np.asarray([temperature], np.float32),
    ]
