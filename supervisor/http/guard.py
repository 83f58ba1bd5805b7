"""The door every request over ASGI passes: admitted or refused on its head
(``http/admission.py``, the relay lane's judge too), then counted in flight until its response
(a whole stream) is sent; a body without a declared length is counted against the limit as it
is read (``http/body_limit.py``).

A pure ASGI middleware: Starlette's BaseHTTPMiddleware would buffer the app in a task of its
own, which breaks stream passthrough and client-disconnect handling.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from supervisor.http.admission import Admission, declared_length
from supervisor.http.body_limit import count_body
from supervisor.http.error_responses import as_response, refusal_answer


class GatewayGuard:
    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        length = declared_length(headers)
        admission = self.admission
        error = admission.refusal(scope["method"], scope["path"], headers, length)
        if error is not None:
            await as_response(refusal_answer(scope["path"], error))(scope, receive, send)
            return
        drain = admission.drain
        drain.enter()
        try:
            if length is None:
                await count_body(self.app, scope, receive, send, admission.body_limit)
            else:  # the server delivers exactly that many bytes: nothing to count
                await self.app(scope, receive, send)
        finally:
            drain.leave()
