"""One error formatter per surface (``error_answer``: the status, headers and bytes the relay
lane writes as they are; ``error_response``, the same as a Starlette response), registered once
for our errors, validation errors and Starlette's own 404/405; the one answer to a client gone
before its body was read; and what the router does with a path no route takes
(``SlashRedirect``)."""

from __future__ import annotations

import json
import logging
from typing import Any, NamedTuple
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match, Router
from starlette.types import Receive, Scope, Send

from supervisor.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ShuttingDown,
    SupervisorError,
    Unauthorized,
)
from supervisor.relay.failures import CLIENT_CLOSED_REQUEST
from supervisor.relay.table import surface_of
from supervisor.relay.upstream import RawHeaders
from supervisor.surfaces import errors as surfaces

LOG = logging.getLogger(__name__)
JSON_TYPE = (b"content-type", b"application/json")


def _uses_detail_format(path: str) -> bool:
    """The /api surface (/api/…, not /api/v2/…) answers errors as {"detail": …}."""
    return path.startswith("/api/") and not path.startswith("/api/v2/") and path != "/api/v2"


class ErrorAnswer(NamedTuple):
    """An error's whole answer: what the relay lane writes as it is, and what an ASGI route
    returns as a ``Response`` (``error_response``)."""

    status: int
    headers: RawHeaders  # Retry-After where the error has one, the body's length and type
    body: bytes


def error_answer(path: str, error: SupervisorError) -> ErrorAnswer:
    """``error`` in the shape of the surface ``path`` belongs to: ``{"detail": …}`` on
    /api, Anthropic's on its routes (``relay/table.surface_of``), else OpenAI's envelope. The bytes
    and headers are Starlette's ``JSONResponse``'s, without building one."""
    content: dict[str, Any] = (
        {"detail": error.message}
        if _uses_detail_format(path)
        else surfaces.error_body(surface_of(path), error)
    )
    text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    body = text.encode()
    headers = [(b"content-length", b"%d" % len(body)), JSON_TYPE]
    if error.retry_after is not None:
        headers.insert(0, (b"retry-after", b"%d" % error.retry_after))
    return ErrorAnswer(error.status_code, headers, body)


def failed_request_answer(method: str, path: str, error: SupervisorError) -> ErrorAnswer:
    """The answer to a request that failed with one of our errors; the gateway's own or its
    children's failures (5xx) are logged."""
    if error.status_code >= 500:
        LOG.warning("%s %s -> %d: %s", method, path, error.status_code, error)
    return error_answer(path, error)


def internal_error_answer(path: str) -> ErrorAnswer:
    """A bug's answer, with no detail: the exception goes on to the server, which logs it."""
    return error_answer(path, SupervisorError("Internal error in the gateway"))


def refusal_answer(path: str, error: SupervisorError) -> ErrorAnswer:
    """The answer to a request refused on its head (``http/admission.py``) or for a body past
    the limit: with ``WWW-Authenticate`` for a missing or unknown key; closing the connection
    for a drain or a body left unread (it would have to be read, or would garble a kept-alive
    connection)."""
    status, headers, body = error_answer(path, error)
    if isinstance(error, Unauthorized):
        headers.append((b"www-authenticate", b"Bearer"))
    elif isinstance(error, ShuttingDown | PayloadTooLarge):
        headers.append((b"connection", b"close"))
    return ErrorAnswer(status, headers, body)


def as_response(answer: ErrorAnswer) -> Response:
    response = Response(answer.body, answer.status)
    response.raw_headers = list(answer.headers)
    return response


def error_response(path: str, error: SupervisorError) -> Response:
    return as_response(error_answer(path, error))


def failed_request_response(method: str, path: str, error: SupervisorError) -> Response:
    return as_response(failed_request_answer(method, path, error))


def internal_error_response(path: str) -> Response:
    return as_response(internal_error_answer(path))


def client_gone_response() -> Response:
    """The answer to a request whose client hung up before its body was whole (Starlette's
    ``ClientDisconnect``). Nobody reads it (the server drops it); it is there so that the
    metrics count the request as the relay counts a gone client (499), not as a bug's 500,
    and nothing is logged: a client may always hang up."""
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _on_supervisor_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SupervisorError)
    return failed_request_response(request.method, request.url.path, exc)


async def _on_unexpected_error(request: Request, exc: Exception) -> Response:
    return internal_error_response(request.url.path)


async def _on_client_gone(request: Request, exc: Exception) -> Response:
    return client_gone_response()


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
    return error_response(request.url.path, BadRequest(message, param=where or None))


async def _on_http_error(request: Request, exc: Exception) -> Response:
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
    # Every route that reads its body (``await request.body()``) may meet a gone client.
    app.add_exception_handler(ClientDisconnect, _on_client_gone)
    app.add_exception_handler(Exception, _on_unexpected_error)  # FastAPI's 500 handler


class SlashRedirect:
    """The router's ``default``, for a path no route takes: a 307 to the same path with its
    trailing slash toggled where that one routes (``GET /v1/models/``), else the 404.

    It stands in for Starlette's ``redirect_slashes``, whose ``Location`` is an absolute URL
    built from the client's ``Host`` header: anyone could have the gateway's answers point
    at another host. This one is relative: the path and the query string only."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] == "http" and path.rstrip("/"):
            moved = {**scope, "path": path.rstrip("/") if path.endswith("/") else path + "/"}
            if any(route.matches(moved)[0] is not Match.NONE for route in self.router.routes):
                location = _relative_location(moved["path"], scope["query_string"])
                await RedirectResponse(location)(scope, receive, send)
                return
        await self.router.not_found(scope, receive, send)


def _relative_location(path: str, query: bytes) -> str:
    location = quote(path)  # a backslash included: browsers read "/\evil" as "//evil"
    if location.startswith("//"):  # would name a host: keep it a path (a catch-all route)
        location = "/%2F" + location[2:]
    return f"{location}?{query.decode('latin-1')}" if query else location
