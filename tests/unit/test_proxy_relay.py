"""The gateway's relay to a child over a real socket (a FakeChild server): what the child sees
of connections, which no mocked transport can show."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_child import DROP, Answer, FakeChild, Reply, Request, Stream
from fakes import FakeFactory
from fastapi import FastAPI
from fastapi.testclient import TestClient
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
def app(tmp_path: Path, make_gguf: MakeGGUF, fake_child: FakeChild) -> FastAPI:
    make_gguf(f"models/{MODEL}.gguf")
    settings = Settings(
        models_dirs=[tmp_path / "models"],
        llama_server=Path(sys.executable),
        data_dir=tmp_path / "data",
    )
    return create_app(settings, factory=FakeFactory(base_url=fake_child.url))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def test_sequential_requests_share_one_child_connection(
    client: TestClient, fake_child: FakeChild
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
    client: TestClient, fake_child: FakeChild
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
