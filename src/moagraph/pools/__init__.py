"""Pools that ship with moagraph, and the tools that make replay pools.

``resolve_pool("local")`` gives the path of a bundled pool file; any other
string is taken as a path. Bundled pools live in ``pools/data/<name>.yaml``
or ``pools/data/<name>/pool.yaml``.

Replay pools (a folder: pool.yaml + records.jsonl.gz + queries.jsonl) are made
by :mod:`moagraph.pools.importers` (recordings from elsewhere, AlpacaEval) and
:mod:`moagraph.pools.record` (``moagraph record``); the file format is in
:mod:`moagraph.pools.schema` and docs/replay-format.md.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from moagraph.models.pool import PoolError

DEFAULT_POOL = "local"


def builtin_pools() -> dict[str, Path]:
    root = Path(str(files("moagraph.pools").joinpath("data")))
    found: dict[str, Path] = {}
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.suffix in (".yaml", ".yml"):
                found[p.stem] = p
            elif p.is_dir() and (p / "pool.yaml").exists():
                found[p.name] = p / "pool.yaml"
    return found


def resolve_pool(name_or_path: str | Path) -> Path:
    """A bundled pool's name, or a path to a pool file (or a folder holding pool.yaml)."""
    p = Path(name_or_path).expanduser()
    if p.is_dir() and (p / "pool.yaml").exists():
        return p / "pool.yaml"
    if p.exists():
        return p
    builtin = builtin_pools()
    if str(name_or_path) in builtin:
        return builtin[str(name_or_path)]
    raise PoolError(
        f"--pool {name_or_path!r}: no such file, and no bundled pool of that name "
        f"(bundled: {', '.join(builtin) or 'none'}); pass a path to a pool YAML"
    )
