"""Hybrid pools: a replay pool's recorded models plus live models.

A hybrid graph has recorded proposers (free, exact) and a live fuser or
aggregator (e.g. the embedded ``gemma-270m``). Any pool file may mix backends;
:func:`extend_pool` writes one from a replay pool and the models of another
pool, with every ``replay:`` path made absolute so the new file works from
anywhere::

    moagraph pool extend zeroeval-math --add local -o hybrid.yaml
    moagraph eval --pool hybrid.yaml --task math --split zeroeval --graph moa.yaml

Recorded nodes cost what the recording says (their recorded token counts);
live nodes cost what they measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from moagraph.models.pool import Pool, PoolError, load_pool, pool_from_dict
from moagraph.pools import resolve_pool

__all__ = ["extend_pool"]


def extend_pool(
    base: str | Path,
    add: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    models: Sequence[str] | None = None,
    name: str | None = None,
) -> Pool:
    """``base`` (a replay pool) plus every model of the pools in ``add``.

    ``models`` keeps only those models of ``base``. Writes ``out`` (YAML) if
    given. Names must stay unique across the pools.
    """
    bpool = load_pool(resolve_pool(base))
    keep = list(bpool.models)
    if models:
        unknown = [m for m in models if m not in bpool]
        if unknown:
            raise PoolError(f"--models: {', '.join(unknown)} not in pool {bpool.name!r}")
        keep = [m for m in keep if m.name in set(models)]
    specs = []
    for m in keep:
        if m.replay:
            m = m.model_copy(update={"replay": str(bpool.resolve(m.replay).resolve())})
        specs.append(m)
    for ref in add:
        p = load_pool(resolve_pool(ref))
        for m in p.models:
            if m.backend == "llamacpp" and m.model and not m.model.startswith("package:"):
                m = m.model_copy(update={"model": str(p.resolve(m.model).resolve())})
            if m.replay:
                m = m.model_copy(update={"replay": str(p.resolve(m.replay).resolve())})
            specs.append(m)
    names = [m.name for m in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PoolError(f"model name(s) {', '.join(dup)} appear in both pools; rename one")
    pool = pool_from_dict(
        {
            "name": name or f"{bpool.name}+{'+'.join(str(a) for a in add)}",
            "description": f"{bpool.name} (recorded) plus {', '.join(str(a) for a in add)}",
            "models": [m.model_dump() for m in specs],
        }
    )
    if out is not None:
        o = Path(out)
        o.parent.mkdir(parents=True, exist_ok=True)
        o.write_text(pool.to_yaml(), encoding="utf-8")
        pool.path = o.resolve()
    return pool
