"""The app end to end with fake children: routing, passthrough, SSE relay, error formats."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_child import FakeChild, Reply, Stream
from fakes import FakeFactory, Script
from fastapi.testclient import TestClient
from served import MakeSettings
from sse import DONE, event, sse_events

from supervisor.app import create_app

MakeGGUF = Callable[..., Path]


def chunk(text: str) -> bytes:
    return event({"object": "chat.completion.chunk", "choices": [{"delta": {"content": text}}]})


@pytest.fixture
def client(
    make_gguf: MakeGGUF, make_settings: MakeSettings, factory: FakeFactory
) -> Iterator[TestClient]:
    make_gguf("models/tiny.Q4_1.gguf")
    with TestClient(create_app(make_settings(), factory=factory)) as test_client:
        yield test_client


def test_health_and_root(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    root = client.get("/").json()
    assert root["status"] == "running"
    assert root["models_available"] == 1


def test_models_are_listed_by_stem_and_found_by_any_name(client: TestClient) -> None:
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == ["tiny.Q4_1"]
    assert client.get("/v1/models/tiny.Q4_1.gguf").json()["id"] == "tiny.Q4_1"
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_body_reaches_the_child_untouched_with_unknown_fields(
    client: TestClient, fake_child: FakeChild
) -> None:
    reply = {"object": "chat.completion", "choices": [{"message": {"content": "hi"}}]}
    fake_child.answer("POST", "/v1/chat/completions", Reply(json=reply))
    body = json.dumps(
        {"model": "tiny.Q4_1.gguf", "messages": [], "tools": [{"type": "function"}], "seed": 7}
    ).encode()
    response = client.post("/v1/chat/completions", content=body)
    assert response.status_code == 200
    assert response.json() == reply
    assert [r.body for r in fake_child.received("POST", "/v1/chat/completions")] == [body]


def test_child_errors_pass_through_with_their_status(
    client: TestClient, fake_child: FakeChild
) -> None:
    error = {"error": {"message": "bad n_probs"}}
    fake_child.answer("POST", "/v1/completions", Reply(400, json=error))
    response = client.post("/v1/completions", json={"model": "tiny.Q4_1", "prompt": "x"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "bad n_probs"


def test_sse_is_relayed_with_no_buffering_headers(
    client: TestClient, fake_child: FakeChild
) -> None:
    pieces = [chunk("Hel"), chunk("lo"), DONE]
    events = b"".join(pieces)
    fake_child.answer("POST", "/v1/chat/completions", Stream(pieces))
    with client.stream(
        "POST", "/v1/chat/completions", json={"model": "tiny.Q4_1", "stream": True}
    ) as response:
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.read() == events


def test_child_dying_mid_stream_ends_with_one_error_event_and_done(
    client: TestClient, fake_child: FakeChild
) -> None:
    # Two events, half of a third, then the connection drops (a child killed mid-stream).
    pieces = [chunk("Hel"), chunk("lo"), b'data: {"choi']
    fake_child.answer("POST", "/v1/chat/completions", Stream(pieces, end="break"))
    response = client.post("/v1/chat/completions", json={"model": "tiny.Q4_1", "stream": True})
    events = sse_events(response.text)
    assert events[:2] == [chunk("Hel").decode().strip(), chunk("lo").decode().strip()]
    error = json.loads(events[-2].strip().removeprefix("data: "))
    assert error["error"]["code"] == "backend_error"
    assert events[-1].strip() == "data: [DONE]"


def test_embeddings_go_to_an_embedding_child(
    client: TestClient, factory: FakeFactory, fake_child: FakeChild
) -> None:
    fake_child.answer("POST", "/v1/embeddings", Reply(json={"data": [{"embedding": [0.1]}]}))
    response = client.post("/v1/embeddings", json={"model": "tiny.Q4_1", "input": "x"})
    assert response.status_code == 200
    assert "--embeddings" in factory.made[-1].argv


def test_bad_input_gets_openai_errors_never_500(client: TestClient) -> None:
    cases = [
        (client.post("/v1/chat/completions", content=b"{nope"), 400, "invalid_request"),
        (client.post("/v1/chat/completions", content=b"[]"), 400, "invalid_request"),
        (client.post("/v1/chat/completions", json={"model": "x/../y"}), 404, "model_not_found"),
        (client.post("/v1/chat/completions", json={"model": 5}), 400, "invalid_request"),
        (client.get("/v1/chat/completions"), 405, "method_not_allowed"),
        (client.get("/v1/nothing-here"), 404, "not_found"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code


def test_no_model_named_and_none_loaded_is_a_503(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json={"messages": []})
    assert response.status_code == 503
    assert "retry-after" in response.headers


def test_api_surface_errors_use_detail(client: TestClient) -> None:
    response = client.get("/api/nothing")
    assert response.status_code == 404
    assert set(response.json()) == {"detail"}


def test_load_failure_is_a_503_carrying_the_child_output(
    make_gguf: MakeGGUF, make_settings: MakeSettings
) -> None:
    make_gguf("models/tiny.Q4_1.gguf")
    factory = FakeFactory([Script(fail_with=["llama_model_load: error loading model"])])
    with TestClient(create_app(make_settings(), factory=factory)) as client:
        response = client.post("/v1/chat/completions", json={"model": "tiny.Q4_1"})
    assert response.status_code == 503
    assert response.headers["retry-after"]
    error = response.json()["error"]
    assert error["code"] == "model_load_failed"
    assert "error loading model" in error["message"]
