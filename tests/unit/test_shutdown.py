"""The drain after SIGTERM: its clock, and the 503s every surface answers meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fakes import FakeFactory
from fastapi.testclient import TestClient
from served import MakeSettings

from supervisor.app import create_app
from supervisor.http.drain import Drain

MakeGGUF = Callable[..., Path]


def test_drain_finishes_when_idle_or_when_the_grace_is_over() -> None:
    now = [100.0]
    drain = Drain(grace_s=30, clock=lambda: now[0])
    assert not drain.draining and not drain.finished()
    drain.enter()
    drain.begin()
    assert drain.draining and drain.stopping.is_set()
    assert not drain.finished()  # one request still in flight
    now[0] += 29
    assert not drain.finished()
    now[0] += 1
    assert drain.finished()  # grace over
    drain.begin()  # a second signal does not move the deadline
    drain.leave()
    assert drain.finished() and drain.in_flight == 0


def test_a_draining_gateway_answers_503_with_retry_after(
    make_gguf: MakeGGUF, make_settings: MakeSettings
) -> None:
    make_gguf("models/tiny.Q4_1.gguf")
    app = create_app(make_settings(), factory=FakeFactory())
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        app.state.drain.begin()
        for method, path in [
            ("GET", "/health"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/api/v2/models"),
        ]:
            reply = client.request(method, path)
            assert reply.status_code == 503, path
            assert reply.headers["retry-after"] == "10"
            assert reply.headers["connection"] == "close"
            assert reply.json()["error"]["code"] == "shutting_down"
        reply = client.post("/api/chat", json={"message": "hi"})
        assert reply.status_code == 503
        assert reply.json() == {"detail": "The gateway is shutting down"}
