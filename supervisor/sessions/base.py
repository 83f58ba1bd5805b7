"""What a sessions store promises, whichever database keeps it: SQLite in the data directory
(``store.SessionStore``, one gateway) or PostgreSQL at ``sessions_url``
(``postgres.PostgresStore``, shared by several gateways). Routes see only this.

Every method is blocking (routes call it through ``anyio.to_thread``), every write is one
transaction that has committed when the call returns, and every database failure is a
``SessionStoreError`` (503).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Protocol

from supervisor.sessions.store import Session, SessionSummary


class Store(Protocol):
    def create(
        self, model: str, session_id: str | None = None, messages: Sequence[tuple[str, str]] = ()
    ) -> str:
        """A new session holding ``messages``; its id (a fresh uuid4 when none is given)."""
        ...

    def append(self, session_id: str, messages: Sequence[tuple[str, str]]) -> None:
        """``(role, content)`` pairs appended in one transaction: all of them or none."""
        ...

    def get(self, session_id: str) -> Session: ...

    def list(self) -> builtins.list[SessionSummary]:
        """Every session, most recently updated first."""
        ...

    def delete(self, session_id: str) -> bool:
        """False when there was no such session."""
        ...

    def close(self) -> None: ...
