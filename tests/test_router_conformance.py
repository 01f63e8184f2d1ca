"""Every registered router passes the conformance suite (moagraph.testing.route)."""

from __future__ import annotations

import pytest

from moagraph.route import router_names
from moagraph.testing.route import RouterConformance


class TestRegisteredRouters(RouterConformance):
    """Parametrised over :func:`moagraph.route.router_names`."""

    @pytest.fixture(params=router_names())
    def kind(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)
