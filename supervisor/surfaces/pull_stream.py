"""A pull's events as server-sent events, for both routes that start one
(``POST /api/v2/models/pull``, ``POST /v1/import`` with a URL and ``"stream": true``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import StreamingResponse

from supervisor.http.drain import Drain
from supervisor.models.pulls.progress import Pull, PullEvent
from supervisor.surfaces.follow import KEEPALIVE, KEEPALIVE_S, SSE_HEADERS

SHUTTING_DOWN = "the gateway is shutting down: the partial file is kept, and pulling the same "
SHUTTING_DOWN += "URL again resumes it"


def pull_response(request: Request, pull: Pull) -> StreamingResponse:
    """The pull's events until it ends. A client that goes stops reading, not the pull; a
    gateway that drains ends the stream at once (a pull may take hours: it would hold the
    shutdown for its whole grace), and stops the pull when it closes."""
    drain: Drain = request.app.state.drain
    events = _events(pull, drain.stopping)
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


def sse(event: PullEvent) -> bytes:
    """``event: NAME`` then ``data: JSON``."""
    return f"event: {event.name}\ndata: {json.dumps(event.data)}\n\n".encode()


async def _events(pull: Pull, stopping: asyncio.Event) -> AsyncIterator[bytes]:
    follower = pull.follow(KEEPALIVE_S)
    stop = asyncio.ensure_future(stopping.wait())
    step: asyncio.Future[PullEvent | None] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(follower))
            await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                error = {"type": "cancelled", "message": SHUTTING_DOWN}
                yield sse(PullEvent("error", {"id": pull.id, "file": pull.file, "error": error}))
                return
            try:
                event = step.result()
            except StopAsyncIteration:
                return
            yield KEEPALIVE if event is None else sse(event)
    finally:
        stop.cancel()
        if step is not None and not step.done():  # the follower must rest before it closes
            step.cancel()
            await asyncio.wait({step})
        await follower.aclose()
