"""Every error the gateway answers, OpenAI-shaped and mapped in one place.

Clients of OpenAI's API (the ``openai`` SDK, LangChain, LiteLLM) read ``{"error": {"message",
"type", "code", "param"}}`` and pick an exception class by status (400 BadRequestError, 401
AuthenticationError, 404 NotFoundError, 429 RateLimitError, 5xx InternalServerError).
:class:`GatewayError` carries the status and body; :func:`install_error_handlers` makes FastAPI
answer it, request-validation errors, unknown routes and any unexpected exception in that shape.
"""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """An HTTP error with an OpenAI-shaped body; ``headers`` go on the response (``Retry-After``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, message, code=code, param=param)


def unauthorized(message: str) -> GatewayError:
    return GatewayError(401, message, type="authentication_error", code="invalid_api_key")


def not_found(message: str, *, code: str = "model_not_found") -> GatewayError:
    return GatewayError(404, message, code=code)


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"the request body is larger than {limit} bytes; send less", code="request_too_large"
    )


def rate_limited(retry_after_s: float) -> GatewayError:
    seconds = max(1, math.ceil(retry_after_s - 1e-9))
    return GatewayError(
        429,
        f"rate limit reached for this API key; retry after {seconds} s",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(seconds)},
    )


def overloaded(in_flight: int, queued: int) -> GatewayError:
    return GatewayError(
        503,
        f"the gateway is at capacity ({in_flight} requests running, {queued} waiting); retry later",
        type="server_error",
        code="overloaded",
        headers={"Retry-After": "1"},
    )


def deadline_exceeded(seconds: float) -> GatewayError:
    return GatewayError(
        504, f"no answer within the {seconds:g} s deadline", type="server_error", code="timeout"
    )


def upstream_failed(failures: list[str]) -> GatewayError:
    return GatewayError(
        502, "every backend failed: " + "; ".join(failures), type="server_error", code="upstream_failed"
    )


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    parts, first_param = [], None
    for problem in errors:
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body")
        first_param = first_param or where or None
        parts.append(f"{where or '(body)'}: {problem.get('msg')}")
    return "invalid request: " + "; ".join(parts), first_param


def install_error_handlers(app: Any) -> None:
    """Answer every error of ``app`` (a FastAPI app) with an OpenAI-shaped body."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def respond(error: GatewayError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(GatewayError)
    async def _gateway(request: Any, exc: GatewayError) -> JSONResponse:
        return respond(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Any, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(list(exc.errors()))
        return respond(bad_request(message, param=param))

    @app.exception_handler(HTTPException)
    async def _http(request: Any, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return respond(GatewayError(exc.status_code, str(exc.detail), code=code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Any, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s", getattr(request, "url", "?"))
        return respond(GatewayError(500, f"internal error: {type(exc).__name__}", type="server_error"))
