"""A child that answers /health but never produces a token (issue 7): its liveness check keeps
passing, so nothing restarts it. A client that gives up must free its slot and lease; requests
queued behind it get a clear 503 within the queue's bound, never a hang."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_child import DROP, Answer, FakeChild, Reply, Request, Stream
from fakes import FakeFactory
from fastapi import FastAPI
from served import MakeSettings
from starlette.datastructures import State
from starlette.types import Message

from supervisor.app import create_app

MODEL = "tiny.Q4_1"
MakeGGUF = Callable[..., Path]
PATIENCE_S = 10.0  # a bound on waits that should end at once, so a bug fails instead of hanging


@pytest.fixture
def stuck() -> Iterator[threading.Event]:
    """Set to let a stuck child's handler threads go (at the end of the test)."""
    release = threading.Event()
    yield release
    release.set()


@pytest.fixture
def app(make_gguf: MakeGGUF, make_settings: MakeSettings, factory: FakeFactory) -> FastAPI:
    make_gguf(f"models/{MODEL}.gguf")
    settings = make_settings(parallel=1, queue_timeout_s=0.5)
    return create_app(settings, factory=factory)


@pytest.fixture
async def running(app: FastAPI) -> AsyncIterator[State]:
    """The running app's services (``supervisor/services.py``)."""
    async with app.router.lifespan_context(app):
        yield app.state


def in_flight(services: State) -> int:
    return int(services.manager.status(services.catalog.resolve(MODEL)).in_flight)


class Exchange:
    """One request sent to the app as an ASGI server would, whose client can hang up."""

    def __init__(self, app: FastAPI, path: str, payload: dict[str, Any]) -> None:
        self.sent: list[Message] = []
        self._gone = asyncio.Event()
        self._body = json.dumps(payload).encode()
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
            "headers": [(b"content-type", b"application/json"), (b"host", b"gateway.test")],
            "server": ("gateway.test", 80),
        }  # fmt: skip
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> Message:
        if self._body:
            body, self._body = self._body, b""
            return {"type": "http.request", "body": body, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        self.sent.append(message)

    async def hang_up(self) -> None:
        self._gone.set()
        await asyncio.wait_for(self.task, PATIENCE_S)


def arriving(answer: Answer, arrived: threading.Event) -> Callable[[Request], Answer]:
    """``answer``, once ``arrived`` is set: the request has reached the child."""

    def route(request: Request) -> Answer:
        arrived.set()
        return answer

    return route


def never_answers(
    release: threading.Event, arrived: threading.Event
) -> Callable[[Request], Answer]:
    def route(request: Request) -> Answer:
        arrived.set()
        release.wait(PATIENCE_S * 3)
        return DROP

    return route


async def reached(arrived: threading.Event) -> None:
    assert await asyncio.to_thread(arrived.wait, PATIENCE_S)


COMPLETION = {"model": MODEL, "prompt": "Hi"}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/v1/completions", COMPLETION),
        ("/v1/completions", COMPLETION | {"stream": True}),
        ("/api/v2/chat/tiny.Q4_1", {"messages": CHAT["messages"]}),
        ("/api/chat", CHAT),
        ("/completion", COMPLETION | {"stream": True}),
    ],
)
async def test_a_client_giving_up_on_a_child_that_never_answers_frees_its_slot(
    app: FastAPI,
    running: State,
    fake_child: FakeChild,
    stuck: threading.Event,
    path: str,
    payload: dict[str, Any],
) -> None:
    upstream = {"/v1/completions": "/v1/completions", "/completion": "/completion"}
    child_path = upstream.get(path, "/v1/chat/completions")
    arrived = threading.Event()
    fake_child.answer("POST", child_path, never_answers(stuck, arrived))
    waiting = Exchange(app, path, payload)
    await reached(arrived)
    assert in_flight(running) == 1
    await waiting.hang_up()
    assert in_flight(running) == 0
    # The one slot is free again: the next request is served.
    fake_child.answer("POST", "/v1/completions", Reply(json={"choices": [{"text": "ok"}]}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        served = await client.post("/v1/completions", json=COMPLETION)
    assert served.status_code == 200


@pytest.mark.anyio
async def test_requests_queued_behind_a_silent_child_get_a_503_within_the_queue_bound(
    app: FastAPI, running: State, fake_child: FakeChild, stuck: threading.Event
) -> None:
    arrived = threading.Event()
    silent = Stream([], end="hold")  # a head, then not a single token
    fake_child.answer("POST", "/v1/completions", arriving(silent, arrived))
    holder = Exchange(app, "/v1/completions", COMPLETION | {"stream": True})
    await reached(arrived)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        v1 = await client.post("/v1/completions", json=COMPLETION)
        api = await client.post("/api/generate", json=COMPLETION)
    assert v1.status_code == 503 and v1.headers["retry-after"]
    assert v1.json()["error"]["code"] == "queue_timeout"
    assert api.status_code == 503 and api.headers["retry-after"]
    assert "no free slot" in api.json()["detail"]
    await holder.hang_up()
    assert await asyncio.to_thread(fake_child.hung_up.wait, PATIENCE_S)
    assert (
        in_flight(running) == 0
        and running.manager.model(running.catalog.resolve(MODEL)).queued == 0
    )
