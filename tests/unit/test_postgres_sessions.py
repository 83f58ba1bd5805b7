"""Sessions in PostgreSQL, against a real throwaway server: the schema created and migrated,
a server that is away (at start or later) costing clear 503s until it is back, the turn
locks that several gateways share, and the URL's password kept out of every answer."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fake_child import FakeChild, Reply, Stream
from fakes import FakeFactory
from fastapi.testclient import TestClient
from postgres_server import PASSWORD, PostgresServer
from pydantic import ValidationError
from served import MakeSettings, served
from sse import delta

from supervisor.app import create_app
from supervisor.children.process import free_port
from supervisor.errors import BadRequest, SessionStoreError
from supervisor.sessions.advisory import AdvisoryLocks, lock_key
from supervisor.sessions.locks import Turns
from supervisor.sessions.pick import open_store
from supervisor.sessions.postgres import SCHEMA_LOCK, SCHEMA_VERSION, PostgresStore, migrate
from supervisor.sessions.store import SessionStore

MODEL = "tiny.Q4_1"
MakeGGUF = Callable[..., Path]


def schema_version(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version FROM sessions_schema_version").fetchone()
    assert row is not None
    return int(row[0])


def indexes(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'sessions'")
        return {name for (name,) in rows}


# -- schema -------------------------------------------------------------------------------------
def test_a_fresh_database_gets_the_whole_schema(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    PostgresStore(url).close()
    assert schema_version(url) == SCHEMA_VERSION
    assert "sessions_by_updated" in indexes(url)


def test_an_older_schema_is_migrated_and_keeps_its_sessions(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    with psycopg.connect(url) as conn:
        migrate(conn, target=1)  # as the first release left it
        conn.execute("INSERT INTO sessions VALUES ('old', 'm', 1, 2)")
        conn.execute("INSERT INTO session_messages VALUES ('old', 0, 'user', 'kept', 2)")
    assert schema_version(url) == 1 and "sessions_by_updated" not in indexes(url)
    store = PostgresStore(url)
    try:
        assert schema_version(url) == SCHEMA_VERSION
        assert "sessions_by_updated" in indexes(url)
        assert [m.content for m in store.get("old").messages] == ["kept"]
    finally:
        store.close()


def test_gateways_starting_together_migrate_once(postgres: PostgresServer) -> None:
    url = postgres.create_database()

    async def start_many() -> list[PostgresStore]:
        return list(
            await asyncio.gather(*(asyncio.to_thread(PostgresStore, url) for _ in range(4)))
        )

    stores = asyncio.run(start_many())
    try:
        for store in stores:
            assert store.list() == []
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT version FROM sessions_schema_version").fetchall()
        assert rows == [(SCHEMA_VERSION,)]
    finally:
        for store in stores:
            store.close()


def test_a_migration_stuck_elsewhere_does_not_hang_the_start(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another gateway holds the schema lock and does not finish (stuck, or its host gone):
    this one starts anyway, within the statement timeout, answers 503 meanwhile, and
    migrates on the first call after the lock is free."""
    monkeypatch.setattr("supervisor.sessions.postgres.STATEMENT_TIMEOUT_MS", 500)
    url = postgres.create_database()
    started: list[PostgresStore] = []
    with psycopg.connect(url) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s, %s)", SCHEMA_LOCK)
        starting = threading.Thread(target=lambda: started.append(PostgresStore(url)))
        starting.start()
        starting.join(30)
        try:
            assert started, "the gateway's start waited on the schema lock"
            with pytest.raises(SessionStoreError):
                started[0].list()
        finally:
            other.rollback()  # the lock goes; a start still waiting ends
            starting.join(30)
    try:
        assert started[0].list() == []
    finally:
        for store in started:
            store.close()


