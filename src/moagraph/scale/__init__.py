"""Scale out on a Ray cluster (optional: ``pip install 'moagraph[ray]'``).

Nothing here imports ``ray`` at import time: :mod:`moagraph.scale.spec` is
plain pydantic (the ``ray:`` option of a pool model), and the modules that
need Ray (:mod:`~moagraph.scale.ray_backend`, :mod:`~moagraph.scale.cluster`)
call :func:`require_ray` first, which names the extra when it is missing.
"""

from __future__ import annotations

from types import ModuleType

from moagraph.errors import ConfigError

__all__ = ["RayUnavailable", "require_ray"]

RAY_EXTRA_HINT = "pip install 'moagraph[ray]'"


class RayUnavailable(ConfigError):
    """Ray was asked for (``ray:`` in a pool, or ``--ray``) but is not installed."""


def require_ray() -> ModuleType:
    """Import and return ``ray``, or raise :class:`RayUnavailable` naming the extra."""
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable(
            f"Ray is not installed ({e}); scaling out needs the ray extra: {RAY_EXTRA_HINT}"
        ) from None
    return ray
