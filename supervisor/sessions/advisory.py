"""Turn locks shared by every gateway on one PostgreSQL database: a session-level advisory lock
keyed by the session id, held on a connection of its own from before the history is read
until the answer is stored (a stream's end), so that turns sent to different gateways go in
order.

The lock is taken on an *async* connection: a turn waiting behind another gateway's holds no
worker thread, and cancelling the wait (a client that left) cancels the query in the server
and drops the connection, so a lock granted in that very moment is never kept. If the gateway
dies, the server drops its connections and every lock they held.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from supervisor.errors import SessionStoreError
from supervisor.sessions.postgres import KEEPALIVES, connection_kwargs, reason

LOG = logging.getLogger(__name__)
Unlock = Callable[[], Awaitable[None]]


def lock_key(session_id: str) -> int:
    """The session's advisory lock key: a signed 64-bit hash of its id (a collision only makes
    two sessions take turns together)."""
    digest = hashlib.blake2b(session_id.encode(), digest_size=8, person=b"llm-turn").digest()
    return int.from_bytes(digest, "big", signed=True)


class AdvisoryLocks:
    """One pooled connection per session whose turn this gateway holds (or awaits)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        max_connections: int = 32,
        unlock_timeout_s: float = 10.0,
    ) -> None:
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            url,
            kwargs={**connection_kwargs(), "autocommit": True},
            min_size=0,
            max_size=max_connections,
            open=False,  # it needs the running loop: opened on first use
            configure=_configure,
            check=AsyncConnectionPool.check_connection,
            timeout=timeout_s,
            name="session-locks",
        )
        self._url = url
        self._unlock_timeout_s = unlock_timeout_s
        self._opening = asyncio.Lock()
        self._opened = False
        # The server was unreachable at the last try (see PostgresStore); until a first lock,
        # unknown: the first one tries a connection of its own, a quick 503 if refused.
        self._away = True

    async def acquire(self, session_id: str) -> Unlock:
        """Wait for the session's lock; the coroutine function that gives it back."""
        async with self._opening:  # the first turns may come together
            if not self._opened:
                await self._pool.open(wait=False)
                self._opened = True
        key = lock_key(session_id)
        try:
            if self._away:  # a quick 503 while the server refuses connections
                await (
                    await psycopg.AsyncConnection.connect(self._url, **connection_kwargs())
                ).close()
                self._away = False
            conn = await self._pool.getconn()
        except psycopg.Error as exc:
            self._away = isinstance(exc, psycopg.OperationalError)
            raise _store_error(session_id, exc) from exc
        try:
            await conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        except BaseException as exc:
            await self._discard(conn)
            if isinstance(exc, psycopg.Error):
                raise _store_error(session_id, exc) from exc
            raise

        async def unlock() -> None:
            # Bounded: a stuck connection must not keep the session's local lock (its next
            # turns here) or the gateway's shutdown waiting; closing it frees the lock.
            try:
                async with asyncio.timeout(self._unlock_timeout_s):
                    await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            except (psycopg.Error, TimeoutError) as exc:
                LOG.warning("session %s: unlock failed (%s); dropping its connection", session_id,
                            exc)  # fmt: skip
                await conn.close()  # the server drops the lock with the connection
            finally:
                await self._pool.putconn(conn)  # one cut short mid-query is closed by the pool

        return unlock

    async def _discard(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Close ``conn`` (the server frees whatever it held) and hand it back to be replaced."""
        try:
            await conn.close()
        finally:
            await self._pool.putconn(conn)

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # No statement_timeout here: a turn may wait as long as another gateway's answer lasts.
    for setting in KEEPALIVES:
        await conn.execute(f"SET {setting}")


def _store_error(session_id: str, exc: psycopg.Error) -> SessionStoreError:
    LOG.warning("session %s: cannot take its turn lock: %s", session_id, exc)
    return SessionStoreError(f"Session store failed to lock session {session_id}: {reason(exc)}")
