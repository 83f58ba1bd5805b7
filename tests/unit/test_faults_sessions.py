"""The sessions database full or read-only under a running gateway (issue 7): /api/chat answers
a 503 in its own format (a closing error event for a stream), nothing acknowledged is lost, the
file stays sound, and sessions work again once the fault clears."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fake_child import FakeChild, Reply, Stream
from fakes import FakeFactory
from fastapi.testclient import TestClient
from served import MakeSettings
from sse import delta

from supervisor.app import create_app
from supervisor.sessions.store import SessionStore

MODEL = "tiny.Q4_1"
MakeGGUF = Callable[..., Path]
LONG = "x" * 20_000  # a message that needs new database pages


def completion(text: str) -> Reply:
    return Reply(json={"choices": [{"message": {"role": "assistant", "content": text}}]})


@pytest.fixture
def client(
    make_gguf: MakeGGUF, make_settings: MakeSettings, fake_child: FakeChild, factory: FakeFactory
) -> Iterator[TestClient]:
    make_gguf(f"models/{MODEL}.gguf")
    fake_child.answer("POST", "/v1/chat/completions", completion("Hello"))
    with TestClient(create_app(make_settings(), factory=factory)) as tc:
        yield tc


def store_pragma(client: TestClient, pragma: str) -> None:
    """Set a pragma on the gateway's own sessions connection (SQLite's way to make a disk
    full, ``max_page_count``, or read-only, ``query_only``, for one connection)."""
    store: SessionStore = client.app.state.sessions  # type: ignore[attr-defined]
    with store._lock:
        store._conn.execute(f"PRAGMA {pragma}")


def page_count(client: TestClient) -> int:
    store: SessionStore = client.app.state.sessions  # type: ignore[attr-defined]
    with store._lock:
        (count,) = store._conn.execute("PRAGMA page_count").fetchone()
    return int(count)


def say(
    client: TestClient, text: str, session_id: str | None = None, stream: bool = False
) -> httpx.Response:
    body: dict[str, object] = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    if session_id:
        body["session_id"] = session_id
    if stream:
        body["stream"] = True
    return client.post("/api/chat", json=body)


FAULTS = {
    "disk full": lambda client: f"max_page_count = {page_count(client)}",
    "read-only": lambda client: "query_only = ON",
}
CLEARED = {"disk full": "max_page_count = 1073741823", "read-only": "query_only = OFF"}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_full_or_read_only_session_store_is_a_clear_503_and_loses_nothing(
    client: TestClient, fake_child: FakeChild, tmp_path: Path, fault: str
) -> None:
    first = say(client, "Hi")
    assert first.status_code == 200
    session_id = first.json()["session_id"]
    store_pragma(client, FAULTS[fault](client))

    refused = say(client, LONG, session_id)
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert "Session store failed" in refused.json()["detail"]
    fresh = say(client, LONG)  # a new session cannot be stored either
    assert fresh.status_code == 503 and "detail" in fresh.json()

    fake_child.answer("POST", "/v1/chat/completions", Stream([delta("Hel"), delta("lo")]))
    streamed = say(client, LONG, session_id, stream=True)
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line[:6] == "data: "]
    assert [e.get("token") for e in events[:-1]] == ["Hel", "lo"]
    assert events[-1]["done"] is True and "Session store failed" in events[-1]["error"]
    assert "session_id" not in events[-1]

    listed = client.get(f"/api/sessions/{session_id}")  # reads still work
    assert listed.status_code == 200
    assert [m["content"] for m in listed.json()["messages"]] == ["Hi", "Hello"]
    assert [s["id"] for s in client.get("/api/sessions").json()["sessions"]] == [session_id]

    store_pragma(client, CLEARED[fault])
    fake_child.answer("POST", "/v1/chat/completions", completion("Back"))
    assert say(client, "Again", session_id).status_code == 200
    contents = [m["content"] for m in client.get(f"/api/sessions/{session_id}").json()["messages"]]
    assert contents == ["Hi", "Hello", "Again", "Back"]
    with sqlite3.connect(tmp_path / "data" / "sessions.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_session_store_that_cannot_be_opened_costs_only_the_session_routes(
    tmp_path: Path,
    make_gguf: MakeGGUF,
    make_settings: MakeSettings,
    fake_child: FakeChild,
    factory: FakeFactory,
) -> None:
    """A data dir that cannot hold the database (here a file sits where it should be; in life
    a read-only or full disk at start-up) must not keep the gateway from serving the rest, and
    sessions come back once the obstruction is gone, without a restart."""
    make_gguf(f"models/{MODEL}.gguf")
    blocked = tmp_path / "data"
    blocked.write_text("not a directory")
    settings = make_settings(data_dir=blocked)
    fake_child.answer("POST", "/v1/chat/completions", completion("Hello"))
    with TestClient(create_app(settings, factory=factory)) as client:
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        assert client.post("/v1/chat/completions", json=chat).status_code == 200
        for refused in (say(client, "Hi"), client.get("/api/sessions")):
            assert refused.status_code == 503 and refused.headers["retry-after"]
            detail = refused.json()["detail"]
            assert "Cannot open session store" in detail and str(tmp_path) not in detail
        blocked.unlink()
        answered = say(client, "Hi")
        assert answered.status_code == 200
        listed = client.get("/api/sessions").json()["sessions"]
        assert [s["id"] for s in listed] == [answered.json()["session_id"]]
