"""How much of a session's history /api/chat sends: what fits the context of one slot of the
child that answers (its own --parallel and --ctx-size, as launched), less room for the reply."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_child import FakeChild, Reply
from fakes import FakeFactory, make_entry
from fastapi.testclient import TestClient
from served import MakeSettings

from supervisor.app import create_app
from supervisor.children.argv import context_size, slot_context
from supervisor.children.spec import LoadParams
from supervisor.config import ModelSettings, Settings

MODEL = "tiny.Q4_1"
MakeGGUF = Callable[..., Path]
TURN = "x" * 2000  # about 500 tokens by the sessions' estimate
Open = Callable[..., TestClient]


@pytest.fixture
def open_client(
    make_gguf: MakeGGUF, make_settings: MakeSettings, factory: FakeFactory, fake_child: FakeChild
) -> Iterator[Open]:
    make_gguf(f"models/{MODEL}.gguf", ctx=2048)
    reply = {"choices": [{"message": {"role": "assistant", "content": "ok"}}]}
    fake_child.answer("POST", "/v1/chat/completions", Reply(json=reply))
    clients: list[TestClient] = []

    def open_one(**overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(**overrides), factory=factory))
        clients.append(client.__enter__())
        return client

    yield open_one
    for client in reversed(clients):
        client.__exit__(None, None, None)


def sent_history(client: TestClient, fake_child: FakeChild) -> list[str]:
    """Two long turns on one session: the contents of the messages the second one sent."""
    first = client.post("/api/chat", json={"model": MODEL, "messages": [user(TURN)]})
    assert first.status_code == 200
    session_id = first.json()["session_id"]
    second = {"session_id": session_id, "messages": [user(TURN + "!")]}
    assert client.post("/api/chat", json=second).status_code == 200
    messages = fake_child.received("POST", "/v1/chat/completions")[-1].json()["messages"]
    return [m["content"] for m in messages]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def test_a_models_own_parallel_sets_its_slots_context(
    open_client: Open, fake_child: FakeChild, factory: FakeFactory
) -> None:
    """4096 tokens in one slot hold the whole history; the global 4 slots would have left
    1024 each, room for the new turn alone."""
    own = ModelSettings(file=f"{MODEL}.gguf", parallel=1)
    client = open_client(ctx_size=4096, parallel=4, models=[own])
    assert sent_history(client, fake_child) == [TURN, "ok", TURN + "!"]
    argv = factory.made[-1].argv
    assert argv[argv.index("--parallel") + 1] == "1"


def test_a_loaded_childs_context_bounds_the_history(
    open_client: Open, fake_child: FakeChild, factory: FakeFactory
) -> None:
    """Loaded with n_ctx 1024 over 2 slots, a slot holds 512 tokens: the new turn alone goes.
    The model's trained 2048 per slot (no --ctx-size) would have held the whole history."""
    client = open_client(parallel=2)
    loaded = client.post(f"/api/v2/models/{MODEL}/load", json={"n_ctx": 1024})
    assert loaded.status_code == 200
    assert sent_history(client, fake_child) == [TURN + "!"]
    argv = factory.made[-1].argv
    assert argv[argv.index("--ctx-size") + 1] == "1024"


def test_without_a_ctx_size_each_slot_has_the_models_trained_context(
    open_client: Open, fake_child: FakeChild
) -> None:
    """llama-server gives each slot the trained context then (models/memory.py)."""
    client = open_client(parallel=4)
    assert sent_history(client, fake_child) == [TURN, "ok", TURN + "!"]


def test_a_slots_context_is_the_ctx_size_split_or_the_trained_context() -> None:
    entry = make_entry()  # trained on 2048
    assert slot_context(entry, 4096, 4) == 1024
    assert slot_context(entry, None, 4) == slot_context(entry, 0, 4) == 2048
    own = make_entry(overrides=ModelSettings(file=f"{MODEL}.gguf", ctx_size=8192, parallel=2))
    settings = Settings(ctx_size=4096, parallel=4)
    assert context_size(settings, own, None) == 8192
    assert context_size(settings, own, LoadParams(n_ctx=512)) == 512
    assert context_size(settings, make_entry(), None) == 4096
