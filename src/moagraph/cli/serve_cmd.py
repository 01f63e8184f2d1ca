"""`moagraph serve`: graphs and routers behind an OpenAI-compatible API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from moagraph.cli import app
from moagraph.cli._errors import err_console, fail
from moagraph.cli._options import deprecated, opt, resolve_budget, resolve_task

console = Console()


@app.command("serve")
def serve_cmd(
    pool: Annotated[str, opt("--pool")] = "local",
    graph: Annotated[
        list[str] | None,
        opt(
            "--graph",
            "Served as NAME=GRAPH, e.g. math=vote3 (repeatable). A set: NAME=a.yaml,b.yaml "
            "or NAME=DIR (every *.yaml in it); a request's budget picks the best graph "
            "expected to fit (docs/serve-budgets.md).",
        ),
    ] = None,
    router: Annotated[
        list[str] | None, opt("--router", "Served as NAME=FILE (repeatable).")
    ] = None,
    router_kind: str = typer.Option(
        "routemoa", "--router-kind", help="Router built on each --router file."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0: all)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        help="Require `Authorization: Bearer KEY` (default: $MOAGRAPH_API_KEY). Visible to "
        "other users in `ps`: prefer $MOAGRAPH_API_KEY or --api-key-file.",
    ),
    api_key_file: Path | None = typer.Option(
        None,
        "--api-key-file",
        help="Read the API key from this file's first line (keep it mode 600).",
    ),
    store: Annotated[
        Path | None, opt("--store", "Also request logs (default: none, nothing is stored).")
    ] = None,
    cache: Annotated[
        Path | None,
        opt("--cache", "Default: none (a repeated request at temperature > 0 samples anew)."),
    ] = None,
    task: Annotated[
        str, opt("--task", "Its prompts and average lengths (cost estimates) apply.")
    ] = "chat",
    budget: Annotated[
        str | None,
        opt("--budget", "A request whose estimated cost (real prompt length) is higher gets 400."),
    ] = None,
    budget_flops: Annotated[
        float | None, typer.Option("--budget-flops", hidden=True, help="Deprecated: --budget.")
    ] = None,
    max_tokens: Annotated[
        int | None, opt("--max-tokens", "Applies to requests that send no max_tokens.", min=1)
    ] = None,
    grace: float = typer.Option(
        30.0, "--grace", help="Seconds in-flight requests get on shutdown."
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    max_body_bytes: int = typer.Option(
        8 * 1024 * 1024, "--max-body-bytes", help="Largest request body (413 beyond)."
    ),
    max_messages: int = typer.Option(1000, "--max-messages", help="Most messages per request."),
    max_prompt_tokens: int = typer.Option(
        131_072, "--max-prompt-tokens", help="Most prompt tokens per request (estimated)."
    ),
    max_tokens_limit: int = typer.Option(
        32_768, "--max-tokens-limit", help="Largest max_tokens a request may ask for."
    ),
    read_timeout: float = typer.Option(
        10.0, "--read-timeout", help="Seconds a client has to send a whole request (head + body)."
    ),
    keep_alive: float = typer.Option(5.0, "--keep-alive", help="Idle keep-alive timeout (s)."),
    limit_concurrency: int = typer.Option(
        1000,
        "--limit-concurrency",
        help="Most requests at once (503 beyond) and open connections (past it, the oldest "
        "idle ones are closed).",
    ),
    backlog: int = typer.Option(2048, "--backlog", help="Listen backlog."),
    max_connections_per_client: int = typer.Option(
        128,
        "--max-connections-per-client",
        help="Open connections per client address; past it its oldest idle one is closed "
        "(raise it behind a reverse proxy).",
    ),
    max_header_bytes: int = typer.Option(
        64 * 1024, "--max-header-bytes", help="Largest request head (431 beyond)."
    ),
    max_headers: int = typer.Option(100, "--max-headers", help="Most header fields (431 beyond)."),
    allow_host: list[str] = typer.Option(
        [],
        "--allow-host",
        help="Accept this Host header besides loopback (repeatable; '*': any). Without an API "
        "key only loopback names are accepted (DNS-rebinding protection).",
    ),
    cors_origin: list[str] = typer.Option(
        [], "--cors-origin", help="Allow browser requests from this origin (repeatable; '*': any)."
    ),
    log_max_rows: int = typer.Option(
        200_000, "--log-max-rows", help="Request rows kept in --store; the oldest are pruned."
    ),
    log_bodies: bool | None = typer.Option(
        None,
        "--log-bodies/--no-log-bodies",
        help="Store rejected requests' bodies (default: only with an API key).",
    ),
) -> None:
    """Serve graphs and routers as OpenAI chat models (/v1/models, /v1/chat/completions).

    With no --graph/--router every pool model is served as a one-node graph. A request
    may carry a budget (body `moagraph.budget_flops` / `budget_dollars` / `budget_latency_s`,
    or headers X-Moagraph-Budget-Flops / -Dollars / -Latency-S): a set of graphs answers
    with its best option expected to fit (docs/serve-budgets.md).
    """
    import uvicorn

    from moagraph.models.pool import load_pool
    from moagraph.pools import resolve_pool
    from moagraph.serve import create_app
    from moagraph.serve.config import (
        API_KEY_ARGV_WARNING,
        ServeConfig,
        ServeConfigError,
        read_api_key_file,
    )
    from moagraph.serve.http import raise_fd_limit, uvicorn_config

    if budget_flops is not None:
        deprecated("--budget-flops", "--budget")
        budget = budget if budget is not None else repr(budget_flops)
    try:
        if api_key is not None and api_key_file is not None:
            raise ServeConfigError("give --api-key or --api-key-file, not both")
        if api_key is not None:
            err_console.print(API_KEY_ARGV_WARNING, style="yellow", highlight=False)
        if api_key_file is not None:
            api_key, file_warning = read_api_key_file(api_key_file)
            if file_warning:
                err_console.print(file_warning, style="yellow", highlight=False)
        task_obj = resolve_task(task)
        limit = None
        if budget is not None:
            limit = resolve_budget(budget, load_pool(resolve_pool(pool)), task_obj)
        config = ServeConfig.with_env(
            host=host,
            port=port,
            api_key=api_key,
            store=store,
            task=task_obj.name,
            budget_flops=limit,
            grace_s=grace,
            default_max_tokens=max_tokens,
            max_body_bytes=max_body_bytes,
            max_messages=max_messages,
            max_prompt_tokens=max_prompt_tokens,
            max_tokens_limit=max_tokens_limit,
            read_timeout_s=read_timeout,
            keep_alive_s=keep_alive,
            limit_concurrency=limit_concurrency,
            backlog=backlog,
            max_connections_per_client=max_connections_per_client,
            max_header_bytes=max_header_bytes,
            max_headers=max_headers,
            allow_hosts=allow_host,
            cors_origins=cors_origin,
            log_max_rows=log_max_rows,
            log_bodies=log_bodies,
        )
        fastapi_app = create_app(
            pool,
            graphs=graph or [],
            routers=router or [],
            router_kind=router_kind,
            cache=cache,
            config=config,
            task=task_obj,
        )
    except ValueError as e:
        raise fail(e) from None

    table = Table(title=f"moagraph serving on http://{host}:{port}/v1")
    for col in ("model", "kind", "pool models", "width x depth", "est. FLOPs (norm.)"):
        table.add_column(col)
    for entry in fastapi_app.state.served.values():
        i = entry.info
        shape = f"{i.width} x {i.depth}" if i.width is not None else "-"
        est = (
            f"{i.estimated_flops_normalised:.3g}"
            if i.estimated_flops_normalised is not None
            else "-"
        )
        if i.options:  # a set: one row per option, with what a budget picks by
            for o in i.options:
                exp = o["expected"].get("flops_norm")
                src = o["cost_source"].get("flops_norm")
                q = o["quality"]
                table.add_row(
                    f"{entry.name} / {o['option']}",
                    "set option",
                    ", ".join(o["models"]),
                    "-",
                    (f"{exp:.3g} {'expected' if src == 'meta' else 'worst case'}" if exp else "-")
                    + (f"; acc {q:.3g}" if q is not None else ""),
                )
            continue
        table.add_row(entry.name, i.kind, ", ".join(i.models), shape, est)
    console.print(table)
    auth = (
        "bearer key required" if config.api_key else "no auth (set --api-key or $MOAGRAPH_API_KEY)"
    )
    console.print(
        f"auth: {auth}; store: {config.store or 'none'}; budget: "
        + (
            f"{config.budget_flops:.4g} normalised FLOPs per request"
            + (f" ({budget})" if budget and ":" in budget else "")
            if config.budget_flops is not None
            else "none"
        ),
        highlight=False,
    )
    if (
        config.api_key is None
        and not config.allow_hosts
        and host not in ("127.0.0.1", "localhost", "::1")
    ):
        console.print(
            f"note: with no API key only requests addressed to localhost are answered; "
            f"add --allow-host NAME to reach it via {host}"
        )
    fds = raise_fd_limit()  # one fd per connection: don't run out at the default 1,024
    if fds is not None and fds[1] != fds[0]:
        console.print(f"open-file limit raised from {fds[0]:,} to {fds[1]:,}")
    server = uvicorn.Server(
        uvicorn_config(fastapi_app, config, host=host, port=port, log_level=log_level)
    )
    server.run()
