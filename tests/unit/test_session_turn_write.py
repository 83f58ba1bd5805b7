"""A streamed turn's client that hangs up while its turn is being written: a write in a worker
thread cannot be stopped, so the session's turn must last until the write has ended, or the
next turn reads a history that misses it (turns out of order, on one gateway or several)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
from fake_child import FakeChild, Reply, Request, Stream
from fakes import FakeFactory
from served import MakeSettings, served
from sse import delta

from supervisor.app import create_app
from supervisor.sessions.base import Store

MODEL = "tiny.Q4_1"
MakeGGUF = Callable[..., Path]


class SlowWrites:
    """The app's store, whose appends wait for ``go`` (``writing`` tells one began)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.writing = threading.Event()
        self.go = threading.Event()

    def append(self, session_id: str, messages: Sequence[tuple[str, str]]) -> None:
        self.writing.set()
        self.go.wait(30)
        self._store.append(session_id, messages)

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def poll(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_client_gone_while_its_turn_is_written_does_not_let_the_next_turn_skip_it(
    make_gguf: MakeGGUF, make_settings: MakeSettings, fake_child: FakeChild, factory: FakeFactory
) -> None:
    make_gguf(f"models/{MODEL}.gguf")
    settings = make_settings()

    def answer(request: Request) -> Reply | Stream:
        if request.json().get("stream"):
            return Stream([delta("Hello"), b"data: [DONE]\n\n"])
        return Reply(json={"choices": [{"message": {"role": "assistant", "content": "Hello"}}]})

    fake_child.answer("POST", "/v1/chat/completions", answer)
    app = create_app(settings, factory=factory)
    with served(app, settings) as base:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        sid = httpx.post(f"{base}/api/chat", json=body, timeout=30).json()["session_id"]
        slow = SlowWrites(app.state.sessions)
        app.state.sessions = slow
        left = [{"role": "user", "content": "left"}]
        payload = json.dumps({**body, "session_id": sid, "stream": True, "messages": left}).encode()
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(payload), payload))  # fmt: skip
            assert slow.writing.wait(30)
        # The client has gone while the turn is being written; the next turn comes.
        upstream = fake_child.received("POST", "/v1/chat/completions")
        sent = len(upstream)
        after: list[httpx.Response] = []
        nxt = {**body, "session_id": sid, "messages": [{"role": "user", "content": "next"}]}
        follower = threading.Thread(
            target=lambda: after.append(httpx.post(f"{base}/api/chat", json=nxt, timeout=60))
        )
        follower.start()
        try:
            # It may not reach the model before the write ends; if it does, the test fails
            # below (its history lacks the turn being written).
            poll(lambda: len(fake_child.received("POST", "/v1/chat/completions")) > sent, 3)
        finally:
            slow.go.set()
            follower.join(60)
        assert after and after[0].status_code == 200, after
        history = fake_child.received("POST", "/v1/chat/completions")[-1].json()["messages"]
        assert [m["content"] for m in history] == ["Hi", "Hello", "left", "Hello", "next"]
