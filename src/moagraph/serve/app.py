"""OpenAI-compatible HTTP server: graphs and routers served as chat models.

A client names a served graph or router in ``model``; the conversation
becomes one task query; the graph executor (or the router) answers it
through the shared :class:`PoolRuntime`; the reply carries OpenAI ``usage``
summed over every node plus a ``moagraph`` field with FLOPs, dollars,
critical-path latency and the trace id. Streaming sends the sink node's
tokens as they are produced.

Order of checks per request, so nothing is spent on a request that will be
refused: request head size (``serve/http.py``) -> Host/Origin/Content-Type ->
auth -> body size (Content-Length, then counted while reading) -> body shape
(messages and JSON values, ``serve/shape.py``) -> body -> limits (messages,
prompt tokens, max_tokens) -> model -> budget (with the real prompt length)
-> run. A run is cancelled when its client disconnects (a streaming one also
while it waits for its first token, e.g. queued for a slot at the endpoint).

Client-facing error messages are redacted (``models/redact.py``) and carry no
file paths or tracebacks, and 502s no upstream URLs or hosts; the full message
goes to the server log. What the server protects against, and what not:
``docs/threat-model-server.md``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import networkx as nx
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from moagraph.errors import ConfigError
from moagraph.graph.budget import Budget, budget_scope
from moagraph.graph.spec import Graph, Node
from moagraph.graph.trace import Policy, Trace
from moagraph.models.base import BackendError, estimate_tokens
from moagraph.models.pool import Pool
from moagraph.models.redact import redact, register_secret
from moagraph.models.runtime import PoolRuntime
from moagraph.serve.auth import check_bearer
from moagraph.serve.build import GraphSet, Named, PoolLike, resolve_served, serve_runtime
from moagraph.serve.config import ServeConfig
from moagraph.serve.conversation import ConversationTask, to_example
from moagraph.serve.errors import ApiError, validation_error
from moagraph.serve.http import RequestGuard, check_json_content_type
from moagraph.serve.log import RequestLog, RequestRow
from moagraph.serve.pick import (
    BUDGET_FIELDS,
    DIMS,
    NoOptionFits,
    Option,
    RequestBudget,
    option_from_meta,
    pick,
)
from moagraph.serve.runtime import Overrides, ServeRuntime
from moagraph.serve.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    MoagraphUsage,
    ModelList,
    ModelObject,
    NodeUsage,
    ServedInfo,
    Usage,
)
from moagraph.serve.shape import SHAPE_IN_THREAD_BYTES, check_shape
from moagraph.tasks.base import Task

__all__ = ["Served", "create_app", "graph_shape", "single_model_graphs"]

log = logging.getLogger("moagraph.serve")


# --- what is served ----------------------------------------------------------


def graph_shape(graph: Graph) -> tuple[int, int]:
    """(width, depth) as the graph defines them: widest layer, LLM calls on the longest path."""
    width = getattr(graph, "width", None)
    depth = getattr(graph, "depth", None)
    if width is None or depth is None:  # older Graph without the properties
        layers = list(nx.topological_generations(graph.to_networkx()))
        return (max((len(x) for x in layers), default=0), len(layers))
    return int(width), int(depth)


def single_model_graphs(runtime: PoolRuntime | ServeRuntime) -> dict[str, Graph]:
    """One single-node graph per pool model, so a bare pool is servable as-is."""
    return {
        m.name: Graph(name=m.name, nodes=[Node(id="answer", model=m.name)], sink="answer")
        for m in runtime.pool.models
    }


@dataclass
class Served:
    """One model id of the server: a fixed graph (run by the executor) or a router."""

    name: str
    kind: Literal["graph", "router"]
    info: ServedInfo
    graph: Graph | None = None
    policy: Policy | Any = None
    executor: Any = None
    created: int = field(default_factory=lambda: int(time.time()))
    options: list[Served] | None = None
    """A set of graphs: one entry per graph (named as the set), picked per request."""
    label: str | None = None
    """An option of a set: its graph's name."""

    def option(
        self,
        task: Task,
        max_tokens: int | None,
        pool: Any,
        prompt_tokens: float | None = None,
        example: Any = None,
    ) -> Option:
        """This graph as an option of a set: quality and expected cost from its meta, the
        planned worst case (this request's prompt length; dollars: task averages) else, and
        the run-time guard's bound of the calls that always run."""
        from moagraph.graph.cost import estimate_cost, task_unit_flops
        from moagraph.models.cost import call_dollars, call_flops

        g = self.graph
        assert g is not None
        worst = {
            "flops_norm": self.estimate_flops(task, max_tokens, pool, prompt_tokens, example),
            "dollars": estimate_cost(g, pool, task).dollars,
        }
        # nodes that always run: no condition, and every dependency always runs
        by_id = {n.id: n for n in g.nodes}
        always: set[str] = set()
        changed = True
        while changed:
            changed = False
            for n in g.nodes:
                if (
                    n.id not in always
                    and n.condition is None
                    and all(i in always for i in n.inputs if i in by_id)
                ):
                    always.add(n.id)
                    changed = True
        # the guard bounds a prompt by its bytes (no tokenizer): so does this
        a: float = task.avg_input_tokens if prompt_tokens is None else prompt_tokens
        if example is not None:
            from moagraph.graph.run import prompt_token_bound

            a = max(a, prompt_token_bound(task.prompt(example)))
        default_mt = getattr(getattr(self.executor, "default_params", None), "max_tokens", 512)
        flops = dollars = 0.0
        for n in g.llm_nodes:
            if n.id in always and n.model is not None:
                mt = n.max_tokens or default_mt
                spec = pool[n.model]
                p_tokens = a + len(n.inputs) * mt
                flops += call_flops(spec, p_tokens, mt)
                dollars += call_dollars(spec, p_tokens, mt)
        guard = {"flops_norm": flops / task_unit_flops(pool, task), "dollars": dollars}
        return option_from_meta(self.label or g.name or self.name, g.meta, worst, guard)

    def estimate_flops(
        self,
        task: Task,
        max_tokens: int | None,
        pool: Any,
        prompt_tokens: float | None = None,
        example: Any = None,
    ) -> float | None:
        """Planned normalised FLOPs before any call.

        Graphs: every node's cost with A = ``prompt_tokens`` (the request's real prompt
        length; the task average when None) and B = the task's average output, capped by
        the request's max_tokens. Routers: their own plan for ``example``
        (``Router.estimate_flops(example, task, prompt_tokens=, max_tokens=)``); for a
        router without one, a lower bound: one call of the cheapest model it may use.
        Either way a router's run is also capped at the budget while it runs
        (:func:`moagraph.graph.budget.budget_scope`).
        """
        from moagraph.graph.cost import graph_flops, task_unit_flops
        from moagraph.models.cost import call_flops

        a = task.avg_input_tokens if prompt_tokens is None else prompt_tokens
        b: float = task.avg_output_tokens
        if max_tokens is not None:
            b = min(b, max_tokens)
        unit = task_unit_flops(pool, task)
        if self.graph is not None:
            return graph_flops(self.graph, pool, a, b) / unit
        est = getattr(self.policy, "estimate_flops", None)
        if callable(est) and example is not None:
            return float(est(example, task, prompt_tokens=prompt_tokens, max_tokens=max_tokens))
        if prompt_tokens is None:
            return None
        names = [n for n in self.info.models if n in pool.names] or list(pool.names)
        return min(call_flops(pool[n], a, b) for n in names) / unit

    async def answer(self, example: Any, task: Task, on_token: Any) -> Trace:
        if self.executor is not None:
            return await self.executor.run(self.graph, example, on_token=on_token)
        return await self.policy.answer(example, task, on_token=on_token)


