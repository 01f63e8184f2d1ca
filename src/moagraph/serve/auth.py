"""Optional bearer-token auth, checked before the body is even read.

Runs as a route dependency with no body parameters, so a wrong key is
rejected before validation, budget checks or any LLM call: no partial runs
on behalf of an unauthenticated client.
"""

from __future__ import annotations

import secrets

from fastapi import Request

from moagraph.serve.errors import ApiError


def check_bearer(request: Request, api_key: str | None) -> None:
    """Raise a 401 ApiError unless the request carries ``Authorization: Bearer <api_key>``."""
    if api_key is None:
        return
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(
            401,
            "missing API key: send the header `Authorization: Bearer <key>` "
            "(openai client: api_key=...)",
            type="authentication_error",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        token.strip().encode("utf-8"), api_key.encode("utf-8")
    ):
        raise ApiError(
            401,
            "incorrect API key provided; use the key the server was started with "
            "(--api-key or $MOAGRAPH_API_KEY)",
            type="authentication_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
