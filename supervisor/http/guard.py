"""The door every HTTP request passes: refused while the gateway drains, then checked for an
API key, then counted in flight until its response (a whole stream) is sent.

A pure ASGI middleware: Starlette's BaseHTTPMiddleware would buffer the app in a task of its
own, which breaks stream passthrough and client-disconnect handling.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from supervisor.errors import ShuttingDown, SupervisorError, Unauthorized
from supervisor.http.auth import KeyRing
from supervisor.http.drain import Drain
from supervisor.http.error_responses import error_response


class GatewayGuard:
    def __init__(self, app: ASGIApp, drain: Drain, keys: Callable[[], KeyRing]) -> None:
        self.app = app
        self.drain = drain
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if self.drain.draining:
            await self._refuse(scope, receive, send, ShuttingDown("The gateway is shutting down"))
            return
        keys = self.keys()
        if not keys.open:  # an open gateway (no keys) reads no headers
            try:
                keys.check(scope["method"], path, Headers(scope=scope))
            except SupervisorError as exc:
                await self._refuse(scope, receive, send, exc)
                return
        self.drain.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.leave()

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, error: SupervisorError) -> None:
        response = error_response(scope["path"], error)
        if isinstance(error, Unauthorized):
            response.headers["WWW-Authenticate"] = "Bearer"
        if isinstance(error, ShuttingDown):
            response.headers["Connection"] = "close"
        await response(scope, receive, send)
