"""Load benchmark of `moagraph serve` on loopback with a zero-latency backend.

What it measures: the server's own overhead (HTTP, validation, executor,
trace, request log), since the backend answers instantly. The server runs in
this process (uvicorn on 127.0.0.1, same settings as `moagraph serve`); the
load comes from a SEPARATE client process with N concurrent keep-alive
connections: a minimal asyncio HTTP/1.1 client (so on a 2-core machine the
load generator leaves the server its core) and, for comparison, httpx.

    .venv/bin/python benchmarks/bench_serve.py            # ~1 minute
    .venv/bin/python benchmarks/bench_serve.py --quick    # a few seconds

Reports requests/s and p50/p99 latency per scenario, and the latency the
server adds over calling the executor in-process (p50 of a sequential HTTP
round trip minus p50 of a direct ``GraphExecutor.run``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# --- client (runs in its own process) ------------------------------------------


def _body(model: str, stream: bool) -> bytes:
    return json.dumps(
        {
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
        }
    ).encode()


async def _raw_client(
    url: str, model: str, n: int, conc: int, stream: bool, limit_s: float, key: str
) -> tuple[list[float], int, float]:
    """Keep-alive HTTP/1.1 over asyncio streams: the cheapest possible client, so on a
    2-core box the load generator does not eat the CPU the server is measured on."""
    host, port = url.removeprefix("http://").split(":")
    body = _body(model, stream)
    req = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    lat: list[float] = []
    errors = 0
    todo = n
    deadline = time.perf_counter() + limit_s

    async def conn() -> None:
        nonlocal todo, errors
        r, w = await asyncio.open_connection(host, int(port))
        try:
            while todo > 0 and time.perf_counter() < deadline:
                todo -= 1
                t = time.perf_counter()
                w.write(req)
                head = (await r.readuntil(b"\r\n\r\n")).lower()
                if b"content-length:" in head:
                    i = head.index(b"content-length:") + len(b"content-length:")
                    data = await r.readexactly(int(head[i : head.index(b"\r\n", i)]))
                else:  # chunked (SSE): the last chunk is "0\r\n\r\n"
                    data = await r.readuntil(b"\r\n0\r\n\r\n")
                ok = head.startswith(b"http/1.1 200") and (not stream or b"data: [DONE]" in data)
                if ok:
                    lat.append(time.perf_counter() - t)
                else:
                    errors += 1
        finally:
            w.close()

    t0 = time.perf_counter()
    await asyncio.gather(*[conn() for _ in range(conc)])
    return lat, errors, time.perf_counter() - t0


async def _httpx_client(
    url: str, model: str, n: int, conc: int, stream: bool, limit_s: float, key: str
) -> tuple[list[float], int, float]:
    """The same load through httpx.AsyncClient (what an application would use)."""
    import httpx

    body = _body(model, stream)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    lat: list[float] = []
    errors = 0
    todo = n
    deadline = time.perf_counter() + limit_s
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30, headers=headers) as c:

        async def worker() -> None:
            nonlocal todo, errors
            while todo > 0 and time.perf_counter() < deadline:
                todo -= 1
                t = time.perf_counter()
                async with c.stream("POST", "/v1/chat/completions", content=body) as r:
                    data = b"".join([x async for x in r.aiter_bytes()])
                if r.status_code == 200 and (not stream or b"data: [DONE]" in data):
                    lat.append(time.perf_counter() - t)
                else:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(conc)])
        return lat, errors, time.perf_counter() - t0


async def _client(
    kind: str, url: str, model: str, n: int, conc: int, stream: bool, limit_s: float, key: str
) -> dict[str, Any]:
    run = _raw_client if kind == "raw" else _httpx_client
    await run(url, model, min(50, n), min(conc, 4), stream, limit_s, key)  # warm-up, not measured
    lat, errors, elapsed = await run(url, model, n, conc, stream, limit_s, key)
    lat.sort()

    def q(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    return {
        "n": len(lat),
        "errors": errors,
        "elapsed_s": elapsed,
        "rps": len(lat) / elapsed if elapsed else 0.0,
        "p50_ms": q(0.50) * 1e3,
        "p99_ms": q(0.99) * 1e3,
    }


def client_main(argv: list[str]) -> None:
    kind, url, model, n, conc, stream, limit_s, key = argv
    out = asyncio.run(
        _client(kind, url, model, int(n), int(conc), stream == "1", float(limit_s), key)
    )
    print(json.dumps(out))


# --- server side ----------------------------------------------------------------


def _task() -> Any:
    """The real chat task: its prompts are what a served user gets."""
    from moagraph.tasks.registry import get_task

    return get_task("chat")


def _graphs() -> dict[str, Any]:
    from moagraph.graph.spec import Graph, Node, Role

    return {
        "solo": Graph(name="solo", sink="a", nodes=[Node(id="a", model="m1")]),
        "moa3": Graph(
            name="moa3",
            sink="agg",
            nodes=[
                Node(id="a", model="m1"),
                Node(id="b", model="m2"),
                Node(id="agg", role=Role.AGGREGATOR, model="m2", inputs=["a", "b"]),
            ],
        ),
    }


async def _direct(runtime: Any, task: Any, graph: Any, n: int) -> float:
    """p50 seconds of an in-process executor call: the floor the server adds to."""
    from moagraph.graph.executor import GraphExecutor
    from moagraph.serve.conversation import ConversationTask, to_example
    from moagraph.serve.schemas import MessageIn

    ex = GraphExecutor(runtime, ConversationTask(task))
    msgs = [MessageIn(role="user", content="What is the capital of France?")]
    times = []
    for i in range(n):
        t = time.perf_counter()
        await ex.run(graph, to_example(f"q{i}", msgs))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="Few requests (smoke run).")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=4000, help="Per concurrent scenario.")
    ap.add_argument("--limit-s", type=float, default=12.0, help="Time cap per scenario.")
    ap.add_argument("--no-store", action="store_true", help="Run without the SQLite request log.")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.limit_s = 300, 4.0

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from moagraph.graph.testing import ScriptedBackend, fake_pool
    from moagraph.models.runtime import PoolRuntime
    from moagraph.serve.app import create_app
    from moagraph.serve.config import ServeConfig
    from moagraph.serve.testing import ServerThread

    console = Console()
    pool = fake_pool("m1", "m2", max_concurrency=10_000)
    backend = ScriptedBackend(respond=lambda r: "Paris is the capital of France.", record=False)
    overrides = {m: backend for m in pool.names}
    task = _task()
    graphs = _graphs()

    direct = {
        name: asyncio.run(_direct(PoolRuntime(pool, overrides=overrides), task, g, 300))
        for name, g in graphs.items()
    }

    key = "bench-key"
    with tempfile.TemporaryDirectory() as tmp:
        store = None if args.no_store else Path(tmp) / "serve.sqlite"
        config = ServeConfig(api_key=key, store=store)
        app = create_app(PoolRuntime(pool, overrides=overrides), graphs, config=config, task=task)
        c = args.concurrency
        scenarios = [  # (label, client, model, concurrency, stream, requests)
            ("sequential (added latency)", "raw", "solo", 1, False, min(args.requests, 1000)),
            ("solo graph", "raw", "solo", c, False, args.requests),
            ("solo graph, streaming", "raw", "solo", c, True, args.requests),
            ("3-node MoA graph", "raw", "moa3", c, False, args.requests),
            ("solo graph, httpx client", "httpx", "solo", c, False, args.requests),
        ]
        results = []
        with ServerThread(app) as srv, Progress(console=console, transient=True) as prog:
            bar = prog.add_task("load", total=len(scenarios))
            for label, kind, model, conc, stream, n in scenarios:
                prog.update(bar, description=f"{label} (c={conc})")
                cmd = [
                    sys.executable,
                    __file__,
                    "--client",
                    kind,
                    srv.base_url,
                    model,
                    str(n),
                    str(conc),
                    "1" if stream else "0",
                    str(args.limit_s),
                    key,
                ]
                out = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                )
                results.append((label, kind, model, conc, json.loads(out.stdout)))
                prog.advance(bar)
            rows_logged = None
        if store is not None:
            from moagraph.serve.log import read_rows

            rows_logged = len(read_rows(store))

    loop_impl = "uvloop" if _has("uvloop") else "asyncio"
    http_impl = "httptools" if _has("httptools") else "h11"
    table = Table(
        title=f"moagraph serve on loopback, zero-latency backend "
        f"({os.cpu_count()} cores, {loop_impl} + {http_impl}, "
        f"store {'on' if store else 'off'}, uvicorn {_ver('uvicorn')})"
    )
    for col in ("scenario", "client", "conc.", "requests", "errors", "req/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right" if col not in ("scenario", "client") else "left")
    for label, kind, _model, conc, r in results:
        table.add_row(
            label,
            kind,
            str(conc),
            str(r["n"]),
            str(r["errors"]),
            f"{r['rps']:.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
        )
    console.print(table)

    seq = results[0][4]
    t2 = Table(title="latency the server adds over an in-process executor call (p50)")
    for col in ("graph", "in-process ms", "HTTP round trip ms", "added ms"):
        t2.add_column(col, justify="right" if col != "graph" else "left")
    t2.add_row(
        "solo",
        f"{direct['solo'] * 1e3:.3f}",
        f"{seq['p50_ms']:.3f}",
        f"{seq['p50_ms'] - direct['solo'] * 1e3:.3f}",
    )
    console.print(t2)
    console.print(f"in-process p50, moa3: {direct['moa3'] * 1e3:.3f} ms")
    if rows_logged is not None:
        console.print(f"request rows written to SQLite: {rows_logged}")
    best = max(r["rps"] for *_, r in results[1:])
    goal = "met" if best >= 500 else "NOT met"
    console.print(f"goal >= 500 req/s on loopback: {goal} (best {best:.0f} req/s)")


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def _ver(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
