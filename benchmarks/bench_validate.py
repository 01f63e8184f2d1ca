"""Time to load and validate large graphs (``Graph.from_dict``: pydantic + every rule).

Shapes: a chain (each node feeds the next), a wide graph (N-1 sources into one
aggregator) and layered MoA (sqrt(N) layers of sqrt(N) nodes, each node fed by
the whole previous layer). Validation must stay near-linear in nodes + edges.

    .venv/bin/python benchmarks/bench_validate.py [--sizes 100,1000,10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from moagraph.graph.spec import Graph


def chain(n: int) -> dict[str, Any]:
    nodes = [{"id": "n0", "model": "m"}]
    nodes += [{"id": f"n{i}", "model": "m", "inputs": [f"n{i - 1}"]} for i in range(1, n)]
    return {"name": f"chain{n}", "nodes": nodes, "sink": f"n{n - 1}"}


def wide(n: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"id": f"a{i}", "model": "m"} for i in range(n - 1)]
    nodes.append(
        {"id": "agg", "role": "aggregator", "model": "m", "inputs": [f"a{i}" for i in range(n - 1)]}
    )
    return {"name": f"wide{n}", "nodes": nodes, "sink": "agg"}


def layered(n: int) -> dict[str, Any]:
    k = max(1, math.isqrt(n))
    nodes: list[dict[str, Any]] = []
    prev: list[str] = []
    for layer in range(k):
        cur = [f"l{layer}_{j}" for j in range(k)]
        nodes += [{"id": c, "model": "m", "inputs": list(prev)} for c in cur]
        prev = cur
    nodes.append({"id": "agg", "role": "aggregator", "model": "m", "inputs": prev})
    return {"name": f"layered{n}", "nodes": nodes, "sink": "agg"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    t = Table(title="Graph.from_dict (parse + validate), best of --repeat")
    for col in ("shape", "nodes", "edges", "seconds"):
        t.add_column(col, justify="left" if col == "shape" else "right")
    for size in (int(s) for s in args.sizes.split(",")):
        for make in (chain, wide, layered):
            raw = make(size)
            edges = sum(len(n.get("inputs", [])) for n in raw["nodes"])
            best = math.inf
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                Graph.from_dict(raw)
                best = min(best, time.perf_counter() - t0)
            t.add_row(make.__name__, str(len(raw["nodes"])), str(edges), f"{best:.3f}")
    Console().print(t)


if __name__ == "__main__":
    main()