def _graph_info(graph: Graph, estimate: float | None) -> ServedInfo:
    width, depth = graph_shape(graph)
    models = sorted({n.model for n in graph.nodes if n.model})
    nodes = [
        {"id": n.id, "role": n.role.value, "model": n.model, "inputs": list(n.inputs)}
        for n in graph.nodes
    ]
    return ServedInfo(
        kind="graph",
        models=models,
        nodes=nodes,
        width=width,
        depth=depth,
        sink=graph.sink,
        estimated_flops_normalised=estimate,
        description=str(graph.meta.get("description", "")),
    )


def _graph_entry(name: str, graph: Graph, rt: Any, task: Task, pool: Pool) -> Served:
    from moagraph.graph.executor import GraphExecutor

    executor = GraphExecutor(rt, task)
    executor.plan(graph)  # validates against the pool now, not on the first request
    entry = Served(
        name=name,
        kind="graph",
        info=ServedInfo(kind="graph", models=[]),
        graph=graph,
        executor=executor,
        label=graph.name,
    )
    entry.info = _graph_info(graph, entry.estimate_flops(task, None, pool))
    return entry


def _set_entry(name: str, graphs: GraphSet, rt: Any, task: Task, pool: Pool) -> Served:
    """A served set of graphs: one option entry per graph, picked per request."""
    if not graphs.graphs:
        raise ConfigError(f"served set {name!r} has no graphs")
    options = [_graph_entry(name, g, rt, task, pool) for g in graphs.graphs]
    listed = []
    for o in options:
        opt = o.option(task, None, pool)
        listed.append(
            {
                "option": opt.name,
                "quality": opt.quality,
                "expected": {k: v for k, v in opt.expected.items() if v is not None},
                "cost_source": dict(opt.cost_source),
                "worst": {k: v for k, v in opt.worst.items() if v is not None},
                "models": o.info.models,
            }
        )
    models = sorted({m for o in options for m in o.info.models})
    info = ServedInfo(
        kind="graph",
        models=models,
        description=f"a set of {len(options)} graphs; a request's budget picks the best "
        "expected to fit: " + ", ".join(str(x["option"]) for x in listed),
        options=listed,
    )
    return Served(name=name, kind="graph", info=info, options=options)


