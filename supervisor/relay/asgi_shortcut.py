"""The passthrough routes' short way in over ASGI.

Served by ``llama-supervisor serve``, most relayed POSTs never reach ASGI: the relay lane
(``relay/lane.py``) answers them straight off the sockets. The requests it does not admit
(``RelayLane.admit``), and every request of an ASGI client (the tests' in-process client, an
app that mounts the gateway), come this way.

FastAPI's middleware (error, exception telemetry, body limit), routing (a scan of every
route) and dependency solving cost about 0.3 ms of CPU per request here: GET /health took
0.50 ms of gateway CPU against 0.18 ms for a bare ASGI app under the same uvicorn. The routes
that only relay a request to a child (``relay/table.RELAYS``) need none of it, so this layer,
innermost of the gateway's own (the guard and telemetry still see every request) and outside
FastAPI (``app.GatewayApp``), sends them straight to the relay. FastAPI still declares those
routes (``surfaces/relayed.py``), for the OpenAPI document and every other method.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from supervisor.errors import SupervisorError
from supervisor.http.error_responses import (
    client_gone_response,
    failed_request_response,
    internal_error_response,
)
from supervisor.relay.plan import relay
from supervisor.relay.table import find_relay


class FastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = find_relay(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # what the metrics label the request with (its ``path``)
        try:
            response = await relay(Request(scope, receive), route)
        except SupervisorError as exc:
            response = failed_request_response(route.method, scope["path"], exc)
        except ClientDisconnect:  # gone mid-upload: as FastAPI's handler for it answers
            response = client_gone_response()
        except Exception:  # a bug: answered as FastAPI's error middleware would, then logged
            await internal_error_response(scope["path"])(scope, receive, send)
            raise
        await response(scope, receive, send)
