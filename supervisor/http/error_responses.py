"""One error formatter per surface, registered once for our errors, validation errors and
Starlette's own 404/405; the one answer to a client gone before its body was read; and what
the router does with a path no route takes (``SlashRedirect``)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Match, Router
from starlette.types import Receive, Scope, Send

from supervisor.errors import BadRequest, MethodNotAllowed, NotFound, SupervisorError
from supervisor.relay.asgi import CLIENT_CLOSED_REQUEST
from supervisor.relay.table import surface_of
from supervisor.surfaces import errors as surfaces

LOG = logging.getLogger(__name__)


def _uses_detail_format(path: str) -> bool:
    """Seed 002's surface (/api/…, not /api/v2/…) answers errors as {"detail": …}."""
    return path.startswith("/api/") and not path.startswith("/api/v2/") and path != "/api/v2"


def error_response(path: str, error: SupervisorError) -> JSONResponse:
    """``error`` in the shape of the surface ``path`` belongs to: ``{"detail": …}`` on
    /api, Anthropic's on its routes (``relays.surface_of``), else OpenAI's envelope."""
    body: dict[str, Any] = (
        {"detail": error.message}
        if _uses_detail_format(path)
        else surfaces.error_body(surface_of(path), error)
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


def client_gone_response() -> Response:
    """The answer to a request whose client hung up before its body was whole (Starlette's
    ``ClientDisconnect``). Nobody reads it (the server drops it); it is there so that the
    metrics count the request as the relay counts a gone client (499), not as a bug's 500,
    and nothing is logged: a client may always hang up."""
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _on_supervisor_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SupervisorError)
    return failed_request_response(request.method, request.url.path, exc)


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return internal_error_response(request.url.path)


async def _on_client_gone(request: Request, exc: Exception) -> Response:
    return client_gone_response()


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
