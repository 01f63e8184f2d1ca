"""Scorer: save/load round trip, pool fingerprint, hit-rate metric, real AlpacaEval labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moagraph.graph.testing import fake_pool
from moagraph.models.pool import Pool
from moagraph.route.data import alpaca_eval_pool, load_alpaca_eval
from moagraph.route.encoders import EmbeddingCache, HashingEncoder
from moagraph.route.evaluate import calibration, hit_rate
from moagraph.route.scorer import Scorer, ScorerError


def _toy_scorer(pool: Pool, head: str = "ridge") -> Scorer:
    texts = [f"solve the equation number {i}" for i in range(20)] + [
        f"write a poem about {i}" for i in range(20)
    ]
    y = np.array([[0.9, 0.1, 0.5]] * 20 + [[0.1, 0.9, 0.5]] * 20)
    return Scorer(HashingEncoder(256), pool.names, head=head, alpha=0.1).fit(texts, y, pool)  # type: ignore[arg-type]


@pytest.mark.parametrize("head", ["ridge", "mlp"])
def test_save_load_round_trip(tmp_path: Path, head: str) -> None:
    pool = fake_pool("a", "b", "c")
    s = _toy_scorer(pool, head)
    q = ["solve the equation number 99", "write a poem about cats"]
    before = s.predict(q)
    path = s.save(tmp_path / "router.pt")
    loaded = Scorer.load(path, pool=pool)
    np.testing.assert_allclose(loaded.predict(q), before, rtol=1e-6)
    assert loaded.models == ["a", "b", "c"]
    if head == "ridge":  # the linear head learned the topic split
        assert before[0, 0] > before[0, 1] and before[1, 1] > before[1, 0]


def test_other_pool_is_refused(tmp_path: Path) -> None:
    pool = fake_pool("a", "b", "c")
    path = _toy_scorer(pool).save(tmp_path / "router.pt")
    with pytest.raises(ScorerError, match="different pool.*route train"):
        Scorer.load(path, pool=fake_pool("a", "b", "d"))
    changed = Pool(
        name="x", models=[m.model_copy(update={"params_b": m.params_b * 2}) for m in pool.models]
    )
    with pytest.raises(ScorerError, match="other specs"):
        Scorer.load(path, pool=changed)
    with pytest.raises(ValueError, match="not a moagraph router"):
        (tmp_path / "junk.pt").write_bytes(b"not a zip")
        Scorer.load(tmp_path / "junk.pt")


def test_hit_rate_known_case_and_ties() -> None:
    labels = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],  # best: 0
            [0.5, 0.5, 0.1, 0.0],  # tie: 0 and 1
            [0.1, 0.2, 0.3, 0.8],  # best: 3
            [np.nan, 0.2, 0.7, 0.1],  # best: 2 (missing label never best)
        ]
    )
    scores = np.array(
        [
            [0.8, 0.1, 0.0, 0.0],  # top1 hit
            [0.0, 0.9, 0.2, 0.1],  # picks tied-best 1: hit
            [0.9, 0.8, 0.7, 0.1],  # best is 4th: miss at 1 and 3
            [0.9, 0.1, 0.5, 0.0],  # top1 = 0 (unlabelled): miss; top3 hit
        ]
    )
    assert hit_rate(scores, labels, 1) == pytest.approx(2 / 4)
    assert hit_rate(scores, labels, 3) == pytest.approx(3 / 4)
    assert hit_rate(scores, labels, 4) == pytest.approx(1.0)
    # tie tolerance: 0.49 counts as tied with 0.5
    assert hit_rate(np.array([[1.0, 0.0]]), np.array([[0.49, 0.5]]), 1, tie_tol=0.02) == 1.0
    assert hit_rate(np.array([[1.0, 0.0]]), np.array([[0.49, 0.5]]), 1) == 0.0


def test_calibration_bins() -> None:
    cal = calibration(np.array([0.1, 0.1, 0.9, 0.9]), np.array([0.0, 0.2, 1.0, 0.8]), n_bins=10)
    assert cal.ece == pytest.approx(0.0)
    assert cal.mse == pytest.approx(0.01)
    assert [b["n"] for b in cal.bins] == [2, 2]


def test_embedding_cache_round_trip(tmp_path: Path) -> None:
    c = EmbeddingCache(tmp_path / "emb.sqlite")
    k = EmbeddingCache.key("enc", "hello")
    c.put_many({k: np.arange(4, dtype=np.float32)})
    c.close()
    again = EmbeddingCache(tmp_path / "emb.sqlite")
    np.testing.assert_array_equal(again.get_many([k, "missing"])[k], np.arange(4, dtype=np.float32))
    assert len(again) == 1


@pytest.mark.needs_shared_data("alpaca_eval", "labels.jsonl.gz")
def test_scorer_on_real_alpaca_labels_beats_random() -> None:
    table = load_alpaca_eval()
    assert table.labels.shape == (600, 21)
    pool = alpaca_eval_pool()
    sub = table.subset(np.arange(300))
    train, test = sub.split(0.3, seed=1)
    s = Scorer(HashingEncoder(1024), table.models).fit(train.texts, train.labels, pool)
    pred = s.predict(test.texts)
    rng = np.random.default_rng(0)
    rand3 = np.mean([hit_rate(rng.random(pred.shape), test.labels, 3) for _ in range(50)])
    assert hit_rate(pred, test.labels, 3) > rand3 + 0.2
    # and the scorer's top pick wins more often than a random model's
    pick = test.labels[np.arange(len(test)), pred.argmax(1)]
    assert np.nanmean(pick) > np.nanmean(test.labels) + 0.1


@pytest.mark.needs_shared_data("alpaca_eval", "labels.jsonl.gz")
def test_router_from_plain_route_train_is_accepted_by_bundled_pool(tmp_path: Path) -> None:
    """Regression: `route train` (no --pool) and `--pool alpaca_eval` must be the same pool.

    They were two definitions (gpt-3.5 priced as 70B in one, 20B in the other), so a router
    from plain `moagraph route train` was refused by `route eval --pool alpaca_eval` and by
    the README's serve recipe.
    """
    from typer.testing import CliRunner

    from moagraph.cli import _register, app
    from moagraph.models.pool import load_pool
    from moagraph.pools import resolve_pool

    _register()
    out = tmp_path / "router.npz"
    r = CliRunner().invoke(app, ["route", "train", "--encoder", "hashing", "-o", str(out)])
    assert r.exit_code == 0, r.output
    bundled = load_pool(resolve_pool("alpaca_eval"))
    s = Scorer.load(out, pool=bundled)  # raised ScorerError("different pool ...") before the fix
    assert s.models == bundled.names
