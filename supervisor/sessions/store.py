"""Server-side conversation sessions for ``POST /api/chat``, kept in SQLite.

Sessions must survive restarts and ``kill -9``: the database runs in WAL mode with
``synchronous=FULL``, so a write has reached the disk when its ``COMMIT`` returns, and the
gateway only answers after that. Each write is one transaction, so a failure leaves nothing
half-written. Every SQLite or filesystem failure surfaces as ``SessionStoreError``.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from supervisor.errors import SESSION_ID, BadRequest, SessionNotFound, SessionStoreError

LOG = logging.getLogger(__name__)
ROLES = frozenset({"system", "user", "assistant"})
_SCHEMA_VERSION = 1
_BUSY_TIMEOUT_MS = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, model TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, seq INTEGER NOT NULL,
    role TEXT NOT NULL, content TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (session_id, seq));
CREATE INDEX IF NOT EXISTS sessions_by_updated ON sessions(updated);
"""


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str
    created: float  # epoch seconds


@dataclass(frozen=True)
class Session:
    id: str
    model: str
    created: float
    updated: float
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class SessionSummary:
    id: str
    model: str
    created: float
    updated: float
    message_count: int


def _configure(conn: sqlite3.Connection, read_only: bool) -> None:
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    if not read_only:
        conn.execute("PRAGMA journal_mode = WAL")
        # user_version marks the schema so a later release can tell what it must migrate.
        conn.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = {_SCHEMA_VERSION}; COMMIT;")


def is_valid_session_id(session_id: str) -> bool:
    """Whether ``session_id`` is 1..128 characters of ``[A-Za-z0-9_-]``."""
    return SESSION_ID.fullmatch(session_id) is not None


