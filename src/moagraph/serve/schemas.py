"""Wire format: the subset of the OpenAI chat API the server speaks, plus `moagraph`.

Requests accept (and ignore) OpenAI fields the server has no use for, so
existing clients and chat UIs work unchanged; what the server does use is
validated here so a bad body fails with the field's name before any LLM call.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "developer", "user", "assistant", "tool"]


class ContentPart(BaseModel):
    """One part of a multi-part message; only text parts carry anything we can use."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_only(self) -> ContentPart:
        if self.type != "text" or self.text is None:
            raise ValueError(
                f"content part of type {self.type!r} is not supported; send text parts "
                "({'type': 'text', 'text': ...}) or a plain string"
            )
        return self


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class MoagraphRequest(BaseModel):
    """The `moagraph` request extension (OpenAI clients send it via ``extra_body``)."""

    model_config = ConfigDict(extra="forbid")

    budget_flops: float | None = Field(
        None,
        gt=0,
        description="Normalised FLOPs for this request (header X-Moagraph-Budget-Flops). A "
        "graph whose estimated cost is higher is refused; a set of graphs picks the best one "
        "expected to fit; a router runs capped at it.",
    )
    budget_dollars: float | None = Field(
        None,
        gt=0,
        description="Dollars for this request (header X-Moagraph-Budget-Dollars); as budget_flops.",
    )
    budget_latency_s: float | None = Field(
        None,
        gt=0,
        description="Seconds for this request (header X-Moagraph-Budget-Latency-S): sets pick by "
        "their recorded expected latency; every run is stopped when it is used up.",
    )


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions body. Unknown fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    moagraph: MoagraphRequest | None = None

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, msgs: list[MessageIn]) -> list[MessageIn]:
        if not any(m.role == "user" for m in msgs):
            raise ValueError("needs at least one message with role 'user' (the query to answer)")
        if msgs[-1].role not in ("user", "tool"):
            raise ValueError(
                f"the last message has role {msgs[-1].role!r}; end the conversation with the "
                "'user' message to answer"
            )
        return msgs

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


# --- responses ---------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class NodeUsage(BaseModel):
    id: str
    role: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cached: bool = False


class MoagraphUsage(BaseModel):
    """The `moagraph` response extension: what the answer cost, across all nodes."""

    trace_id: str
    policy: str
    kind: Literal["graph", "router"]
    flops: float = Field(description="Absolute FLOPs summed over all nodes.")
    flops_normalised: float = Field(
        description="FLOPs in units of one call of the pool's smallest model with no inputs."
    )
    dollars: float
    latency_s: float = Field(description="Critical-path latency (unlimited parallelism).")
    wall_s: float = Field(description="Measured time the server spent on the request.")
    calls: int = Field(description="LLM calls made (cache hits included).")
    cache_hits: int
    nodes: list[NodeUsage]
    route: dict[str, Any] | None = Field(
        None,
        description="Routers only: the decisions behind the answer (scorer prior per model, "
        "models and scores per round, combined score, stop reason, aggregator).",
    )
    pick: dict[str, Any] | None = Field(
        None,
        description="Sets of graphs (and routers under a budget): which option answered and "
        "why: its expected cost and quality, the budget, the options that did not fit.",
    )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str = "stop"
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    moagraph: MoagraphUsage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    moagraph: MoagraphUsage | None = None


class ServedInfo(BaseModel):
    """The `moagraph` field of a model object: what answers when this id is called."""

    kind: Literal["graph", "router"]
    models: list[str] = Field(description="Pool models it may call.")
    nodes: list[dict[str, Any]] = Field(
        default_factory=list, description="Graph nodes (graphs only)."
    )
    width: int | None = None
    depth: int | None = None
    sink: str | None = None
    estimated_flops_normalised: float | None = None
    description: str = ""
    options: list[dict[str, Any]] | None = Field(
        None,
        description="Sets of graphs only: each option's quality and expected cost, "
        "from which a request's budget picks.",
    )


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "moagraph"
    moagraph: ServedInfo


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