def _router_info(policy: Any, pool_names: list[str]) -> ServedInfo:
    models = getattr(policy, "models", None)
    if models is not None:
        models = [getattr(m, "name", m) for m in models]
    return ServedInfo(
        kind="router",
        models=list(models or pool_names),
        description=str(getattr(policy, "description", "") or type(policy).__name__),
    )


def _default_task(name: str) -> Task:
    from moagraph.tasks.registry import get_task

    return get_task(name)


# --- helpers -----------------------------------------------------------------


def _usage(trace: Trace) -> Usage:
    p, c = trace.prompt_tokens, trace.completion_tokens
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def _failed_node(trace: Trace) -> tuple[str | None, str | None, str]:
    for n in trace.nodes:
        if n.error:
            return n.node_id, n.model, n.error
    return None, None, trace.error or "unknown error"


def _upstream_error(
    served: Served,
    exc: BaseException | None,
    trace: Trace | None,
    upstreams: tuple[str, ...] = (),
) -> ApiError:
    """502 naming the node (and model) whose LLM call failed; upstream URLs and hosts
    (``upstreams``, the pool's, and any URL at all) are hidden from the client."""
    node_id = model = None
    if trace is not None:
        node_id, model, msg = _failed_node(trace)
    else:
        msg = str(exc)
        model = getattr(exc, "model", None)
        node_id = getattr(exc, "node_id", None)
        if node_id is None and model and served.graph is not None:
            ids = [n.id for n in served.graph.nodes if n.model == model]
            node_id = ids[0] if len(ids) == 1 else (",".join(ids) or None)
    where = f"node {node_id!r}" if node_id else "a node"
    if model:
        where += f" (model {model!r})"
    full = f"upstream failure in {served.name!r} at {where}: {msg}"
    log.warning("%s", redact(full))  # the server log keeps the details (keys redacted)
    return ApiError(
        502,
        upstream_message(full, upstreams),
        type="upstream_error",
        param=node_id,
        code="backend_error",
    )


_TRACEBACK = re.compile(r"Traceback \(most recent call last\):.*", re.DOTALL)
# absolute POSIX paths (not URL paths: those follow a host name) and Windows paths
_POSIX_PATH = re.compile(r"(?<![\w:/.~-])(?:~|\.{1,2})?/(?:[^\s/'\"():,;]+/)+([^\s/'\"():,;]+)")
_WIN_PATH = re.compile(r"\b[A-Za-z]:\\(?:[^\s\\'\"]+\\)*([^\s\\'\"]+)")


def client_message(message: str) -> str:
    """What a client may see of an internal message: credentials redacted, tracebacks
    cut, file paths reduced to their last component (``.../model.gguf``)."""
    out = _TRACEBACK.sub("(details in the server log)", message)
    out = _POSIX_PATH.sub(lambda m: ".../" + m.group(1), out)
    out = _WIN_PATH.sub(lambda m: "...\\" + m.group(1), out)
    return redact(out)


_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://[^\s'\"<>()\[\]{},;]+")
UPSTREAM_URL = "[upstream URL]"


def upstream_addresses(pool: Any) -> tuple[str, ...]:
    """What of the pool's endpoints a client must not see: each ``base_url``, its
    ``host:port`` and its host name (redacted as exact values)."""
    from urllib.parse import urlsplit

    out: set[str] = set()
    for spec in getattr(pool, "models", ()):
        url = getattr(spec, "base_url", None)
        if not url:
            continue
        out.update((url, url.rstrip("/")))
        try:
            parts = urlsplit(url)
            out.update(x for x in (parts.netloc.rpartition("@")[2], parts.hostname) if x)
        except ValueError:
            continue
    return tuple(sorted(out, key=len, reverse=True))


def upstream_message(message: str, upstreams: tuple[str, ...] = ()) -> str:
    """An upstream failure as a client may see it: :func:`client_message`, and every URL
    and every endpoint address of the pool (``upstreams``) replaced, so a 502 does not
    map the internal network (the server log keeps them)."""
    out = _URL.sub(UPSTREAM_URL, message)
    return client_message(redact(out, extra=upstreams))  # hosts outside a URL too


def _sse(obj: Any) -> bytes:
    data = (
        obj.model_dump_json(exclude_none=False)
        if hasattr(obj, "model_dump_json")
        else json.dumps(obj)
    )
    return f"data: {data}\n\n".encode()


# --- the app -----------------------------------------------------------------


