"""OpenAI-style error bodies, so clients raise their usual typed exceptions.

Every failure the server reports leaves as ``{"error": {message, type,
param, code}}`` with the status an OpenAI client maps to the right
exception class (400 BadRequest, 401 Authentication, 404 NotFound, 502).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError

from moagraph.serve.schemas import ErrorDetail, ErrorResponse


class ApiError(Exception):
    """An error to send to the client as an OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        detail = ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=detail).model_dump()

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _loc(loc: tuple[Any, ...]) -> str:
    """('messages', 0, 'role') -> 'messages[0].role' (how OpenAI names params)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("body",):
            continue
        else:
            # pydantic names union members ("str", "list[ContentPart]"); not a field.
            if isinstance(part, str) and ("[" in part or part in ("str", "function-after")):
                continue
            out += f".{part}" if out else str(part)
    return out


def validation_error(err: ValidationError) -> ApiError:
    """Map a request-body validation failure to one 400 naming the first bad field."""
    errors = err.errors()
    first = errors[0]
    if first["type"] == "json_invalid":
        return ApiError(400, f"request body is not valid JSON: {first['msg']}", code="invalid_json")
    param = _loc(tuple(first["loc"]))
    msgs = []
    for e in errors[:5]:
        where = _loc(tuple(e["loc"])) or "body"
        msg = str(e["msg"]).removeprefix("Value error, ")
        msgs.append(f"`{where}`: {msg}")
    return ApiError(
        400, "invalid request: " + "; ".join(msgs), param=param or None, code="invalid_value"
    )
