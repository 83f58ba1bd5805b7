from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.errors import (
    BadRequest,
    NotFound,
    SessionNotFound,
    SessionStoreError,
    SupervisorError,
)
from supervisor.sessions.store import Message, SessionStore, estimate_tokens, fit_history


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sessions.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SessionStore]:
    ticks = itertools.count(1000)
    # A clock that always moves forward keeps "newest first" deterministic on fast machines.
    s = SessionStore(db_path, clock=lambda: float(next(ticks)))
    yield s
    s.close()


def test_errors_fit_the_hierarchy() -> None:
    assert issubclass(SessionNotFound, NotFound)
    assert SessionNotFound("x").status_code == 404
    assert SessionNotFound("x").code == "session_not_found"
    assert issubclass(SessionStoreError, SupervisorError)
    err = SessionStoreError("down")
    assert (err.status_code, err.error_type, err.code, err.retry_after) == (
        503,
        "unavailable_error",
        "session_store_unavailable",
        5,
    )


def test_round_trip_preserves_order(store: SessionStore, db_path: Path) -> None:
    assert db_path.exists()  # parent directory created
    sid = store.create("llama-3-8b")
    store.append(sid, [("system", "be brief"), ("user", "hi")])
    store.append(sid, [("assistant", "hello"), ("user", "more")])
    session = store.get(sid)
    assert session.id == sid
    assert session.model == "llama-3-8b"
    assert [(m.role, m.content) for m in session.messages] == [
        ("system", "be brief"),
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "more"),
    ]
    assert session.updated > session.created
    assert session.messages[-1].created == session.updated


def test_create_with_explicit_id_and_generated_ids(store: SessionStore) -> None:
    assert store.create("m", "my-session_1") == "my-session_1"
    assert store.get("my-session_1").messages == ()
    generated = store.create("m")
    assert len(generated) == 36 and generated != store.create("m")


def test_create_rejects_duplicate_and_malformed_ids(store: SessionStore) -> None:
    store.create("m", "dup")
    with pytest.raises(BadRequest):
        store.create("m", "dup")
    with pytest.raises(BadRequest):
        store.create("m", "has space")


def test_append_rejects_unknown_roles(store: SessionStore) -> None:
    sid = store.create("m")
    with pytest.raises(BadRequest):
        store.append(sid, [("user", "ok"), ("wizard", "no")])
    assert store.get(sid).messages == ()


def test_list_newest_first_with_counts(store: SessionStore) -> None:
    a = store.create("m1")
    b = store.create("m2")
    c = store.create("m3")
    store.append(a, [("user", "1"), ("assistant", "2")])
    summaries = store.list()
    assert [s.id for s in summaries] == [a, c, b]
    assert {s.id: s.message_count for s in summaries} == {a: 2, b: 0, c: 0}
    assert summaries[0].model == "m1"


def test_delete_cascades(store: SessionStore, db_path: Path) -> None:
    sid = store.create("m")
    keep = store.create("m")
    store.append(sid, [("user", "x"), ("assistant", "y")])
    store.append(keep, [("user", "z")])
    assert store.delete(sid) is True
    assert store.delete(sid) is False
    with pytest.raises(SessionNotFound):
        store.get(sid)
    with sqlite3.connect(db_path) as raw:
        rows = raw.execute("SELECT session_id FROM messages").fetchall()
    assert rows == [(keep,)]


@pytest.mark.parametrize(
    "bad_id",
    ["", "x" * 129, "'; DROP TABLE sessions; --", "a/b", "../etc", "é", "id\n", "a b"],
)
def test_malformed_ids_are_not_found(store: SessionStore, bad_id: str) -> None:
    sid = store.create("m")
    with pytest.raises(SessionNotFound) as info:
        store.get(bad_id)
    assert bad_id not in info.value.message or bad_id == ""
    with pytest.raises(SessionNotFound):
        store.append(bad_id, [("user", "x")])
    assert store.delete(bad_id) is False
    assert store.get(sid).id == sid  # tables intact


def test_unknown_ids_are_not_found(store: SessionStore) -> None:
    with pytest.raises(SessionNotFound, match="nope"):
        store.get("nope")
    with pytest.raises(SessionNotFound):
        store.append("nope", [("user", "x")])
    assert store.list() == []


def test_survives_close_and_reopen(db_path: Path) -> None:
    first = SessionStore(db_path)
    sid = first.create("m")
    first.append(sid, [("user", "persist me")])
    first.close()
    first.close()  # idempotent
    second = SessionStore(db_path)
    try:
        assert [m.content for m in second.get(sid).messages] == ["persist me"]
    finally:
        second.close()


def test_second_store_sees_committed_data(db_path: Path) -> None:
    writer = SessionStore(db_path)
    reader = SessionStore(db_path)
    try:
        sid = writer.create("m")
        writer.append(sid, [("user", "a")])
        assert [m.content for m in reader.get(sid).messages] == ["a"]
        reader.append(sid, [("assistant", "b")])
        assert [m.content for m in writer.get(sid).messages] == ["a", "b"]
    finally:
        writer.close()
        reader.close()