class SessionStore:
    """Sessions in one SQLite file, through one connection guarded by a lock.

    Calls may come from any worker thread (the gateway uses ``anyio.to_thread``); the lock
    makes them take turns. ``read_only`` opens the file with ``mode=ro`` and creates nothing.
    """

    def __init__(
        self,
        path: Path,
        *,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
        open_later: bool = False,
    ) -> None:
        """Open the database at ``path``. With ``open_later``, a failure to open it (a
        read-only or full disk, a bad data dir) is logged instead of raised, and every call
        tries again, raising ``SessionStoreError`` until it works: the gateway serves its
        other routes meanwhile."""
        self.path = path
        self._read_only = read_only
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = self._open()
        except SessionStoreError as exc:
            if not open_later:
                raise
            LOG.error("%s (%s); sessions answer 503 until it can be opened", exc.message, path)

    def _open(self) -> sqlite3.Connection:
        path, read_only = self.path, self._read_only
        conn: sqlite3.Connection | None = None
        try:
            if read_only:
                target, uri = path.resolve().as_uri() + "?mode=ro", True
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                target, uri = str(path), False
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so each call is exactly
            # one transaction rather than whatever the sqlite3 module would open implicitly.
            conn = sqlite3.connect(target, uri=uri, check_same_thread=False, isolation_level=None)
            _configure(conn, read_only)
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            # The reason without the path: this message can reach clients in a 503.
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise SessionStoreError(f"Cannot open session store: {reason}") from exc
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
            LOG.info("session store %s opened", self.path)
        return self._conn

    @contextmanager
    def _transaction(self, action: str, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock; rolled back on any error, sqlite errors mapped.

        Writes take the write lock up front (``BEGIN IMMEDIATE``) so a busy database fails
        before anything is done; reads use ``BEGIN`` so their several SELECTs see one snapshot.
        """
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise SessionStoreError(f"Session store failed to {action}: {exc}") from exc
                raise

    def _rollback(self) -> None:
        # Also after a failed COMMIT (disk full), which can leave the transaction open: close
        # it so the connection stays usable for reads. Nothing more to do if this fails too.
        try:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def create(
        self,
        model: str,
        session_id: str | None = None,
        messages: Sequence[tuple[str, str]] = (),
    ) -> str:
        """Create a session holding ``messages`` (``(role, content)`` pairs) and return its id
        (a fresh uuid4 when none is given); one transaction, so it exists only with all of
        them."""
        sid = new_session_id(session_id, messages)
        now = self._clock()
        with self._transaction("create a session", write=True) as conn:
            if conn.execute("SELECT 1 FROM sessions WHERE id = ?", (sid,)).fetchone():
                raise BadRequest(f"Session already exists: {sid}", param="session_id")
            conn.execute(
                "INSERT INTO sessions (id, model, created, updated) VALUES (?, ?, ?, ?)",
                (sid, model, now, now),
            )
            _insert_messages(conn, sid, 0, messages, now)
        return sid

    def append(self, session_id: str, messages: Sequence[tuple[str, str]]) -> None:
        """Append ``(role, content)`` pairs in one transaction: all of them or none."""
        if not is_valid_session_id(session_id):
            raise SessionNotFound(session_id)
        _check_roles(messages)
        now = self._clock()
        with self._transaction(f"append to session {session_id}", write=True) as conn:
            cur = conn.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id))
            if cur.rowcount == 0:
                raise SessionNotFound(session_id)
            (next_seq,) = conn.execute(
                "SELECT COALESCE(MAX(seq), -1) + 1 FROM messages WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            _insert_messages(conn, session_id, next_seq, messages, now)

    def get(self, session_id: str) -> Session:
        """The session with its messages in the order they were appended."""
        if not is_valid_session_id(session_id):
            raise SessionNotFound(session_id)
        with self._transaction(f"read session {session_id}", write=False) as conn:
            row = conn.execute(
                "SELECT model, created, updated FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                raise SessionNotFound(session_id)
            rows = conn.execute(
                "SELECT role, content, created FROM messages WHERE session_id = ? ORDER BY seq",
                (session_id,),
            ).fetchall()
        messages = tuple(Message(role, content, created) for role, content, created in rows)
        return Session(session_id, row[0], row[1], row[2], messages)

    def list(self) -> builtins.list[SessionSummary]:
        """Every session, most recently updated first."""
        with self._transaction("list sessions", write=False) as conn:
            rows = conn.execute(
                "SELECT s.id, s.model, s.created, s.updated, COUNT(m.seq) FROM sessions s"
                " LEFT JOIN messages m ON m.session_id = s.id GROUP BY s.id"
                " ORDER BY s.updated DESC, s.created DESC, s.id"
            ).fetchall()
        return [SessionSummary(*row) for row in rows]

    def delete(self, session_id: str) -> bool:
        """Delete a session and its messages; False when there was no such session."""
        if not is_valid_session_id(session_id):
            return False
        with self._transaction(f"delete session {session_id}", write=True) as conn:
            cur = conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return cur.rowcount > 0

    def close(self) -> None:
        """Close the connection; later calls raise SessionStoreError. Safe to call twice."""
        with self._lock:
            if self._conn is None:  # never opened: make sure it never will be
                self._conn = sqlite3.connect(":memory:")
            self._conn.close()


def new_session_id(session_id: str | None, messages: Sequence[tuple[str, str]]) -> str:
    """The id of a session about to be created with ``messages``: the one asked for, else a
    fresh uuid4; a bad id or message role is a 400 (every store's rule)."""
    sid = str(uuid.uuid4()) if session_id is None else session_id
    if not is_valid_session_id(sid):
        raise BadRequest(
            "session_id must be 1 to 128 characters of A-Z, a-z, 0-9, '_' or '-'",
            param="session_id",
        )
    _check_roles(messages)
    return sid


def _check_roles(messages: Sequence[tuple[str, str]]) -> None:
    for role, _ in messages:
        if role not in ROLES:
            raise BadRequest(f"Invalid message role: {role!r}", param="messages")


def _insert_messages(
    conn: sqlite3.Connection,
    session_id: str,
    first_seq: int,
    messages: Sequence[tuple[str, str]],
    now: float,
) -> None:
    conn.executemany(
        "INSERT INTO messages (session_id, seq, role, content, created) VALUES (?, ?, ?, ?, ?)",
        [
            (session_id, first_seq + i, role, content, now)
            for i, (role, content) in enumerate(messages)
        ],
    )


def estimate_tokens(text: str) -> int:
    """A cheap *estimate* of a message's tokens: ~4 characters each, plus 4 for its framing.

    Real counts depend on the model's tokenizer; this only has to be in the right range.
    """
    return len(text) // 4 + 4


def fit_history(
    messages: Sequence[Message | dict[str, str]],
    max_tokens: int,
    count: Callable[[str], int] = estimate_tokens,
) -> list[dict[str, str]]:
    """The newest messages that fit ``max_tokens``, as role/content dicts in order.

    Every system message is kept, and so is the last message even if it alone is over
    budget; the oldest other messages are dropped first. A conversation is never left
    starting with an assistant reply, since some chat templates reject that.
    """
    items = [
        {"role": m.role, "content": m.content}
        if isinstance(m, Message)
        else {"role": m["role"], "content": m["content"]}
        for m in messages
    ]
    if not items:
        return []
    costs = [count(item["content"]) for item in items]
    total = sum(costs)
    last = len(items) - 1
    droppable = [i for i in range(last) if items[i]["role"] != "system"]
    dropped: set[int] = set()
    for i in droppable:
        if total <= max_tokens:
            break
        dropped.add(i)
        total -= costs[i]
    if dropped:
        # The cut may leave an assistant reply first among the kept turns; drop it too.
        for i in droppable[len(dropped) :]:
            if items[i]["role"] != "assistant":
                break
            dropped.add(i)
    return [item for i, item in enumerate(items) if i not in dropped]