def test_a_schema_newer_than_the_gateway_is_refused_clearly(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    PostgresStore(url).close()
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE sessions_schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    store = PostgresStore(url)  # the gateway still starts
    try:
        with pytest.raises(SessionStoreError, match="newer than this gateway"):
            store.list()
    finally:
        store.close()


def test_nul_characters_are_the_clients_fault_not_a_503(postgres: PostgresServer) -> None:
    store = PostgresStore(postgres.create_database())
    try:
        with pytest.raises(BadRequest, match="NUL"):
            store.create("m", messages=[("user", "a\x00b")])
        assert store.list() == []
    finally:
        store.close()


def test_only_postgresql_urls_are_taken(make_settings: MakeSettings) -> None:
    with pytest.raises(ValidationError, match="postgresql://") as refused:
        make_settings(sessions_url="mysql://u:hunter2@h/db")
    assert "hunter2" not in str(refused.value)  # the URL may hold a password: never shown
    assert make_settings(sessions_url="").sessions_url is None  # empty: SQLite
    settings = make_settings(sessions_url="postgresql://u:hunter2@h/db")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    store, shared = open_store(make_settings())
    try:
        assert isinstance(store, SessionStore) and shared is None
    finally:
        store.close()


# -- the server away --------------------------------------------------------------------------
@pytest.fixture
def away_then_back(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """The shared server, which the test stops: started again afterwards, whatever happened."""
    try:
        yield postgres
    finally:
        if postgres.proc is None:
            postgres.start()


def test_a_server_away_at_start_is_503s_until_it_is_back(
    away_then_back: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = away_then_back.create_database()
    away_then_back.stop()
    store = PostgresStore(url, timeout_s=1)  # does not raise: the gateway starts
    try:
        with pytest.raises(SessionStoreError, match="unreachable") as caught:
            store.create("m")
        assert caught.value.status_code == 503 and caught.value.retry_after
        away_then_back.start()
        sid = store.create("m", messages=[("user", "hi")])
        assert [m.content for m in store.get(sid).messages] == ["hi"]
    finally:
        store.close()
    assert PASSWORD not in caplog.text


def session_text(client: TestClient, sid: str) -> list[str]:
    return [m["content"] for m in client.get(f"/api/sessions/{sid}").json()["messages"]]


def say(client: TestClient, text: str, sid: str | None = None, **extra: object) -> httpx.Response:
    body: dict[str, object] = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    return client.post("/api/chat", json=body | ({"session_id": sid} if sid else {}) | extra)


def test_the_gateway_answers_503_while_the_database_is_away_and_loses_nothing(
    away_then_back: PostgresServer,
    make_gguf: MakeGGUF,
    make_settings: MakeSettings,
    fake_child: FakeChild,
    factory: FakeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    make_gguf(f"models/{MODEL}.gguf")
    settings = make_settings(sessions_url=away_then_back.create_database())
    reply = Reply(json={"choices": [{"message": {"role": "assistant", "content": "Hello"}}]})
    fake_child.answer("POST", "/v1/chat/completions", reply)
    with TestClient(create_app(settings, factory=factory)) as client:
        first = say(client, "Hi")
        assert first.status_code == 200, first.text
        sid = first.json()["session_id"]

        away_then_back.stop()
        texts = []
        for refused in (
            say(client, "lost?", sid),
            client.get("/api/sessions"),
            client.delete(f"/api/sessions/{sid}"),
        ):
            assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
            assert "unreachable" in refused.json()["detail"]
            texts.append(refused.text)
        # Other routes go on.
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        assert client.post("/v1/chat/completions", json=chat).status_code == 200

        away_then_back.start()
        fake_child.answer("POST", "/v1/chat/completions", Stream([delta("Ba"), delta("ck")]))
        streamed = say(client, "Again", sid, stream=True)
        final = json.loads([line for line in streamed.text.splitlines() if line][-1][6:])
        assert final["done"] is True and final["session_id"] == sid, streamed.text
        assert session_text(client, sid) == ["Hi", "Hello", "Again", "Back"]
    for text in [*texts, caplog.text]:
        assert PASSWORD not in text


# -- the turn locks shared by gateways --------------------------------------------------------
def held_locks(url: str, key: int) -> tuple[int, int]:
    """(granted, waiting) advisory locks on ``key`` in the server."""
    classid, objid = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT granted FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid"
            " AND objid = %s::oid AND objsubid = 1",
            (classid, objid),
        ).fetchall()
    return sum(1 for (g,) in rows if g), sum(1 for (g,) in rows if not g)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - the server's lock table has no events
            await asyncio.sleep(0.02)


def test_turns_on_one_session_from_two_gateways_go_in_order(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    key = lock_key("s-1")

    async def run() -> None:
        one, two = Turns(AdvisoryLocks(url)), Turns(AdvisoryLocks(url))
        try:
            release = await one.take("s-1")
            assert held_locks(url, key) == (1, 0)
            second = asyncio.create_task(two.take("s-1"))
            await wait_until(lambda: held_locks(url, key) == (1, 1))
            assert not second.done()  # the other gateway waits
            other = await two.take("s-2")  # another session does not
            other()
            release()
            release()  # only the first call counts
            release_two = await asyncio.wait_for(second, 10)
            assert held_locks(url, key) == (1, 0)
            release_two()
            await wait_until(lambda: held_locks(url, key) == (0, 0))
        finally:
            await one.close()
            await two.close()

    asyncio.run(run())


def test_the_first_turns_may_come_all_at_once(postgres: PostgresServer) -> None:
    url = postgres.create_database()

    async def run() -> None:
        turns = Turns(AdvisoryLocks(url))
        try:
            releases = await asyncio.gather(*(turns.take(f"s-{n}") for n in range(6)))
            assert [held_locks(url, lock_key(f"s-{n}")) for n in range(6)] == [(1, 0)] * 6
            for release in releases:
                release()
        finally:
            await turns.close()
        assert [held_locks(url, lock_key(f"s-{n}")) for n in range(6)] == [(0, 0)] * 6

    asyncio.run(run())


def test_a_turn_given_up_while_waiting_leaves_nothing_held(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    key = lock_key("s-1")

    async def run() -> None:
        one, two = Turns(AdvisoryLocks(url)), Turns(AdvisoryLocks(url))
        try:
            release = await one.take("s-1")
            waiting = asyncio.create_task(two.take("s-1"))
            await wait_until(lambda: held_locks(url, key) == (1, 1))
            waiting.cancel()  # the client left
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert held_locks(url, key) == (1, 0)
            release()
            await wait_until(lambda: held_locks(url, key) == (0, 0))
            # The local lock was given back too: the same gateway takes the turn at once.
            again = await asyncio.wait_for(two.take("s-1"), 10)
            again()
        finally:
            await one.close()
            await two.close()

    asyncio.run(run())


def lock_holder(url: str, key: int) -> int:
    """The server process that holds the advisory lock on ``key``."""
    classid, objid = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid"
            " AND objid = %s::oid AND objsubid = 1 AND granted",
            (classid, objid),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_stuck_connection_does_not_keep_a_session_or_a_shutdown_waiting(
    postgres: PostgresServer,
) -> None:
    """The server process behind a turn's lock stops answering (a stuck connection): giving
    the turn back must still end, within a bound, so that the session's next turn on this
    gateway is not queued forever and the gateway's shutdown does not hang."""
    url = postgres.create_database()
    key = lock_key("s-1")

    async def run() -> None:
        turns = Turns(AdvisoryLocks(url, unlock_timeout_s=0.5))
        stopped: int | None = None
        try:
            release = await turns.take("s-1")
            stopped = lock_holder(url, key)
            os.kill(stopped, signal.SIGSTOP)
            release()
            await asyncio.wait_for(turns.close(), 30)
            assert not turns.locks.lock("s-1").locked()
        finally:
            if stopped is not None:
                os.kill(stopped, signal.SIGCONT)
            await turns.close()
        # Once it runs again, the server finds the connection closed and drops the lock.
        await wait_until(lambda: held_locks(url, key) == (0, 0))

    asyncio.run(run())


def test_an_unreachable_database_makes_taking_a_turn_a_503(make_settings: MakeSettings) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/nothing"

    async def run() -> None:
        turns = Turns(AdvisoryLocks(url, timeout_s=1))
        try:
            with pytest.raises(SessionStoreError, match="unreachable") as caught:
                await turns.take("s-1")
            assert PASSWORD not in caught.value.message
            # The local lock is not left held by the failure.
            assert not turns.locks.lock("s-1").locked()
        finally:
            await turns.close()

    asyncio.run(run())


def test_a_client_that_leaves_while_waiting_for_its_turn_gives_it_up(
    postgres: PostgresServer,
    make_gguf: MakeGGUF,
    make_settings: MakeSettings,
    fake_child: FakeChild,
    factory: FakeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another gateway (here a plain connection) holds the session's turn; a client waiting
    behind it hangs up: its wait ends in the server at once, nothing of it is stored, and the
    session goes on when the other turn ends."""
    make_gguf(f"models/{MODEL}.gguf")
    url = postgres.create_database()
    settings = make_settings(sessions_url=url)
    reply = Reply(json={"choices": [{"message": {"role": "assistant", "content": "Hello"}}]})
    fake_child.answer("POST", "/v1/chat/completions", reply)
    with served(create_app(settings, factory=factory), settings) as base:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        sid = httpx.post(f"{base}/api/chat", json=body, timeout=30).json()["session_id"]
        key = lock_key(sid)
        with psycopg.connect(url, autocommit=True) as other_gateway:
            other_gateway.execute("SELECT pg_advisory_lock(%s)", (key,))
            payload = json.dumps(body | {"session_id": sid, "messages": [
                {"role": "user", "content": "left"}]}).encode()  # fmt: skip
            port = int(base.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(payload), payload))  # fmt: skip
                assert poll(lambda: held_locks(url, key) == (1, 1))
            assert poll(lambda: held_locks(url, key) == (1, 0))  # the wait was given up
            other_gateway.execute("SELECT pg_advisory_unlock(%s)", (key,))
        body = {"model": MODEL, "session_id": sid, "messages": [
            {"role": "user", "content": "Again"}]}  # fmt: skip
        assert httpx.post(f"{base}/api/chat", json=body, timeout=30).status_code == 200
        stored = httpx.get(f"{base}/api/sessions/{sid}", timeout=30).json()["messages"]
        assert [m["content"] for m in stored] == ["Hi", "Hello", "Again", "Hello"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]


def poll(predicate: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_gateway_on_sqlite_does_not_load_psycopg() -> None:
    """psycopg and its pool are only imported where sessions_url asks for them."""
    code = "import supervisor.services, supervisor.app; import sys; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_server_notices_a_dead_gateway_within_a_minute_not_hours(
    postgres: PostgresServer,
) -> None:
    """A gateway whose host dies (power, network) closes nothing: the server keeps its turns'
    locks until TCP keepalive finds the peer gone, two hours by the system's defaults, and
    every other gateway's turn on those sessions waits that long. Every connection of a
    gateway's asks the server to probe it sooner."""
    url = postgres.create_database()
    keepalives = ["tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count"]
    store = PostgresStore(url)
    try:
        with store._pool.connection() as conn:
            shown = [conn.execute(f"SHOW {name}").fetchone() for name in keepalives]
            # and the gateway's side notices a database host that vanished, likewise
            client = conn.info.get_parameters()
        assert [int(row[0]) for row in shown if row] == [30, 10, 3]
        assert [client.get(f"keepalives_{n}") for n in ("idle", "interval", "count")] == [
            "30", "10", "3"]  # fmt: skip
    finally:
        store.close()

    async def run() -> None:
        locks = AdvisoryLocks(url)
        try:
            unlock = await locks.acquire("s-1")
            async with locks._pool.connection() as conn:
                rows = [
                    await (await conn.execute(f"SHOW {name}")).fetchone() for name in keepalives
                ]
            assert [int(row[0]) for row in rows if row] == [30, 10, 3]
            await unlock()
        finally:
            await locks.close()

    asyncio.run(run())


def test_a_gateway_out_of_turn_connections_says_so_not_that_the_database_is_away(
    postgres: PostgresServer,
) -> None:
    """More sessions' turns at once than the gateway keeps lock connections for: the 503 says
    that may be the cause, not only that the database (which is up) is unreachable."""
    url = postgres.create_database()

    async def run() -> None:
        turns = Turns(AdvisoryLocks(url, max_connections=1, timeout_s=0.5))
        try:
            release = await turns.take("s-1")
            with pytest.raises(SessionStoreError) as caught:
                await turns.take("s-2")
            assert "connections to it are busy" in caught.value.message
            release()
        finally:
            await turns.close()

    asyncio.run(run())
