"""OpenAI-compatible server: serve graphs and routers as chat models.

``create_app(runtime, {"math": graph, "auto": router}, config=ServeConfig(...))``
builds the FastAPI app; ``moagraph serve`` runs it with uvicorn.
"""

from moagraph.serve.config import ServeConfig, ServeConfigError
from moagraph.serve.errors import ApiError

__all__ = ["ApiError", "ServeConfig", "ServeConfigError", "create_app"]


def __getattr__(name: str):  # lazy: importing the package must not pull in FastAPI
    if name == "create_app":
        from moagraph.serve.app import create_app

        return create_app
    raise AttributeError(name)