def test_acknowledged_append_survives_sigkill(db_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from supervisor.sessions.store import SessionStore\n"
        "s = SessionStore(Path(sys.argv[1]))\n"
        "sid = s.create('m', 'killed')\n"
        "s.append(sid, [('user', 'q'), ('assistant', 'a')])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(db_path)], check=False)
    assert proc.returncode == -9
    store = SessionStore(db_path)
    try:
        assert [m.content for m in store.get("killed").messages] == ["q", "a"]
    finally:
        store.close()


def test_append_is_atomic(store: SessionStore, db_path: Path) -> None:
    sid = store.create("m")
    store.append(sid, [("user", "before")])
    updated = store.get(sid).updated
    # A real SQLite failure on the second row of the batch, installed behind the store's back.
    with sqlite3.connect(db_path) as raw:
        raw.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON messages WHEN NEW.content = 'boom'"
            " BEGIN SELECT RAISE(ABORT, 'boom rejected'); END"
        )
    with pytest.raises(SessionStoreError, match="boom rejected") as info:
        store.append(sid, [("user", "fine"), ("assistant", "boom"), ("user", "after")])
    assert isinstance(info.value.__cause__, sqlite3.Error)
    session = store.get(sid)
    assert [m.content for m in session.messages] == ["before"]
    assert session.updated == updated
    store.append(sid, [("user", "still works")])
    assert len(store.get(sid).messages) == 2


def test_read_only_store_reports_store_errors(db_path: Path) -> None:
    writer = SessionStore(db_path)
    sid = writer.create("m")
    writer.append(sid, [("user", "x")])
    writer.close()
    ro = SessionStore(db_path, read_only=True)
    try:
        for write in (
            lambda: ro.append(sid, [("user", "y")]),
            lambda: ro.create("m"),
            lambda: ro.delete(sid),
        ):
            with pytest.raises(SessionStoreError, match="readonly"):
                write()
        # Reads keep working after a failed write.
        assert [m.content for m in ro.get(sid).messages] == ["x"]
        assert [s.id for s in ro.list()] == [sid]
    finally:
        ro.close()


def test_open_failures_are_store_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(SessionStoreError, match="Cannot open session store"):
        SessionStore(blocker / "sessions.db")
    with pytest.raises(SessionStoreError):
        SessionStore(tmp_path / "missing.db", read_only=True)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SessionStoreError):
        SessionStore(garbage)


def test_closed_store_raises_store_error(store: SessionStore) -> None:
    sid = store.create("m")
    store.close()
    with pytest.raises(SessionStoreError):
        store.get(sid)
    with pytest.raises(SessionStoreError):
        store.list()


def test_concurrent_appends_from_threads(store: SessionStore) -> None:
    sid = store.create("m")

    def worker(n: int) -> None:
        for i in range(20):
            store.append(sid, [("user", f"{n}-{i}")])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    contents = [m.content for m in store.get(sid).messages]
    assert sorted(contents) == sorted(f"{n}-{i}" for n in range(4) for i in range(20))
    for n in range(4):  # each thread's own messages stay in its order
        assert [c for c in contents if c.startswith(f"{n}-")] == [f"{n}-{i}" for i in range(20)]


def _chars(text: str) -> int:
    return len(text)


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 4
    assert estimate_tokens("abcdefgh") == 6


def test_fit_history_everything_fits() -> None:
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert fit_history(msgs, 100, _chars) == msgs
    assert fit_history([], 100) == []


def test_fit_history_drops_oldest_and_keeps_system() -> None:
    msgs: list[Message | dict[str, str]] = [
        Message("system", "sys", 0.0),
        Message("user", "aaaa", 1.0),
        Message("assistant", "bbbb", 2.0),
        Message("user", "cccc", 3.0),
        {"role": "assistant", "content": "dddd"},
        {"role": "user", "content": "eeee"},
    ]
    # Fitting 11 cuts up to "cccc", which would leave "dddd" (an assistant reply) leading.
    assert fit_history(msgs, 11, _chars) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "eeee"},
    ]
    kept = fit_history(msgs, 15, _chars)
    assert kept == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "cccc"},
        {"role": "assistant", "content": "dddd"},
        {"role": "user", "content": "eeee"},
    ]


def test_fit_history_never_starts_with_an_assistant_reply() -> None:
    msgs = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "aaaa"},
        {"role": "assistant", "content": "bbbb"},
        {"role": "user", "content": "cccc"},
    ]
    # Dropping "aaaa" alone would fit 9, but would leave "bbbb" leading the turns.
    assert fit_history(msgs, 9, _chars) == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "cccc"},
    ]


def test_fit_history_keeps_last_message_even_over_budget() -> None:
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "old"},
        {"role": "user", "content": "x" * 1000},
    ]
    assert fit_history(msgs, 10, _chars) == [msgs[0], msgs[2]]
    assert fit_history([msgs[2]], 1, _chars) == [msgs[2]]


def test_fit_history_default_counter_is_the_estimate() -> None:
    msgs = [{"role": "user", "content": "a" * 40}, {"role": "user", "content": "b" * 40}]
    assert fit_history(msgs, estimate_tokens("b" * 40)) == [msgs[1]]
    assert fit_history(msgs, 2 * estimate_tokens("a" * 40)) == msgs
