"""The one request observer, for both ways in: every answered request counted and timed by
its route, method, model and status, and a stream timed to its first token (``Telemetry``'s
series). The relay lane's exchanges report to it directly (``relay/lane.py``); over ASGI, a
pure-ASGI middleware (``TelemetryMiddleware``: Starlette's BaseHTTPMiddleware would re-buffer
streams and hide disconnects) reports for every request, and the routes name the model they
used (``note_model``) and the token meter of their answer (``request_record``). Each request
also goes to the activity log (``telemetry/activity.py``), but reads (GET, HEAD, OPTIONS).

Labels stay bounded: a route's template (never the raw path), a known method, a model the
registry knows.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supervisor.relay.stream import is_event_stream
from supervisor.telemetry.activity import UNRECORDED, RequestRecord
from supervisor.telemetry.activity_text import CAPTURE_BYTES
from supervisor.telemetry.prometheus import Telemetry
from supervisor.telemetry.tokens import TokenMeter

UNMATCHED = "unmatched"  # requests no route took: their raw paths would be unbounded labels
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RECORD_KEY = "llama_supervisor.request"  # where the middleware puts a RequestRecord in scope


def note_model(scope: Scope, model_id: str) -> None:
    """Label the request's metrics with ``model_id`` (a no-op outside the middleware)."""
    record = scope.get(RECORD_KEY)
    if isinstance(record, RequestRecord):
        record.model = model_id


def request_record(scope: Scope) -> RequestRecord | None:
    """The request's record, where the routes note what its answer's token meter counted."""
    record = scope.get(RECORD_KEY)
    return record if isinstance(record, RequestRecord) else None


class RequestObserver:
    """Records answered requests. ``now`` is its clock: a request's start and its first token
    are read from it, so that ``finished`` can time them."""

    def __init__(self, telemetry: Telemetry, clock: Callable[[], float] = time.perf_counter):
        self.telemetry = telemetry
        self.activity = telemetry.activity
        self.now = clock

    def finished(
        self,
        route: str,
        method: str,
        model: str,
        status: int,
        started: float,
        first_token: float | None,
        stream: bool = False,
        meter: TokenMeter | None = None,
        body: bytes | bytearray | None = None,
    ) -> None:
        """A request begun at ``started`` (``now()``) was answered with ``status``; a stream's
        ``first_token`` is the time from its start to its first non-empty chunk. ``meter``
        counted its answer's tokens, if any; ``body`` is its body, read only with
        ``activity_text`` on."""
        seconds = self.now() - started
        method = method if method in METHODS else "other"
        self.telemetry.observe_request(route, method, model, status, seconds, first_token)
        if method not in UNRECORDED:
            self.activity.record(
                method, route, model, status, seconds, first_token, stream, meter, body
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
        if self.observer.activity.keep_text and scope["method"] not in UNRECORDED:
            receive = _kept_body(receive, record)
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
                route, scope["method"], record.model, status, started, first_token,
                streaming, record.meter, record.body,
            )  # fmt: skip


def _kept_body(receive: Receive, record: RequestRecord) -> Receive:
    """``receive`` that also keeps the request's body (up to ``CAPTURE_BYTES``) on ``record``,
    for the prompt text of its activity entry (only with ``activity_text`` on)."""
    record.body = kept = bytearray()

    async def keeping() -> Message:
        message = await receive()
        if message["type"] == "http.request" and len(kept) < CAPTURE_BYTES:
            kept.extend(message.get("body", b""))
        return message

    return keeping
