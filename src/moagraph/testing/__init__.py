"""Reusable conformance suites, shipped with moagraph (as ``optuna/testing/``).

A new router passes the same checks as the built-in ones by inheriting the
suite in :mod:`moagraph.testing.route`::

    from moagraph.testing.route import RouterConformance

    class TestMyRouter(RouterConformance):
        router_kind = "my-router"   # a name in moagraph.route.ROUTERS

The fakes the suites run on (a scripted backend, a small pool, an arithmetic
task) are in :mod:`moagraph.graph.testing`.
"""

from moagraph.testing.route import RouterConformance, constant_scorer, make_router

__all__ = ["RouterConformance", "constant_scorer", "make_router"]
