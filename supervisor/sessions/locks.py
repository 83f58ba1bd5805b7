"""One lock per session, so that concurrent requests on a session take turns: a chat holds
its session's lock until its answer is stored (a stream, until its relay is over), and a
delete waits for it.

``Turns`` adds, when sessions live in PostgreSQL, the lock every gateway on that database
shares (``advisory.py``), taken after the local one: turns sent to two gateways go in order,
and one gateway spends one database connection per busy session, not one per waiting turn.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol

LOG = logging.getLogger(__name__)
Release = Callable[[], None]


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


class SharedLocks(Protocol):
    """Locks shared with other gateways: ``acquire`` waits for a session's (cancel it to give
    up waiting) and returns the coroutine function that releases it."""

    async def acquire(self, session_id: str) -> Callable[[], Awaitable[None]]: ...

    async def close(self) -> None: ...


class Turns:
    """A session's turn: its local lock, then its shared lock when there is one."""

    def __init__(self, shared: SharedLocks | None = None, locks: SessionLocks | None = None):
        self.locks = locks or SessionLocks()
        self._shared = shared
        self._releasing: set[asyncio.Task[None]] = set()

    async def take(self, session_id: str) -> Release:
        """Wait for the session's turn; the function that ends it (called from anywhere on the
        loop, any number of times: only the first counts). Cancelling the wait leaves nothing
        held."""
        lock = self.locks.lock(session_id)
        await lock.acquire()
        if self._shared is None:
            return _once(lock.release)
        try:
            unlock = await self._shared.acquire(session_id)
        except BaseException:
            lock.release()
            raise

        def release() -> None:
            # The shared lock goes first, then the local one, so the next local turn finds
            # it free; the caller (a stream's end, a sync callback) need not wait for that.
            task = asyncio.get_running_loop().create_task(self._release(session_id, unlock, lock))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

        return _once(release)

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        release = await self.take(session_id)
        try:
            yield
        finally:
            release()

    async def _release(
        self, session_id: str, unlock: Callable[[], Awaitable[None]], lock: asyncio.Lock
    ) -> None:
        try:
            await unlock()
        except Exception:
            LOG.exception("session %s: releasing its shared lock failed", session_id)
        finally:
            lock.release()

    async def close(self) -> None:
        """Let releases under way finish, then close the shared locks' connections."""
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)
        if self._shared is not None:
            await self._shared.close()


def _once(action: Release) -> Release:
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return run
