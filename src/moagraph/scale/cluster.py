"""Connect to (or start) a Ray cluster and place a pool's models on it.

``--ray ADDRESS`` on ``moagraph eval|record|search`` calls :func:`connect`
then :func:`on_cluster`: every model of the pool becomes replicas on the
cluster (:class:`~moagraph.scale.ray_backend.RayBackend`), while the query
orchestration, the grader, the call cache and the SQLite stores stay on the
driver. Workers only return completions; the driver writes, so ``--resume``
works exactly as on one machine.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from moagraph.models.pool import Pool
from moagraph.scale import require_ray
from moagraph.scale.spec import RaySpec

__all__ = ["alive_nodes", "connect", "ensure_connected", "on_cluster"]


def connect(address: str | None = "auto", *, namespace: str | None = None) -> dict[str, Any]:
    """Join a Ray cluster: ``HOST:PORT`` (or ``ray://HOST:PORT``), ``auto`` (the cluster
    started on this machine by ``ray start``, or $RAY_ADDRESS), or ``local`` (start a
    private one-machine cluster for this process). Returns the cluster's resources."""
    ray = require_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    if ray.is_initialized():
        return dict(ray.cluster_resources())
    kwargs: dict[str, Any] = {
        "ignore_reinit_error": True,
        "log_to_driver": False,
        "logging_level": "warning",
        "namespace": namespace,
    }
    addr = (address or "auto").strip()
    try:
        if addr == "local":
            # A private cluster listens on loopback only. On Linux Ray maps 127.0.0.1 to the
            # host's address, so use another loopback address there. address="local" starts
            # a new one even when a cluster already runs here (`ray start --head`, or
            # $RAY_ADDRESS): without it ray.init() joins that cluster, and then refuses the
            # object_store_memory meant for a new one ("must not be provided").
            ip = "127.0.0.1" if sys.platform in ("darwin", "win32") else "127.0.0.2"
            ray.init(
                address="local",
                include_dashboard=False,
                _node_ip_address=ip,
                object_store_memory=256 * 1024**2,  # text only: small calls, small results
                **kwargs,
            )
        else:  # an existing cluster: its object store is already sized
            _probe(addr)
            ray.init(address=addr, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ValueError(
            f"--ray {addr}: cannot connect to a Ray cluster ({e}); start one with "
            "`ray start --head --port=6379` and pass --ray HEAD_IP:6379, or --ray local"
        ) from None
    return dict(ray.cluster_resources())


def _probe(addr: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at the cluster's address (Ray
    itself retries an unreachable GCS for minutes)."""
    import socket

    target = os.environ.get("RAY_ADDRESS", "") if addr == "auto" else addr
    target = target.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # 'auto' with nothing exported: Ray looks for a local cluster itself
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {host}:{port}: {e}") from None


_connect_failed: list[str] = []


def ensure_connected() -> None:
    """Connect if nobody has: to $RAY_ADDRESS when set, else a private local cluster.

    A failure is remembered and raised again at once: every model with a ``ray:`` option
    (and every query that builds one) gets the same clear error without trying again."""
    ray = require_ray()
    if ray.is_initialized():
        return
    if _connect_failed:
        raise ValueError(_connect_failed[0])
    try:
        connect(os.environ.get("RAY_ADDRESS") or "local")
    except ValueError as e:
        _connect_failed.append(str(e))
        raise


def alive_nodes() -> int:
    ray = require_ray()
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def on_cluster(pool: Pool, replicas: int | None = None) -> Pool:
    """The same pool with every model placed on Ray.

    A model that already has a ``ray:`` option keeps it; the others get
    ``replicas`` replicas (default: one per alive node), spread over the nodes,
    reserving one CPU each for in-process llama.cpp and none for endpoint or
    replay models (those only wait on I/O).
    """
    n = replicas or max(1, alive_nodes())
    models = [
        m
        if m.ray is not None
        else m.model_copy(
            update={"ray": RaySpec(replicas=n, num_cpus=1.0 if m.backend == "llamacpp" else 0.0)}
        )
        for m in pool.models
    ]
    return pool.model_copy(update={"models": models})
