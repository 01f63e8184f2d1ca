"""A pool model served by N replica actors on a Ray cluster, as one :class:`Backend`.

Each replica is an async Ray actor that builds the model's own backend
(llama.cpp in-process, any OpenAI-compatible endpoint, a replay pool, or a
``factory``) from the pool spec, so nothing but the spec crosses the wire.
The driver keeps, per replica, how many calls are in flight and sends each
call to the least-loaded live replica (ties: the one that served fewest),
never more than ``max_concurrency`` at once on one replica.

When a replica dies (``ray.kill``, its worker process or its node lost) every
call that was in flight on it fails with a Ray actor error; the first such
failure replaces the replica with a fresh actor (placed by Ray wherever the
resources are), and each failed call is retried on another replica, up to
``max_call_retries`` times. Only that call is repeated: the executor, the
cache and the stores above never see the failure, and nodes that already
finished are not run again.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pickle
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moagraph.models.base import (
    Backend,
    BackendConfigError,
    BackendError,
    Completion,
    LLMRequest,
    TokenCallback,
    emit,
)
from moagraph.models.pool import ModelSpec, Pool
from moagraph.scale import require_ray
from moagraph.scale.spec import RaySpec

ray = require_ray()
from ray.exceptions import (  # noqa: E402 - after the check that names the extra
    GetTimeoutError,
    RayActorError,
    WorkerCrashedError,
)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

__all__ = ["RayBackend", "build_backend"]

_ACTOR_LOST = (RayActorError, WorkerCrashedError)


def build_backend(spec: ModelSpec, pool: Pool, factory: str | None = None) -> Backend:
    """The backend a replica holds: ``factory(spec, pool)`` or the spec's own backend."""
    inner = spec.model_copy(update={"ray": None})
    if factory:
        mod, _, attr = factory.partition(":")
        try:
            fn: Callable[[ModelSpec, Pool], Backend] = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise BackendConfigError(
                f"model {spec.name!r}: ray.factory {factory!r} cannot be imported ({e}); "
                "write it as 'package.module:callable'",
                model=spec.name,
            ) from None
        return fn(inner, pool)
    from moagraph.models.runtime import make_backend

    return make_backend(inner, pool)


