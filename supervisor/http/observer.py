"""The one request observer, for both ways in: every answered request counted and timed by
its route, method, model and status, and a stream timed to its first token (``Telemetry``'s
series). The relay lane's exchanges report to it directly (``relay/lane.py``); over ASGI, a
pure-ASGI middleware (``TelemetryMiddleware``: Starlette's BaseHTTPMiddleware would re-buffer
streams and hide disconnects) reports for every request, and the routes name the model they
used (``note_model``).

Labels stay bounded: a route's template (never the raw path), a known method, a model the
registry knows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supervisor.relay.stream import is_event_stream
from supervisor.telemetry.prometheus import Telemetry

UNMATCHED = "unmatched"  # requests no route took: their raw paths would be unbounded labels
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RECORD_KEY = "llama_supervisor.request"  # where the middleware puts a RequestRecord in scope


@dataclass
class RequestRecord:
    """What the routes tell the metrics about one request: the model it used, if any."""

    model: str = ""


def note_model(scope: Scope, model_id: str) -> None:
    """Label the request's metrics with ``model_id`` (a no-op outside the middleware)."""
    record = scope.get(RECORD_KEY)
    if isinstance(record, RequestRecord):
        record.model = model_id


class RequestObserver:
    """Records answered requests. ``now`` is its clock: a request's start and its first token
    are read from it, so that ``finished`` can time them."""

    def __init__(self, telemetry: Telemetry, clock: Callable[[], float] = time.perf_counter):
        self.telemetry = telemetry
        self.now = clock

    def finished(
        self,
        route: str,
        method: str,
        model: str,
        status: int,
        started: float,
        first_token: float | None,
    ) -> None:
        """A request begun at ``started`` (``now()``) was answered with ``status``; a stream's
        ``first_token`` is the time from its start to its first non-empty chunk."""
        self.telemetry.observe_request(
            route,
            method if method in METHODS else "other",
            model,
            status,
            self.now() - started,
            first_token,
        )


class TelemetryMiddleware:
    """Observes every HTTP request over ASGI, those the gateway refuses included."""

    def __init__(self, app: ASGIApp, observer: RequestObserver) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        now = self.observer.now
        started = now()
        record = RequestRecord()
        scope[RECORD_KEY] = record
        status = 500  # if the app fails before answering, the server answers this
        first_token: float | None = None
        streaming = False

        async def observed_send(message: Message) -> None:
            nonlocal status, streaming, first_token
            if message["type"] == "http.response.start":
                status = message["status"]
                streaming = is_event_stream(message.get("headers", ()))
            elif streaming and first_token is None and message.get("body"):
                first_token = now() - started
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.observer.finished(
                route, scope["method"], record.model, status, started, first_token
            )
