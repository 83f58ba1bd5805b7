"""One error formatter per surface, registered once for our errors, validation errors and
Starlette's own 404/405."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from .dialects import openai
from .errors import BadRequest, MethodNotAllowed, NotFound, SupervisorError

LOG = logging.getLogger(__name__)


def _uses_detail_format(path: str) -> bool:
    """Seed 002's surface (/api/…, not /api/v2/…) answers errors as {"detail": …}."""
    return path.startswith("/api/") and not path.startswith("/api/v2/") and path != "/api/v2"


def error_response(path: str, error: SupervisorError) -> JSONResponse:
    body: dict[str, Any] = (
        {"detail": error.message} if _uses_detail_format(path) else openai.error_body(error)
    )
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return JSONResponse(body, status_code=error.status_code, headers=headers)


def failed_request_response(method: str, path: str, error: SupervisorError) -> JSONResponse:
    """The answer to a request that failed with one of our errors; the gateway's own or its
    children's failures (5xx) are logged."""
    if error.status_code >= 500:
        LOG.warning("%s %s -> %d: %s", method, path, error.status_code, error)
    return error_response(path, error)


def internal_error_response(path: str) -> JSONResponse:
    """A bug's answer, with no detail: the exception goes on to the server, which logs it."""
    return error_response(path, SupervisorError("Internal error in the gateway"))


async def _on_supervisor_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SupervisorError)
    return failed_request_response(request.method, request.url.path, exc)


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return internal_error_response(request.url.path)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
    return error_response(request.url.path, BadRequest(message, param=where or None))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error: SupervisorError
    if exc.status_code == 404:
        error = NotFound(f"Not found: {request.method} {request.url.path}")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"Method {request.method} not allowed on {request.url.path}")
    else:
        error = SupervisorError(str(exc.detail))
        error.status_code = exc.status_code
    response = error_response(request.url.path, error)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SupervisorError, _on_supervisor_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected_error)  # FastAPI's 500 handler