def create_app(
    pool: PoolLike,
    served: Mapping[str, Graph | Policy | Any] | None = None,
    *,
    graphs: Named = None,
    routers: Named = None,
    config: ServeConfig | None = None,
    task: Task | None = None,
    router_kind: str = "routemoa",
    cache: str | Path | None = None,
    close_runtime: bool = True,
) -> FastAPI:
    """Build the OpenAI-compatible FastAPI app (``moagraph serve`` runs it with uvicorn).

    ``pool``: a bundled pool name, a pool file, a :class:`Pool` or a runtime (``cache``:
    an SQLite call cache for a pool given by name or object). ``graphs`` maps served
    names to a :class:`Graph`, a bundled graph name or a YAML file; ``routers`` maps
    served names to a ready router or a trained scorer file (built as ``router_kind``);
    either may also be ``["NAME=PATH", ...]``. ``served`` is the older form: one mapping
    of ready graphs and routers. A router object should be built on the returned app's
    ``state.runtime`` so request overrides reach its calls. With nothing to serve,
    every pool model is served as a single-node graph.

    >>> from fastapi.testclient import TestClient
    >>> from moagraph.serve import create_app
    >>> app = create_app("local", graphs={"vote": "vote3"})
    >>> sorted(app.state.served), app.state.served["vote"].info.width
    (['vote'], 3)
    >>> TestClient(app, base_url="http://127.0.0.1").get("/v1/models").json()["data"][0]["id"]
    'vote'
    """
    config = config or ServeConfig()
    register_secret(config.api_key)  # never echoed in an error or a log line
    rt = serve_runtime(pool, cache)
    if graphs or routers:
        resolved = resolve_served(rt, graphs, routers, router_kind=router_kind)
        clash = set(resolved) & set(served or {})
        if clash:
            raise ConfigError(f"served name(s) given twice: {', '.join(sorted(clash))}")
        served = {**(served or {}), **resolved}
    conv_task = ConversationTask(task if task is not None else _default_task(config.task))
    pool = cast(Pool, rt.pool)  # from here on: the loaded Pool
    if not served:
        served = single_model_graphs(rt)

    entries: dict[str, Served] = {}
    for name, obj in served.items():
        if isinstance(obj, list | tuple) and all(isinstance(g, Graph) for g in obj):
            obj = GraphSet(list(obj))
        if isinstance(obj, GraphSet):
            entry = _set_entry(name, obj, rt, conv_task, pool)
        elif isinstance(obj, Graph):
            entry = _graph_entry(name, obj, rt, conv_task, pool)
        else:
            if not callable(getattr(obj, "answer", None)):
                raise ValueError(
                    f"served model {name!r}: expected a Graph or a router with an "
                    f"`answer(example, task, on_token)` method, got {type(obj).__name__}"
                )
            entry = Served(name=name, kind="router", info=_router_info(obj, pool.names), policy=obj)
        entries[name] = entry

    upstreams = upstream_addresses(pool)
    store = (
        RequestLog(
            config.store,
            config.run_id,
            config.log_flush_s,
            run_config={"models": list(entries), "pool": pool.name},
            max_rows=config.log_max_rows,
        )
        if config.store
        else None
    )
    inflight: set[asyncio.Task[Any]] = set()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if store is not None:
            store.start()
        yield
        # uvicorn has already waited (up to its graceful timeout) for in-flight requests.
        pending = [t for t in inflight if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if store is not None:
            await store.aclose()
        if close_runtime:
            await rt.aclose()

    app = FastAPI(
        title="moagraph",
        version="0.1.0",
        lifespan=lifespan,
        description="OpenAI-compatible server for moagraph graphs and routers.",
    )
    app.state.runtime = rt
    app.state.served = entries
    app.state.config = config
    app.state.store = store
    app.state.task = conv_task
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            max_age=600,
        )
    app.add_middleware(RequestGuard, config=config)  # outermost: before CORS and routing
    store_bodies = config.store_bodies

    def record(row: RequestRow) -> None:
        if store is not None:
            store.add(row)

    async def auth(request: Request) -> None:
        try:
            check_bearer(request, config.api_key)
        except ApiError as e:
            if request.url.path.endswith("/chat/completions"):
                record(
                    RequestRow(
                        id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
                        model=None,
                        status="rejected",
                        http_status=401,
                        error=e.message,
                    )
                )
            raise

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return ApiError(400, client_message(f"invalid request: {exc.errors()}")).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own 404/405/... in OpenAI's error format."""
        if exc.status_code == 404:
            msg, code = f"no such endpoint: {request.method} {request.url.path}", "not_found"
        elif exc.status_code == 405:
            msg, code = (
                f"method {request.method} is not allowed on {request.url.path}",
                "method_not_allowed",
            )
        else:
            msg, code = client_message(str(exc.detail)), None
        return ApiError(
            exc.status_code, msg, code=code, headers=dict(exc.headers) if exc.headers else None
        ).response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(entries)}

    @app.get("/v1/models", dependencies=[Depends(auth)], response_model=ModelList)
    async def list_models() -> ModelList:
        return ModelList(
            data=[
                ModelObject(id=e.name, created=e.created, moagraph=e.info) for e in entries.values()
            ]
        )

    @app.get("/v1/models/{model_id}", dependencies=[Depends(auth)], response_model=ModelObject)
    async def get_model(model_id: str) -> ModelObject:
        e = _lookup(model_id)
        return ModelObject(id=e.name, created=e.created, moagraph=e.info)

    def _lookup(model: str) -> Served:
        e = entries.get(model)
        if e is None:
            raise ApiError(
                404,
                f"model {model!r} is not served here; served models: {', '.join(entries)}",
                param="model",
                code="model_not_found",
            )
        return e

    req_schema = ChatCompletionRequest.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    req_defs = req_schema.pop("$defs", {})

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}
                    }
                },
            }
        },
    )
    async def chat_completions(request: Request) -> Response:
        # Auth inline (not a Depends) and the body parsed by hand: the check order stays
        # auth -> body, and FastAPI's dependency solver is off the hot path.
        await auth(request)
        t0 = time.perf_counter()
        req_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        try:
            check_json_content_type(request.headers.get("content-type"))
            body = await _read_body(request)
        except ApiError as e:
            record(
                RequestRow(
                    id=req_id, model=None, status="rejected", http_status=e.status, error=e.message
                )
            )
            raise
        try:
            # before validation (its cost grows with the values); a big body is scanned in a
            # thread: numpy releases the GIL, so the event loop keeps serving meanwhile
            if len(body) > SHAPE_IN_THREAD_BYTES:
                await asyncio.to_thread(check_shape, body, config.max_messages)
            else:
                check_shape(body, config.max_messages)
            req = ChatCompletionRequest.model_validate_json(body)
        except (ValidationError, ApiError) as e:
            err = e if isinstance(e, ApiError) else validation_error(e)
            record(
                RequestRow(
                    id=req_id,
                    model=None,
                    status="rejected",
                    http_status=400,
                    error=err.message,
                    request=_raw_body(body),
                )
            )
            raise err from None
        del body  # the parsed request is all that is kept
        row = RequestRow(
            id=req_id,
            model=req.model,
            status="error",
            http_status=500,
            stream=req.stream,
            request=_request_meta(req),
        )
        try:
            prompt_tokens = _check_limits(req)
            entry = _lookup(req.model)
            row.kind = entry.kind
            max_tokens = req.token_limit or config.default_max_tokens
            example = to_example(req_id, req.messages)
            budget = _request_budget(req, request)
            picked: dict[str, Any] | None = None
            if budget.capped or entry.options:
                # the first-layer prompt as the nodes will see it (conversation + task format)
                prompt_tokens = max(
                    prompt_tokens,
                    sum(estimate_tokens(m["content"]) for m in conv_task.prompt(example)),
                )
            if entry.options:  # a set: the budget picks (no budget: the best quality)
                entry, picked = _pick_option(entry, budget, max_tokens, prompt_tokens, example)
            elif budget.capped:
                _check_budget(entry, budget, max_tokens, prompt_tokens, example)
                if entry.kind == "router":
                    picked = _router_pick(entry, budget, max_tokens, prompt_tokens, example)
        except ApiError as e:
            row.status, row.http_status, row.error = "rejected", e.status, e.message
            if store_bodies:
                row.request = req.model_dump(mode="json", exclude_none=True)
            record(row)
            raise
        ov = Overrides(
            temperature=req.temperature,
            top_p=req.top_p,
            max_tokens=max_tokens,
            seed=req.seed,
            stop=req.stop_list,
        )
        # a router's or a picked option's run stops at the budget too: its query run
        # (moagraph.graph.run) refuses any call that might pass it; a fixed graph was checked
        # whole before the run, so only a latency budget caps its run
        if entry.kind == "router" or picked is not None:
            cap: Budget | None = budget.as_budget() if budget.capped else None
        else:
            cap = Budget(max_latency_s=budget.latency_s) if budget.latency_s else None
        with rt.overrides(ov), budget_scope(cap):
            if req.stream:
                return await _stream(entry, req, example, row, t0, request, picked)
            return await _complete(entry, req, example, row, t0, request, picked)

    def _router_pick(
        entry: Served,
        budget: RequestBudget,
        max_tokens: int | None,
        prompt_tokens: int,
        example: Any,
    ) -> dict[str, Any]:
        """What the response says of a router under a budget: it runs capped at it."""
        est = entry.estimate_flops(conv_task, max_tokens, pool, prompt_tokens, example)
        return {
            "option": entry.name,
            "kind": "router",
            "reason": "router run capped at the budget: each call is made only if it fits; "
            "the router's own plan was checked against it first",
            "expected": {"flops_norm": est} if est is not None else {},
            "budget": budget.caps(),
            "budget_fields": {d: budget.param(d) for d in budget.caps()},
            "fits_by": "plan estimate",
            "capped_at_run_time": True,
            "not_fit": [],
        }

    async def _read_body(request: Request) -> bytes:
        """The body, refused with 413 before it is read when Content-Length says it is too
        big, or as soon as the bytes counted while reading pass the limit."""
        limit = config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise ApiError(
                    400, f"invalid Content-Length {declared[:40]!r}", code="invalid_content_length"
                ) from None
            if size > limit:
                raise _too_large(limit, size)
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise _too_large(limit, None)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(limit: int, size: int | None) -> ApiError:
        got = f" ({size:,} bytes)" if size is not None else ""
        return ApiError(
            413,
            f"request body too large{got}: the limit is {limit:,} bytes "
            "(server option --max-body-bytes)",
            code="request_too_large",
        )

    def _raw_body(body: bytes) -> dict[str, Any] | None:
        """What is stored of a body that did not parse: nothing unless bodies are logged,
        then at most its first 4 KB (as ``{"raw": text}``: it may not be JSON)."""
        if not store_bodies:
            return None
        return {"raw": body[:4096].decode("utf-8", "replace"), "bytes": len(body)}

    def _request_meta(req: ChatCompletionRequest) -> dict[str, Any]:
        """The request without its messages: those are in the trace's node prompts."""
        meta = req.model_dump(mode="json", exclude={"messages"}, exclude_none=True)
        meta["n_messages"] = len(req.messages)
        return meta

    def _check_limits(req: ChatCompletionRequest) -> int:
        """Refuse oversized conversations before any work; returns the prompt's token estimate."""
        n = len(req.messages)
        if n > config.max_messages:
            raise ApiError(
                400,
                f"too many messages: {n:,}; the limit is {config.max_messages:,} "
                "(server option --max-messages)",
                param="messages",
                code="too_many_messages",
            )
        tokens = sum(estimate_tokens(m.text) for m in req.messages)
        if tokens > config.max_prompt_tokens:
            raise ApiError(
                400,
                f"the messages are about {tokens:,} tokens; the limit is "
                f"{config.max_prompt_tokens:,} (server option --max-prompt-tokens)",
                param="messages",
                code="context_length_exceeded",
            )
        for name in ("max_tokens", "max_completion_tokens"):
            value = getattr(req, name)
            if value is not None and value > config.max_tokens_limit:
                raise ApiError(
                    400,
                    f"`{name}` is {value:,}; the limit is "
                    f"{config.max_tokens_limit:,} (server option --max-tokens-limit)",
                    param=name,
                    code="invalid_value",
                )
        return tokens

    def _request_budget(req: ChatCompletionRequest, request: Request) -> RequestBudget:
        """The tightest of the server's --budget, the body's ``moagraph.budget_*`` and the
        ``X-Moagraph-Budget-*`` headers, per dimension (each remembers who set it)."""
        parts: list[tuple[Any, float | None, str]] = [
            ("flops_norm", config.budget_flops, "--budget")
        ]
        body = req.moagraph
        for dim in DIMS:
            field_name, header = BUDGET_FIELDS[dim]
            if body is not None:
                parts.append((dim, getattr(body, field_name.split(".", 1)[1]), field_name))
            raw = request.headers.get(header)
            if raw is not None:
                try:
                    value = float(raw.strip())
                except ValueError:
                    value = float("nan")
                if not (value > 0 and value != float("inf")):
                    raise ApiError(
                        400,
                        f"header {header}: expected a positive number, got {raw[:40]!r}",
                        param=header,
                        code="invalid_value",
                    )
                parts.append((dim, value, header))
        return RequestBudget.combine(*parts)

    def _param(budget: RequestBudget, dim: Any) -> str:
        where = budget.param(dim)
        return "model" if where.startswith("--") else where  # the server's own cap

    def _pick_option(
        entry: Served,
        budget: RequestBudget,
        max_tokens: int | None,
        prompt_tokens: int,
        example: Any,
    ) -> tuple[Served, dict[str, Any]]:
        """A set: the option the budget picks (:func:`moagraph.serve.pick.pick`), or 400."""
        assert entry.options is not None
        opts = [
            o.option(conv_task, max_tokens, pool, prompt_tokens, example) for o in entry.options
        ]
        try:
            chosen = pick(opts, budget)
        except NoOptionFits as e:
            where = e.param
            raise ApiError(
                400,
                f"{entry.name!r}: {e.message}",
                param="model" if where.startswith("--") else where,
                code="budget_exceeded",
            ) from None
        return entry.options[opts.index(chosen.option)], chosen.info()

    def _check_budget(
        entry: Served,
        budget: RequestBudget,
        max_tokens: int | None,
        prompt_tokens: int,
        example: Any,
    ) -> None:
        """A fixed graph or a router: refused when its planned cost is over the budget."""
        if entry.graph is not None and budget.dollars is not None:
            from moagraph.graph.cost import estimate_cost

            dollars = estimate_cost(entry.graph, pool, conv_task).dollars
            if dollars > budget.dollars:
                raise ApiError(
                    400,
                    f"{entry.name!r} is estimated at ${dollars:.4g} per request, over the "
                    f"budget of ${budget.dollars:.4g}; raise {budget.param('dollars')} or pick "
                    f"a cheaper model (served: {', '.join(entries)})",
                    param=_param(budget, "dollars"),
                    code="budget_exceeded",
                )
        limit = budget.flops_norm
        if limit is None:
            return
        est = entry.estimate_flops(conv_task, max_tokens, pool, prompt_tokens, example)
        if est is not None and est > limit:
            param = _param(budget, "flops_norm")
            raise ApiError(
                400,
                f"{entry.name!r} is estimated at {est:.3g} normalised FLOPs for this "
                f"{prompt_tokens:,}-token prompt, over the budget of {limit:.3g}; raise "
                f"moagraph.budget_flops (header X-Moagraph-Budget-Flops) / --budget, shorten "
                "the prompt, lower max_tokens, "
                f"or pick a smaller model (served: {', '.join(entries)})",
                param=param,
                code="budget_exceeded",
            )

    def _extension(
        entry: Served,
        trace: Trace,
        trace_id: str,
        wall_s: float,
        picked: dict[str, Any] | None = None,
    ) -> MoagraphUsage:
        from moagraph.graph.cost import task_unit_flops

        unit = task_unit_flops(pool, conv_task)
        ran = [n for n in trace.nodes if not n.skipped]  # a skipped node made no call
        return MoagraphUsage(
            trace_id=trace_id,
            policy=entry.name,
            kind=entry.kind,
            flops=trace.flops,
            flops_normalised=trace.flops / unit if unit else 0.0,
            dollars=trace.dollars,
            latency_s=trace.latency_s,
            wall_s=wall_s,
            calls=sum(1 for n in ran if n.model),
            cache_hits=trace.cache_hits,
            nodes=[
                NodeUsage(
                    id=n.node_id,
                    role=n.role,
                    model=n.model,
                    prompt_tokens=n.prompt_tokens,
                    completion_tokens=n.completion_tokens,
                    latency_s=n.latency_s,
                    cached=n.cached,
                )
                for n in ran
            ],
            route=trace.meta if entry.kind == "router" else None,
            pick=picked,
        )

    def _finish(row: RequestRow, entry: Served, trace: Trace, ext: MoagraphUsage) -> None:
        row.status, row.http_status = "ok", 200
        row.prompt_tokens, row.completion_tokens = trace.prompt_tokens, trace.completion_tokens
        row.flops, row.flops_normalised, row.dollars = ext.flops, ext.flops_normalised, ext.dollars
        row.latency_s, row.wall_s = ext.latency_s, ext.wall_s
        row.trace = trace
        record(row)

    def _fail(
        row: RequestRow, err: ApiError, trace: Trace | None, t0: float, status: str = "error"
    ) -> None:
        row.status, row.http_status, row.error = status, err.status, err.message
        row.wall_s = time.perf_counter() - t0
        row.trace = trace
        record(row)

    async def _run(entry: Served, example: Any, on_token: Any) -> Trace:
        """Run the policy; map failures to ApiErrors (502 for upstream)."""
        try:
            trace = await entry.answer(example, conv_task, on_token)
        except BackendError as e:
            raise _upstream_error(entry, e, None, upstreams) from e
        if trace.error:
            err = _upstream_error(entry, None, trace, upstreams)
            err.trace = trace  # type: ignore[attr-defined]
            raise err
        return trace

    async def _cancel_on_disconnect(
        request: Request, task: asyncio.Task[Any], gone: list[bool]
    ) -> None:
        """Cancel ``task`` when the client goes away (the body is read: the next ASGI
        message is the disconnect), so no upstream call runs for nobody."""
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                gone[0] = True
                task.cancel()
                return

    async def _complete(
        entry: Served,
        req: ChatCompletionRequest,
        example: Any,
        row: RequestRow,
        t0: float,
        request: Request,
        picked: dict[str, Any] | None = None,
    ) -> Response:
        task = asyncio.current_task()
        gone = [False]
        watcher = None
        if task is not None:
            inflight.add(task)
            watcher = asyncio.create_task(_cancel_on_disconnect(request, task, gone))
        try:
            trace = await _run(entry, example, None)
        except ApiError as e:
            _fail(row, e, getattr(e, "trace", None), t0)
            raise
        except asyncio.CancelledError:
            if gone[0] and task is not None:  # our own cancel: the client hung up
                task.uncancel()
                _fail(
                    row,
                    ApiError(499, "cancelled: the client disconnected"),
                    None,
                    t0,
                    status="cancelled",
                )
                return Response(status_code=499)  # nobody reads it
            _fail(
                row,
                ApiError(499, "cancelled (client gone or server shutting down)"),
                None,
                t0,
                status="cancelled",
            )
            raise
        except Exception as e:  # a bug, not the client's fault: log it, answer 500
            log.exception("request %s failed", row.id)
            err = ApiError(
                500, f"internal error ({type(e).__name__}); see the server log", type="server_error"
            )
            _fail(row, err, None, t0)
            raise err from e
        finally:
            if watcher is not None:
                watcher.cancel()
            if task is not None:
                inflight.discard(task)
        wall = time.perf_counter() - t0
        ext = _extension(entry, trace, row.id, wall, picked)
        _finish(row, entry, trace, ext)
        out = ChatCompletion(
            id=row.id,
            created=int(time.time()),
            model=entry.name,
            choices=[
                Choice(
                    message=AssistantMessage(content=trace.output),
                    finish_reason=_finish_reason(trace),
                )
            ],
            usage=_usage(trace),
            moagraph=ext,
        )
        return Response(out.model_dump_json(), media_type="application/json")

    async def _stream(
        entry: Served,
        req: ChatCompletionRequest,
        example: Any,
        row: RequestRow,
        t0: float,
        request: Request,
        picked: dict[str, Any] | None = None,
    ) -> Response:
        """Start the run; answer 502 if it fails before its first token, else stream SSE."""
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def on_token(text: str) -> None:
            if text:
                queue.put_nowait(("token", text))

        async def run() -> None:
            try:
                queue.put_nowait(("done", await _run(entry, example, on_token)))
            except ApiError as e:
                queue.put_nowait(("error", e))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("request %s failed", row.id)
                queue.put_nowait(
                    (
                        "error",
                        ApiError(
                            500,
                            f"internal error ({type(e).__name__}); see the server log",
                            type="server_error",
                        ),
                    )
                )

        runner = asyncio.create_task(run())
        inflight.add(runner)
        runner.add_done_callback(inflight.discard)
        # Until the first token the response has not started, so nothing else notices a
        # client that leaves (e.g. while its call waits for a free slot at the endpoint):
        # watch for it here, and cancel the run, so no model call is made for nobody.
        me = asyncio.current_task()
        gone = [False]
        watcher = asyncio.create_task(_cancel_on_disconnect(request, me, gone)) if me else None
        try:
            first = await queue.get()
        except asyncio.CancelledError:
            runner.cancel()
            if gone[0] and me is not None:  # our own cancel: the client hung up
                me.uncancel()
                _fail(
                    row,
                    ApiError(499, "cancelled: the client disconnected before the first token"),
                    None,
                    t0,
                    status="cancelled",
                )
                return Response(status_code=499)  # nobody reads it
            _fail(row, ApiError(499, "cancelled"), None, t0, status="cancelled")
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
        if first[0] == "error":
            err = first[1]
            _fail(row, err, getattr(err, "trace", None), t0)
            raise err
        created = int(time.time())

        def chunk(delta: Delta, finish: str | None = None, **kw: Any) -> bytes:
            return _sse(
                ChatCompletionChunk(
                    id=row.id,
                    created=created,
                    model=entry.name,
                    choices=[ChunkChoice(delta=delta, finish_reason=finish)],
                    **kw,
                )
            )

        async def events() -> AsyncIterator[bytes]:
            streamed: list[str] = []
            item = first
            finished = False
            try:
                yield chunk(Delta(role="assistant", content=""))
                while True:
                    kind, value = item
                    if kind == "token":
                        streamed.append(value)
                        yield chunk(Delta(content=value))
                    elif kind == "done":
                        trace: Trace = value
                        sent = "".join(streamed)
                        # A cached or vote sink may not have streamed: send what is missing.
                        if trace.output != sent and trace.output.startswith(sent):
                            yield chunk(Delta(content=trace.output[len(sent) :]))
                        ext = _extension(entry, trace, row.id, time.perf_counter() - t0, picked)
                        _finish(row, entry, trace, ext)
                        finished = True
                        yield chunk(
                            Delta(), _finish_reason(trace), usage=_usage(trace), moagraph=ext
                        )
                        yield b"data: [DONE]\n\n"
                        return
                    else:  # error after tokens went out: OpenAI-style error event
                        err: ApiError = value
                        _fail(row, err, getattr(err, "trace", None), t0)
                        finished = True
                        yield f"data: {json.dumps(err.body())}\n\n".encode()
                        return
                    item = await queue.get()
            finally:
                if not finished:  # client disconnected or server shutting down
                    runner.cancel()
                    _fail(
                        row,
                        ApiError(499, "cancelled (client gone or server shutting down)"),
                        None,
                        t0,
                        status="cancelled",
                    )

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, plus the hand-parsed request body's models."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(req_defs)
            schemas["ChatCompletionRequest"] = req_schema
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _finish_reason(trace: Trace) -> str:
    """ "length" when the sink hit its token limit (backends put it in the node meta)."""
    for n in trace.nodes:
        if n.meta.get("finish_reason") == "length" and n.output == trace.output:
            return "length"
    return "stop"
