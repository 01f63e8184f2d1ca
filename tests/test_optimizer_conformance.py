"""Every registered optimiser passes the conformance suite (moagraph.testing.search)."""

from __future__ import annotations

import pytest

from moagraph.search import OPTIMIZERS
from moagraph.testing.search import OptimizerConformance


class TestRegisteredOptimizers(OptimizerConformance):
    """Parametrised over :data:`moagraph.search.OPTIMIZERS`."""

    @pytest.fixture(params=list(OPTIMIZERS))
    def name(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)
