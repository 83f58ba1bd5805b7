"""The body limit (``max_body_bytes``) for a body without a declared length (chunked), on every
route, the fast lane's included.

A body announced larger than the limit never gets here: admission refuses it before a byte of
it is read (``http/admission.py``); one announced within it is left alone, as the HTTP server
delivers exactly that many bytes. A body without a length is counted as it arrives: the read
that passes the limit raises ``PayloadTooLarge``, which the route's error handling (FastAPI's,
or the fast lane's) answers as a 413 in the surface's format; should one escape unanswered,
this answers it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supervisor.errors import PayloadTooLarge
from supervisor.http.error_responses import as_response, refusal_answer


async def count_body(app: ASGIApp, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    """Run ``app`` on a request whose body is counted against ``limit`` as it is read."""
    received = 0
    started = False

    async def counted_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(limit)
        return message

    async def watched_send(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, counted_receive, watched_send)
    except PayloadTooLarge as exc:
        if started:
            raise
        await as_response(refusal_answer(scope["path"], exc))(scope, receive, send)
