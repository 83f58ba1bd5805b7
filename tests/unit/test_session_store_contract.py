"""One contract, two stores: every test here runs on the SQLite store and on the PostgreSQL
one (a real throwaway server, see tests/postgres_server.py), so a gateway behaves the same
whichever keeps its sessions."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from postgres_server import PostgresServer

from supervisor.errors import BadRequest, SessionNotFound, SessionStoreError
from supervisor.sessions.base import Store
from supervisor.sessions.postgres import PostgresStore
from supervisor.sessions.store import SessionStore

OpenStore = Callable[[], Store]  # another store on the same database


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    ticks = itertools.count(1000)  # forward-moving clock: "newest first" stays deterministic
    opened: list[Store] = []
    if request.param == "sqlite":
        path = tmp_path / "sessions.sqlite3"

        def make() -> Store:
            return SessionStore(path, clock=lambda: float(next(ticks)))
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create_database()

        def make() -> Store:
            return PostgresStore(url, clock=lambda: float(next(ticks)), timeout_s=2)

    def tracked() -> Store:
        store = make()
        opened.append(store)
        return store

    yield tracked
    for store in opened:
        store.close()


@pytest.fixture
def store(opener: OpenStore) -> Store:
    return opener()


def turns(store: Store, sid: str) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in store.get(sid).messages]


def test_round_trip_keeps_order_and_times(store: Store) -> None:
    sid = store.create("llama-3-8b")
    store.append(sid, [("system", "be brief"), ("user", "hi")])
    store.append(sid, [("assistant", "hello"), ("user", "more")])
    session = store.get(sid)
    assert (session.id, session.model) == (sid, "llama-3-8b")
    assert turns(store, sid) == [
        ("system", "be brief"), ("user", "hi"), ("assistant", "hello"), ("user", "more")
    ]  # fmt: skip
    assert session.updated > session.created
    assert session.messages[-1].created == session.updated


def test_create_with_messages_ids_and_refusals(store: Store) -> None:
    assert store.create("m", "my-session_1", [("user", "a"), ("assistant", "b")]) == "my-session_1"
    assert turns(store, "my-session_1") == [("user", "a"), ("assistant", "b")]
    generated = store.create("m")
    assert len(generated) == 36 and generated != store.create("m")
    with pytest.raises(BadRequest, match="already exists"):
        store.create("m", "my-session_1")
    with pytest.raises(BadRequest):
        store.create("m", "bad id!")
    with pytest.raises(BadRequest, match="role"):
        store.create("m", "roles", [("tool", "x")])
    with pytest.raises(SessionNotFound):
        store.get("roles")  # nothing was created


def test_append_refuses_bad_roles_and_unknown_sessions(store: Store) -> None:
    sid = store.create("m", messages=[("user", "hi")])
    with pytest.raises(BadRequest, match="role"):
        store.append(sid, [("user", "fine"), ("wizard", "no")])
    assert turns(store, sid) == [("user", "hi")]
    with pytest.raises(SessionNotFound):
        store.append("nope", [("user", "x")])
    with pytest.raises(SessionNotFound):
        store.append("../etc", [("user", "x")])


def test_list_is_newest_first_with_counts(store: Store) -> None:
    a = store.create("m1")
    b = store.create("m2")
    store.append(a, [("user", "x"), ("assistant", "y")])
    listed = store.list()
    assert [(s.id, s.model, s.message_count) for s in listed] == [(a, "m1", 2), (b, "m2", 0)]


def test_delete_removes_the_session_and_its_messages(store: Store) -> None:
    sid = store.create("m", messages=[("user", "x")])
    assert store.delete(sid) is True
    assert store.delete(sid) is False
    assert store.delete("bad id!") is False
    with pytest.raises(SessionNotFound):
        store.get(sid)
    assert store.list() == []
    store.create("m", sid)  # the id is free again, and holds nothing of the old session
    assert turns(store, sid) == []


def test_another_store_on_the_same_database_sees_committed_turns(opener: OpenStore) -> None:
    first, second = opener(), opener()
    sid = first.create("m", messages=[("user", "hi")])
    second.append(sid, [("assistant", "hello")])
    assert turns(first, sid) == [("user", "hi"), ("assistant", "hello")]
    first.close()
    assert turns(second, sid) == [("user", "hi"), ("assistant", "hello")]


def test_a_closed_store_raises_store_errors(store: Store) -> None:
    store.close()
    with pytest.raises(SessionStoreError):
        store.list()
    store.close()  # twice is fine


def test_concurrent_appends_from_threads_all_land_in_whole_pairs(store: Store) -> None:
    sid = store.create("m")
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                store.append(sid, [("user", f"{n}-{i}"), ("assistant", f"re {n}-{i}")])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    stored = turns(store, sid)
    assert len(stored) == 80
    # Each append is whole: every question is followed at once by its own answer.
    for (role, text), (next_role, reply) in zip(stored[::2], stored[1::2], strict=True):
        assert (role, next_role, reply) == ("user", "assistant", f"re {text}")
