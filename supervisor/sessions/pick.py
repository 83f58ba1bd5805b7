"""Which store keeps the ``/api`` sessions: PostgreSQL when ``sessions_url`` is set (several
gateways share it, and its advisory locks make their turns on a session go in order), else
SQLite in the data directory (one gateway)."""

from __future__ import annotations

from supervisor.config import Settings
from supervisor.sessions.base import Store
from supervisor.sessions.locks import SharedLocks
from supervisor.sessions.store import SessionStore


def open_store(settings: Settings) -> tuple[Store, SharedLocks | None]:
    """The store, and the locks shared with other gateways (None for SQLite). A database that
    cannot be reached now is no error here: its calls answer 503 until it can be. (The
    settings have checked the URL is a postgresql:// one.)"""
    secret = settings.sessions_url
    if secret is None:
        return SessionStore(settings.data_dir / "sessions.sqlite3", open_later=True), None
    # Imported here: psycopg is only loaded by gateways that use it.
    from supervisor.sessions.advisory import AdvisoryLocks
    from supervisor.sessions.postgres import PostgresStore

    url = secret.get_secret_value()
    return PostgresStore(url), AdvisoryLocks(url)