def _portable(e: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return BackendError(f"{type(e).__name__}: {e}")


class _Replica:
    """One replica: an async actor holding one backend."""

    def __init__(self, spec: ModelSpec, pool: Pool, factory: str | None) -> None:
        self.backend = build_backend(spec, pool, factory)
        self.spec = spec.model_copy(update={"ray": None})
        self.calls = 0

    async def info(self) -> dict[str, Any]:
        return {
            "identity": self.backend.identity(self.spec),
            "cacheable": bool(getattr(self.backend, "cacheable", True)),
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
        }

    async def complete(self, request: LLMRequest) -> tuple[str, Any]:
        self.calls += 1
        try:
            return "ok", await self.backend.complete(request)
        except Exception as e:  # a model error travels back as itself, not as a dead replica
            return "err", _portable(e)

    async def close(self) -> None:
        await self.backend.aclose()


_ReplicaActor = ray.remote(_Replica)


@dataclass
class _Slot:
    index: int
    actor: Any
    generation: int = 0
    in_flight: int = 0
    served: int = 0
    node: str | None = None


class RayBackend:
    """Replicas of one pool model on Ray (see the module docstring)."""

    kind = "ray"

    def __init__(
        self,
        spec: ModelSpec,
        pool: Pool,
        *,
        ready_timeout_s: float = 180.0,
    ) -> None:
        from moagraph.scale.cluster import ensure_connected

        try:
            ensure_connected()
        except ValueError as e:  # a configuration error: not retried, not a transient failure
            raise BackendConfigError(
                f"model {spec.name!r} has a `ray:` option but {e}", model=spec.name
            ) from None
        self.spec = spec
        self.pool = pool
        self.ray_spec: RaySpec = spec.ray or RaySpec()
        self.per_replica = self.ray_spec.per_replica(spec.max_concurrency)
        self.max_in_flight = self.ray_spec.replicas * self.per_replica
        self.retries = 0  # calls sent again after their replica died
        self.restarts = 0  # replicas replaced
        self._slots: list[_Slot] = []
        for i in range(self.ray_spec.replicas):
            actor, node = self._spawn()
            self._slots.append(_Slot(i, actor, node=node))
        self._cond: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            infos = ray.get([s.actor.info.remote() for s in self._slots], timeout=ready_timeout_s)
        except GetTimeoutError:
            self._kill_all()
            raise BackendConfigError(
                f"model {spec.name!r}: {self.ray_spec.replicas} Ray replicas were not placed "
                f"within {ready_timeout_s:.0f}s; the cluster lacks the resources asked for "
                f"({self.ray_spec.actor_options()}); lower `ray:` num_cpus/num_gpus/memory_gb "
                "or replicas, or add nodes",
                model=spec.name,
            ) from None
        except RayActorError as e:
            self._kill_all()
            raise BackendConfigError(
                f"model {spec.name!r}: a Ray replica failed to start its backend: {e}",
                model=spec.name,
            ) from None
        self._identity = str(infos[0]["identity"])
        self.cacheable = bool(infos[0]["cacheable"])
        self.nodes = [str(i["node_id"]) for i in infos]  # where each replica started
        for slot, node in zip(self._slots, self.nodes):
            slot.node = node

    # --- replicas -----------------------------------------------------------
    def _fits(self, node: dict[str, Any]) -> bool:
        have = node.get("Resources", {})
        need = {"CPU": self.ray_spec.num_cpus, "GPU": self.ray_spec.num_gpus}
        need.update(self.ray_spec.resources)
        if self.ray_spec.memory_gb is not None:
            need["memory"] = self.ray_spec.memory_gb * 1024**3
        return all(have.get(k, 0.0) >= v for k, v in need.items() if v > 0)

    def _pick_node(self) -> str | None:
        """SPREAD: the alive node that can hold a replica and holds fewest of ours."""
        if self.ray_spec.strategy != "SPREAD":
            return None
        mine = Counter(s.node for s in getattr(self, "_slots", []))
        nodes = sorted(str(n["NodeID"]) for n in ray.nodes() if n.get("Alive") and self._fits(n))
        return min(nodes, key=lambda n: (mine[n], nodes.index(n))) if nodes else None

    def _spawn(self, *, soft: bool = False) -> tuple[Any, str | None]:
        opts = self.ray_spec.actor_options()
        opts["max_concurrency"] = self.per_replica
        opts["max_restarts"] = 0  # the driver replaces dead replicas and retries their calls
        node = self._pick_node()
        if node is not None:  # a replacement is soft: Ray may place it elsewhere if needed
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node, soft=soft)
        actor = _ReplicaActor.options(**opts).remote(self.spec, self.pool, self.ray_spec.factory)
        return actor, node

    def _replace(self, slot: _Slot, generation: int) -> None:
        if slot.generation != generation:
            return  # another failed call already replaced it
        try:
            ray.kill(slot.actor, no_restart=True)
        except Exception:
            pass
        slot.node = None  # its node may be gone: choose among the others
        slot.actor, slot.node = self._spawn(soft=True)
        slot.generation += 1
        self.restarts += 1

    def replica_actors(self) -> list[Any]:
        """The live actor handles, by replica index (tests kill them)."""
        return [s.actor for s in self._slots]

    def served(self) -> list[int]:
        """Calls completed by each replica slot."""
        return [s.served for s in self._slots]

    # --- load balancing ------------------------------------------------------
    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._cond is None or self._loop is not loop:
            self._cond, self._loop = asyncio.Condition(), loop
        return self._cond

    async def _acquire(self) -> _Slot:
        cond = self._condition()
        async with cond:
            while True:
                free = [s for s in self._slots if s.in_flight < self.per_replica]
                if free:
                    slot = min(free, key=lambda s: (s.in_flight, s.served, s.index))
                    slot.in_flight += 1
                    return slot
                await cond.wait()

    async def _release(self, slot: _Slot) -> None:
        cond = self._condition()
        async with cond:
            slot.in_flight -= 1
            cond.notify()

    # --- Backend --------------------------------------------------------------
    def identity(self, model: ModelSpec) -> str:
        return self._identity  # the replicas' backend: cache entries are shared with local runs

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        lost = 0
        while True:
            slot = await self._acquire()
            generation = slot.generation
            try:
                status, value = await slot.actor.complete.remote(request)
            except _ACTOR_LOST as e:
                await self._release(slot)
                self._replace(slot, generation)
                lost += 1
                if lost > self.ray_spec.max_call_retries:
                    raise BackendError(
                        f"model {self.spec.name!r}: the Ray replica died {lost} times on this "
                        f"call (last: {type(e).__name__}); see `ray logs` on the cluster",
                        model=self.spec.name,
                        retryable=True,
                    ) from None
                self.retries += 1
                continue
            except BaseException:
                await self._release(slot)
                raise
            slot.served += 1
            await self._release(slot)
            if status == "err":
                raise value
            completion: Completion = value
            await emit(on_token, completion.text)  # replicas do not stream: one piece
            return completion

    def _kill_all(self) -> None:
        for s in self._slots:
            try:
                ray.kill(s.actor, no_restart=True)
            except Exception:
                pass

    async def aclose(self) -> None:
        closing = [s.actor.close.remote() for s in self._slots]
        try:
            await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), timeout=10)
        except TimeoutError:
            pass
        self._kill_all()
