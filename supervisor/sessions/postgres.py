"""Sessions in PostgreSQL (``sessions_url``), so that several gateways share them.

The same promises as the SQLite store (``store.py``): each write is one transaction that has
committed (``synchronous_commit`` as the server has it, ``on`` by default) when the call
returns, and the gateway only answers after that; every database failure, an unreachable
server included, is a ``SessionStoreError`` (503, Retry-After). A server that is away when the
gateway starts does not stop it: the schema is created on the first call that reaches it, and
calls answer 503 until then.

The schema is versioned in ``sessions_schema_version`` and brought up to date at start (and on
the first call after a failed start) under a transaction-scoped advisory lock, so that
gateways starting together migrate it once. A database newer than this gateway is refused
rather than written in a shape it does not know.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from supervisor.errors import BadRequest, SessionNotFound, SessionStoreError
from supervisor.sessions.store import (
    Message,
    Session,
    SessionSummary,
    _check_roles,
    is_valid_session_id,
    new_session_id,
)

LOG = logging.getLogger(__name__)

# Each step brings the schema from version N-1 to N, in order; never edit a released step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE sessions (id text PRIMARY KEY, model text NOT NULL,"
        " created double precision NOT NULL, updated double precision NOT NULL)",
        "CREATE TABLE session_messages ("
        " session_id text NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
        " seq integer NOT NULL, role text NOT NULL, content text NOT NULL,"
        " created double precision NOT NULL, PRIMARY KEY (session_id, seq))",
    ),
    ("CREATE INDEX sessions_by_updated ON sessions (updated DESC, created DESC)",),
)
SCHEMA_VERSION = len(MIGRATIONS)
# (classid, objid) of the two-key advisory lock held while migrating; the one-key (bigint)
# locks of sessions' turns (advisory.py) live in another part of the lock space.
SCHEMA_LOCK = (0x6C6C, 1)
CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 30_000
# A gateway whose host dies closes none of its connections: the server keeps their turn locks
# until TCP keepalive finds the peer gone, two hours by the system's defaults, and the other
# gateways' turns on those sessions wait as long. Every connection asks for about a minute.
KEEPALIVES = (
    "tcp_keepalives_idle = 30",
    "tcp_keepalives_interval = 10",
    "tcp_keepalives_count = 3",
)


def connection_kwargs() -> dict[str, Any]:
    """What every connection of the gateway's gets beside the URL."""
    return {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": "llama-supervisor",
        # A database host that vanished mid-query (or mid-wait for a turn): an error in about
        # a minute rather than a worker thread, or a turn, held for good.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }


def migrate(conn: psycopg.Connection[Any], target: int = SCHEMA_VERSION) -> int:
    """Bring the schema up to version ``target`` in one transaction; the version it had."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", SCHEMA_LOCK)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS sessions_schema_version (version integer NOT NULL)"
        )
        row = conn.execute("SELECT version FROM sessions_schema_version").fetchone()
        current = 0 if row is None else int(row[0])
        if current > SCHEMA_VERSION:
            raise SessionStoreError(
                f"Session store schema is version {current}, newer than this gateway's "
                f"{SCHEMA_VERSION}: upgrade the gateway"
            )
        for version in range(current + 1, target + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO sessions_schema_version VALUES (%s)", (max(current, target),))
        elif target > current:
            conn.execute("UPDATE sessions_schema_version SET version = %s", (target,))
    return current


def _configure(conn: psycopg.Connection[Any]) -> None:
    # A server that stops answering must not hold a worker thread (and a client) forever.
    conn.autocommit = True
    conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    for setting in KEEPALIVES:
        conn.execute(f"SET {setting}")
    conn.autocommit = False


def reason(exc: psycopg.Error) -> str:
    """What a client may read of a database failure: no host, no user, no URL."""
    if isinstance(exc, PoolTimeout):  # no connection could be made, or all were in use
        return "the database is unreachable, or all this gateway's connections to it are busy"
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return "the database is unreachable"
    return exc.diag.message_primary or type(exc).__name__


class PostgresStore:
    """Sessions in a PostgreSQL database, through a small pool of blocking connections.

    Calls may come from any worker thread (the gateway uses ``anyio.to_thread``). A call waits
    at most ``timeout_s`` for a connection. Once one call found the server unreachable, the
    next ones first try a connection of their own, which a server that is away refuses at
    once: their 503s are quick and hold no worker thread for ``timeout_s``.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
        max_connections: int = 8,
    ) -> None:
        self._url = url
        self._clock = clock
        self._migrated = False
        self._away = False  # the last call found the server unreachable
        self._migrating = threading.Lock()
        self._pool = ConnectionPool(
            url,
            kwargs=connection_kwargs(),
            min_size=1,
            max_size=max_connections,
            open=False,
            configure=_configure,
            check=ConnectionPool.check_connection,  # a connection the server dropped is replaced
            timeout=timeout_s,
            name="sessions",
        )
        self._pool.open(wait=False)
        try:
            self._ready()
        except SessionStoreError as exc:
            LOG.error("%s; sessions answer 503 until the database can be reached", exc.message)

    def _ready(self) -> None:
        """Create or migrate the schema, once; until that works, every call raises."""
        if self._migrated:
            return
        with self._migrating:
            if self._migrated:
                return
            try:
                with psycopg.connect(self._url, **connection_kwargs()) as conn:
                    _configure(conn)  # bounded: another gateway may hold the lock, and be stuck
                    before = migrate(conn)
            except psycopg.Error as exc:
                LOG.warning("session store: cannot migrate the schema: %s", exc)
                raise SessionStoreError(f"Cannot open session store: {reason(exc)}") from exc
            if before != SCHEMA_VERSION:
                LOG.info("session store schema: version %d -> %d", before, SCHEMA_VERSION)
            self._migrated = True

    @contextmanager
    def _transaction(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a pooled connection: committed at the block's end, rolled back
        on any error; database errors become ``SessionStoreError``."""
        self._ready()
        if self._away:
            self._probe()
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            self._away = isinstance(exc, psycopg.OperationalError)
            LOG.warning("session store failed to %s: %s", action, exc)
            raise SessionStoreError(f"Session store failed to {action}: {reason(exc)}") from exc

    def _probe(self) -> None:
        """After an outage: a 503 at once while the server refuses connections."""
        try:
            psycopg.connect(self._url, **connection_kwargs()).close()
        except psycopg.Error as exc:
            raise SessionStoreError(f"Session store is away: {reason(exc)}") from exc
        self._away = False

    def create(
        self,
        model: str,
        session_id: str | None = None,
        messages: Sequence[tuple[str, str]] = (),
    ) -> str:
        sid = new_session_id(session_id, messages)
        _check_text(messages)
        now = self._clock()
        with self._transaction("create a session") as conn:
            cur = conn.execute(
                "INSERT INTO sessions (id, model, created, updated) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (sid, model, now, now),
            )
            if cur.rowcount == 0:
                raise BadRequest(f"Session already exists: {sid}", param="session_id")
            _insert_messages(conn, sid, 0, messages, now)
        return sid

    def append(self, session_id: str, messages: Sequence[tuple[str, str]]) -> None:
        if not is_valid_session_id(session_id):
            raise SessionNotFound(session_id)
        _check_roles(messages)
        _check_text(messages)
        now = self._clock()
        with self._transaction(f"append to session {session_id}") as conn:
            # The row lock this UPDATE takes makes concurrent appends to one session queue.
            cur = conn.execute("UPDATE sessions SET updated = %s WHERE id = %s", (now, session_id))
            if cur.rowcount == 0:
                raise SessionNotFound(session_id)
            row = conn.execute(
                "SELECT COALESCE(MAX(seq), -1) + 1 FROM session_messages WHERE session_id = %s",
                (session_id,),
            ).fetchone()
            assert row is not None
            _insert_messages(conn, session_id, int(row[0]), messages, now)

    def get(self, session_id: str) -> Session:
        if not is_valid_session_id(session_id):
            raise SessionNotFound(session_id)
        with self._transaction(f"read session {session_id}") as conn:
            # One snapshot for both SELECTs, as the SQLite store's BEGIN gives.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = conn.execute(
                "SELECT model, created, updated FROM sessions WHERE id = %s", (session_id,)
            ).fetchone()
            if row is None:
                raise SessionNotFound(session_id)
            rows = conn.execute(
                "SELECT role, content, created FROM session_messages WHERE session_id = %s"
                " ORDER BY seq",
                (session_id,),
            ).fetchall()
        messages = tuple(Message(role, content, created) for role, content, created in rows)
        return Session(session_id, row[0], row[1], row[2], messages)

    def list(self) -> builtins.list[SessionSummary]:
        with self._transaction("list sessions") as conn:
            rows = conn.execute(
                "SELECT s.id, s.model, s.created, s.updated, COUNT(m.seq) FROM sessions s"
                " LEFT JOIN session_messages m ON m.session_id = s.id GROUP BY s.id"
                " ORDER BY s.updated DESC, s.created DESC, s.id"
            ).fetchall()
        return [SessionSummary(sid, model, created, updated, int(count))
                for sid, model, created, updated, count in rows]  # fmt: skip

    def delete(self, session_id: str) -> bool:
        if not is_valid_session_id(session_id):
            return False
        with self._transaction(f"delete session {session_id}") as conn:
            cur = conn.execute("DELETE FROM sessions WHERE id = %s", (session_id,))
        return cur.rowcount > 0

    def close(self) -> None:
        """Close the pool; later calls raise SessionStoreError. Safe to call twice."""
        self._pool.close()


def _check_text(messages: Sequence[tuple[str, str]]) -> None:
    # PostgreSQL's text cannot hold NUL; SQLite's can. Refused up front, as the client's fault.
    if any("\x00" in content for _, content in messages):
        raise BadRequest("Message content may not contain NUL characters", param="messages")


def _insert_messages(
    conn: psycopg.Connection[Any],
    session_id: str,
    first_seq: int,
    messages: Sequence[tuple[str, str]],
    now: float,
) -> None:
    if not messages:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO session_messages (session_id, seq, role, content, created)"
            " VALUES (%s, %s, %s, %s, %s)",
            [
                (session_id, first_seq + i, role, content, now)
                for i, (role, content) in enumerate(messages)
            ],
        )
