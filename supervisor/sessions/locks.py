"""One lock per session, so that concurrent requests on a session take turns: a chat holds
its session's lock until its answer is stored (a stream, until its relay is over), and a
delete waits for it."""

from __future__ import annotations

import asyncio
import weakref


class SessionLocks:
    """The locks of the sessions in use; a lock nobody holds or awaits is dropped."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[session_id] = lock
        return lock
