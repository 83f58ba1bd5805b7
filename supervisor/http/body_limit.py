"""The request body limit (``max_body_bytes``), for every route, the fast lane's included.

A body announced larger than the limit (``Content-Length``) is refused before a byte of it is
read. A body without a length (chunked) is counted as it arrives: the read that passes the
limit raises ``PayloadTooLarge``, which the route's error handling (FastAPI's, or the fast
lane's) answers as a 413 in the surface's format; should one escape unanswered, this layer
answers it. A body with a length within the limit is left alone: the HTTP server delivers
exactly that many bytes, so counting them would only cost time on every request.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supervisor.errors import PayloadTooLarge
from supervisor.http.error_responses import error_response


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        length = _content_length(scope)
        if length is not None and length > limit:
            await _refuse(scope, receive, send, PayloadTooLarge(limit))
            return
        if length is not None:
            await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
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
            await self.app(scope, counted_receive, watched_send)
        except PayloadTooLarge as exc:
            if started:
                raise
            await _refuse(scope, receive, send, exc)


def _content_length(scope: Scope) -> int | None:
    """The declared body length; None without one (or with one the server would refuse)."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(scope: Scope, receive: Receive, send: Send, error: PayloadTooLarge) -> None:
    response = error_response(scope["path"], error)
    # The unread body would otherwise have to be read (or would garble a kept-alive
    # connection): the client gets its answer and the connection ends.
    response.headers["Connection"] = "close"
    await response(scope, receive, send)
