"""Server-sent events that follow a live source: what it holds already, then each new item as
it comes, with a keep-alive comment when nothing does, until the client goes or the gateway
drains. Shared by a model's log follow (``api_v2/logs.py``) and the activity follow
(``api_v2/activity.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from types import MappingProxyType
from typing import TypeVar

KEEPALIVE_S = 10.0  # a comment this often keeps proxies from timing the stream out
SSE_HEADERS = MappingProxyType({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
KEEPALIVE = b": keepalive\n\n"

Item = TypeVar("Item")


async def follow(
    first: Iterable[Item],
    queue: asyncio.Queue[Item],
    stopping: asyncio.Event,
    encode: Callable[[Item], bytes],
    keepalive_s: float = KEEPALIVE_S,
) -> AsyncIterator[bytes]:
    """``first`` encoded, then each item put on ``queue``, until ``stopping`` is set. The
    caller subscribes ``queue`` before it reads ``first``, so that no item falls between the
    two. A client that goes leaves no task waiting on the queue."""
    for item in first:
        yield encode(item)
    stop = asyncio.ensure_future(stopping.wait())
    get: asyncio.Future[Item] | None = None
    try:
        while not stop.done():
            get = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(
                {get, stop}, timeout=keepalive_s, return_when=asyncio.FIRST_COMPLETED
            )
            if get in done:
                yield encode(get.result())
                continue
            get.cancel()
            if not stop.done():
                yield KEEPALIVE
    finally:
        stop.cancel()
        if get is not None and not get.done():
            get.cancel()
