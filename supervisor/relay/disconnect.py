"""Stop a request's work the moment its client goes away.

An ASGI server tells of a gone client only through ``receive()``, so a watcher task waits on
it and cancels the request's task. This is anyio's ``CancelScope`` pattern without its
bookkeeping, which cost a relayed request about 5% of the gateway's CPU.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from starlette.types import Receive


class DisconnectWatch:
    """``with DisconnectWatch(receive) as watch:`` runs its body in the current task, which
    is cancelled if the client disconnects meanwhile. That cancellation ends at the block's
    exit, where ``watch.gone`` tells it happened; any other cancellation (a shutdown) goes on
    as usual. Only for the task that owns ``receive``, and only one block at a time."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.gone = False
        self._task: asyncio.Task[object] | None = None
        self._watcher: asyncio.Task[None] | None = None

    def __enter__(self) -> DisconnectWatch:
        self._task = asyncio.current_task()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        assert self._watcher is not None and self._task is not None
        self._watcher.cancel()
        if not self.gone:
            return False
        # Ours was the cancellation: take it back, and swallow it unless another is pending.
        return self._task.uncancel() == 0 and exc_type is asyncio.CancelledError

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        assert self._task is not None
        self.gone = True
        self._task.cancel()
