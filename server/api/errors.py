"""The one mapping from domain errors to HTTP statuses, OpenAI error bodies and ws close codes.

What it is: `WIRE`, the table that gives each `server.errors` exception its HTTP status, OpenAI
error `type` and websocket close code; the OpenAI error envelope `{"error": {"message", "type",
"param", "code"}}`; and `install_error_handlers`, which the app factory calls once. What it is
not: validation rules (those live in `schemas.py` and `params.py`) or the exceptions themselves
(`server/errors.py`, which the engine and the store raise without knowing about HTTP).

Invariant: every error a client sees, REST or websocket, comes from this table; bad input is a
4xx with a message, and only a bug in the server is a 500.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.api.schemas import ErrorBody
from server.errors import (
    InvalidRequest,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    ServerError,
    StorageError,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger(__name__)

# Websocket close codes (RFC 6455 §7.4.1).
WS_NORMAL = 1000
WS_POLICY = 1008  # authentication
WS_INVALID = 1007  # a message that is not a valid request
WS_TOO_BIG = 1009
WS_INTERNAL = 1011
WS_RESTART = 1012  # "Service Restart": the job stopped with the server and resumes
WS_TRY_AGAIN = 1013  # "Try Again Later": overloaded or not ready


class Wire(NamedTuple):
    """How one kind of error travels: HTTP status, OpenAI error type, websocket close code."""

    status: int
    type: str
    ws_close: int


WIRE: dict[type[ServerError], Wire] = {
    InvalidRequest: Wire(400, "invalid_request_error", WS_INVALID),
    Unauthorized: Wire(401, "authentication_error", WS_POLICY),
    NotFound: Wire(404, "invalid_request_error", WS_INVALID),
    NotReady: Wire(409, "invalid_request_error", WS_INVALID),
    PayloadTooLarge: Wire(413, "invalid_request_error", WS_TOO_BIG),
    Overloaded: Wire(429, "rate_limit_error", WS_TRY_AGAIN),
    Unavailable: Wire(503, "server_error", WS_TRY_AGAIN),
    StorageError: Wire(503, "server_error", WS_TRY_AGAIN),
    ServerError: Wire(500, "server_error", WS_INTERNAL),
}


def wire(exc: ServerError) -> Wire:
    """The wire form of an error: its own class's entry, else its nearest base's."""
    return next(WIRE[kind] for kind in type(exc).__mro__ if kind in WIRE)


def error_body(message: str, type: str, code: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(exc: ServerError) -> JSONResponse:
    status, kind, _ = wire(exc)
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = error_body(exc.message, kind, exc.code, exc.param)
    return JSONResponse(body, status_code=status, headers=headers)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for error statuses, all with the OpenAI error body."""
    return {status: {"model": ErrorBody} for status in statuses}


class HasErrors(Protocol):
    def errors(self) -> Any: ...


def validation_message(exc: HasErrors) -> tuple[str, str | None]:
    """First validation error as (message, param); the body/query/path prefix is dropped."""
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid value"))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return (f"{param}: {message}{more}" if param else message + more), param


async def _on_server_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServerError)
    return error_response(exc)


FORM_ROUTES = {("POST", "/v1/videos")}  # bodies are multipart/form-data (an image upload)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = validation_message(exc)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if (request.method, request.url.path) in FORM_ROUTES and kind != "multipart/form-data":
        message = (
            f"send this request as multipart/form-data (the image in `input_reference`), "
            f"not {kind or 'a body without a content type'}; {message}"
        )
    return error_response(InvalidRequest(message, param=param))


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, ServerError):  # raised where only an HTTPException passes
        return error_response(exc.__cause__)
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
    code = codes.get(exc.status_code, f"http_{exc.status_code}")
    body = error_body(str(exc.detail), kind, code)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = error_body("internal server error", "server_error", "internal_error")
    return JSONResponse(body, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to the OpenAI error envelope; called once by the app factory."""
    app.add_exception_handler(ServerError, _on_server_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
