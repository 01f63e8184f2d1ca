"""Deterministic train / validation / test splits of a pool's query ids.

Search and routing must be tuned on one part of a pool and reported on
another. :func:`split_ids` assigns each id by a hash of ``(seed, id)``, so

* the same id always lands in the same part for a given seed, whatever other
  ids are in the list (a pool that grows keeps its old assignments);
* no random state, file or ordering is involved: any process gets the same split.

>>> parts = split_ids([f"q{i}" for i in range(1000)], seed=0)
>>> sorted(parts), sum(len(v) for v in parts.values())
(['test', 'train', 'validation'], 1000)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = ["split_ids"]

_NAMES = ("train", "validation", "test")


def split_ids(
    ids: Iterable[str],
    seed: int = 0,
    fractions: Sequence[float] = (0.5, 0.2, 0.3),
    names: Sequence[str] = _NAMES,
) -> dict[str, list[str]]:
    """Split ids into parts of about ``fractions`` (train, validation, test by default).

    Each id goes to the part whose cumulative-fraction interval holds
    ``sha256(f"{seed}:{id}")`` read as a number in [0, 1). Parts keep the input
    order; duplicates are kept once. Fractions must be >= 0 and sum to 1.
    """
    if len(fractions) != len(names):
        raise ValueError(f"{len(fractions)} fractions for {len(names)} parts {tuple(names)}")
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions {tuple(fractions)} must be >= 0 and sum to 1")
    bounds = []
    acc = 0.0
    for f in fractions:
        acc += f
        bounds.append(acc)
    out: dict[str, list[str]] = {n: [] for n in names}
    seen: set[str] = set()
    for raw in ids:
        i = str(raw)
        if i in seen:
            continue
        seen.add(i)
        h = int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "big") / 2**64
        for name, b in zip(names, bounds, strict=True):
            if h < b:
                out[name].append(i)
                break
        else:
            out[names[-1]].append(i)
    return out
