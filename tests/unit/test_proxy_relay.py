"""The gateway's relay to a child over a real socket (a FakeChild server): what the child sees
of connections, which no mocked transport can show."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_child import DROP, Answer, FakeChild, Reply, Request, Stream
from fakes import FakeFactory
from fastapi import FastAPI
from served import client_of
from starlette.types import Message

from supervisor.app import create_app
from supervisor.config import Settings

MODEL = "tiny.Q4_1"
CHAT = "/v1/chat/completions"
MakeGGUF = Callable[..., Path]
PATIENCE_S = 10.0  # a bound on waits that should end at once, so a bug fails instead of hanging


def chunk(text: str) -> bytes:
    return f"data: {json.dumps({'choices': [{'delta': {'content': text}}]})}\n\n".encode()


@pytest.fixture
def settings(tmp_path: Path, make_gguf: MakeGGUF) -> Settings:
    make_gguf(f"models/{MODEL}.gguf")
    return Settings(
        models_dirs=[tmp_path / "models"],
        llama_server=Path(sys.executable),
        data_dir=tmp_path / "data",
    )


@pytest.fixture
def app(settings: Settings, fake_child: FakeChild) -> FastAPI:
    return create_app(settings, factory=FakeFactory(base_url=fake_child.url))


@pytest.fixture(params=["asgi", "lane"])
def client(
    request: pytest.FixtureRequest, app: FastAPI, settings: Settings
) -> Iterator[httpx.Client]:
    """Both ways a relayed POST is served: the fast lane over ASGI, and the relay lane over a
    socket."""
    with client_of(app, settings, request.param) as http_client:
        yield http_client


def test_sequential_requests_share_one_child_connection(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    answers: Iterator[Answer] = iter(
        [Reply(json={"choices": []}), Stream([chunk("hi")]), Reply(json={})]
    )
    fake_child.answer("POST", CHAT, lambda request: next(answers))
    assert client.post(CHAT, json={"model": MODEL}).status_code == 200
    assert client.post(CHAT, json={"model": MODEL, "stream": True}).text == chunk("hi").decode()
    assert client.post(CHAT, json={"model": MODEL}).status_code == 200
    assert len({r.connection for r in fake_child.received("POST", CHAT)}) == 1


def test_a_kept_alive_connection_the_child_dropped_costs_no_request(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    """llama-server closes kept-alive connections without a Connection: close; a request sent
    on one just then is never answered there, and goes again on a fresh connection."""
    seen: list[Request] = []

    def answer(request: Request) -> Answer:
        seen.append(request)
        return DROP if len(seen) == 2 else Reply(json={"n": len(seen)})

    fake_child.answer("POST", CHAT, answer)
    body = json.dumps({"model": MODEL, "messages": []}).encode()
    assert client.post(CHAT, content=body).json() == {"n": 1}
    assert client.post(CHAT, content=body).json() == {"n": 3}
    assert [r.body for r in seen] == [body] * 3
    assert seen[1].connection == seen[0].connection  # reused, then dropped by the child
    assert seen[2].connection != seen[0].connection


@pytest.mark.anyio
async def test_a_client_hanging_up_mid_stream_closes_the_child_connection(
    app: FastAPI, fake_child: FakeChild
) -> None:
    """That is how llama-server learns to stop generating and free the slot."""
    fake_child.answer("POST", CHAT, Stream([chunk("Hel")], end="hold"))
    async with app.router.lifespan_context(app):
        sent = await hang_up_after_first_piece(app, CHAT, {"model": MODEL, "stream": True})
        assert await asyncio.to_thread(fake_child.hung_up.wait, PATIENCE_S)
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == chunk("Hel")


async def hang_up_after_first_piece(
    app: FastAPI, path: str, payload: dict[str, Any]
) -> list[Message]:
    """POST ``payload`` to the app as an ASGI server would, and disconnect as soon as the
    first piece of the answer's body arrives (TestClient only disconnects once the app is
    done); the messages the app sent."""
    body = json.dumps(payload).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"gateway.test")],
        "client": ("127.0.0.1", 50000),
        "server": ("gateway.test", 80),
    }
    requested = False
    gone = asyncio.Event()
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message.get("body"):
            gone.set()

    await asyncio.wait_for(app(scope, receive, send), PATIENCE_S)
    return sent


def test_a_stream_carries_each_header_once_and_none_of_the_childs_cors(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    """llama-server sends its own X-Accel-Buffering and CORS headers with a stream."""
    headers = {
        "Content-Type": "text/event-stream",
        "X-Accel-Buffering": "no",
        "Cache-Control": "no-cache",
        "Access-Control-Allow-Origin": "*",
        "X-Child": "1",
    }
    fake_child.answer("POST", CHAT, Stream([chunk("hi")], headers=headers))
    answer = client.post(CHAT, json={"model": MODEL, "stream": True})
    names = [name for name, _ in answer.headers.multi_items()]
    assert names.count("x-accel-buffering") == 1
    assert names.count("cache-control") == 1
    assert "access-control-allow-origin" not in names
    assert answer.headers["x-child"] == "1"
    assert answer.text == chunk("hi").decode()
