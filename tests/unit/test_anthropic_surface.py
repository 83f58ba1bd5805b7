"""Anthropic Messages (/v1/messages): the dialect's error shape as pure functions, then the
surface over both ways a request is served (the fast lane over ASGI, the relay lane over a
socket): the gateway's own errors and the child's in Anthropic's shape, keys in
``x-api-key``, streams passed through, a broken stream's ``event: error``, token metrics."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from error_format import assert_error_format, error_message
from fake_child import FakeChild, Reply, Stream
from metrics_read import token_counts
from pydantic import SecretStr
from served import Serve
from sse import last_event, typed_event

from supervisor.errors import BackendError, ModelNotFound, QueueFull
from supervisor.surfaces.anthropic import dialect as anthropic

MODEL = "tiny.Q4_1"
MESSAGES = "/v1/messages"
MakeGGUF = Callable[..., Path]
HELLO = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}


# -- the dialect's pure functions ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
        (405, "invalid_request_error"),  # any other 4xx
        (504, "api_error"),  # any other 5xx
    ],
)
def test_each_status_has_anthropics_error_type(status: int, kind: str) -> None:
    assert anthropic.error_type(status) == kind


def test_the_gateways_errors_take_anthropics_shape() -> None:
    assert anthropic.error_body(ModelNotFound("x")) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "Model not found: x"},
    }
    assert anthropic.error_body(QueueFull("busy"))["error"]["type"] == "rate_limit_error"
    event = anthropic.error_event(BackendError("it broke"))
    assert event.startswith(b"event: error\ndata: ") and event.endswith(b"\n\n")
    data = json.loads(event.removeprefix(b"event: error\ndata: "))
    assert data == {"type": "error", "error": {"type": "api_error", "message": "it broke"}}


def test_a_childs_openai_shaped_error_is_reshaped() -> None:
    child = {
        "error": {"code": 400, "message": "bad 'temperature'", "type": "invalid_request_error"}
    }
    reshaped = json.loads(anthropic.child_error(400, json.dumps(child).encode()))
    assert reshaped == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad 'temperature'"},
    }
    server = json.loads(anthropic.child_error(500, b'{"error": {"message": "oom"}}'))
    assert server["error"] == {"type": "api_error", "message": "oom"}


@pytest.mark.parametrize("content", [b"Internal Server Error", b"", b"[1, 2]", b'{"error": "x"}'])
def test_a_child_error_without_a_message_is_told_by_its_status(content: bytes) -> None:
    reshaped = json.loads(anthropic.child_error(503, content))
    assert reshaped == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "the model server answered 503"},
    }


def test_an_error_already_in_anthropics_shape_passes_unchanged() -> None:
    # Spaced and ordered as the child wrote it: the very bytes come back.
    own = b'{"type": "error",  "error": {"message": "too long", "type": "invalid_request_error"}}'
    assert anthropic.child_error(400, own) is own


# -- over both ways -----------------------------------------------------------------------


@pytest.fixture
def serve(serve: Serve, make_gguf: MakeGGUF) -> Serve:
    """conftest's ``serve`` (and so its ``client``), with this file's model in place."""
    make_gguf(f"models/{MODEL}.gguf")
    return serve


def assert_anthropic_error(reply: httpx.Response, status: int, kind: str) -> str:
    assert reply.status_code == status, reply.text
    assert_error_format(MESSAGES, reply.json())
    assert reply.json()["error"]["type"] == kind, reply.text
    return error_message(MESSAGES, reply.json())


def test_an_unknown_model_is_a_404_not_found_error(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    for path in (MESSAGES, "/v1/messages/count_tokens"):
        reply = client.post(path, json={**HELLO, "model": "nope"})
        assert assert_anthropic_error(reply, 404, "not_found_error") == "Model not found: nope"
    assert fake_child.requests == []


def test_an_unknown_path_or_method_under_messages_answers_in_anthropics_shape(
    client: httpx.Client,
) -> None:
    assert_anthropic_error(client.post(f"{MESSAGES}/batches", json=HELLO), 404, "not_found_error")
    assert_anthropic_error(client.get(MESSAGES), 405, "invalid_request_error")


def test_bad_json_is_a_400_invalid_request_error(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    reply = client.post(
        MESSAGES, content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in assert_anthropic_error(reply, 400, "invalid_request_error")
    assert fake_child.requests == []


def test_a_childs_own_error_comes_back_in_anthropics_shape(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    child = {"error": {"code": 400, "message": "x", "type": "invalid_request_error"}}
    fake_child.answer("POST", MESSAGES, Reply(400, json=child))
    reply = client.post(MESSAGES, json=HELLO)
    assert assert_anthropic_error(reply, 400, "invalid_request_error") == "x"
    assert len(fake_child.received("POST", MESSAGES)) == 1


def test_keys_are_checked_and_x_api_key_is_accepted(serve: Serve, fake_child: FakeChild) -> None:
    fake_child.answer("POST", MESSAGES, Reply(json={"type": "message", "content": []}))
    with serve(api_keys=[SecretStr("sk-ant-1")]) as client:
        missing = client.post(MESSAGES, json=HELLO)
        wrong = client.post(MESSAGES, json=HELLO, headers={"x-api-key": "sk-ant-2"})
        right = client.post(MESSAGES, json=HELLO, headers={"x-api-key": "sk-ant-1"})
    assert "Missing API key" in assert_anthropic_error(missing, 401, "authentication_error")
    assert assert_anthropic_error(wrong, 401, "authentication_error") == "Invalid API key"
    assert right.status_code == 200 and right.json() == {"type": "message", "content": []}
    [seen] = fake_child.received("POST", MESSAGES)
    assert "sk-ant-1" not in str(seen.headers)  # the client's key stays at the gateway


def test_a_body_over_the_limit_is_a_413_request_too_large(
    serve: Serve, fake_child: FakeChild
) -> None:
    with serve(max_body_bytes=1000) as client:
        reply = client.post(MESSAGES, json={**HELLO, "system": "x" * 2000})
    assert_anthropic_error(reply, 413, "request_too_large")
    assert fake_child.requests == []


def stream_events(usage_in: dict[str, int], tokens_out: int) -> list[bytes]:
    """An Anthropic stream as llama-server writes it, one event a piece."""
    message = {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
               "model": MODEL, "usage": {**usage_in, "output_tokens": 0}}  # fmt: skip
    return [
        typed_event("message_start", {"type": "message_start", "message": message}),
        typed_event("content_block_start", {"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "text", "text": ""}}),
        typed_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": "Hello"}}),
        typed_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        typed_event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                              "usage": {"output_tokens": tokens_out}}),
        typed_event("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip


def test_a_stream_passes_through_byte_for_byte(client: httpx.Client, fake_child: FakeChild) -> None:
    pieces = stream_events({"input_tokens": 5}, 1)
    fake_child.answer("POST", MESSAGES, Stream(pieces))
    with client.stream("POST", MESSAGES, json={**HELLO, "stream": True}) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert reply.read() == b"".join(pieces)  # no data: [DONE] added, nothing changed


def test_a_child_dying_mid_stream_ends_it_with_an_error_event(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    pieces = stream_events({"input_tokens": 5}, 1)[:3]
    half = b'event: content_block_delta\ndata: {"type":"content_bl'
    fake_child.answer("POST", MESSAGES, Stream([*pieces, half], end="break"))
    reply = client.post(MESSAGES, json={**HELLO, "stream": True})
    assert reply.status_code == 200
    assert reply.content.startswith(b"".join(pieces) + half)
    name, data = last_event(reply.text)
    assert name == "error"
    assert data["type"] == "error" and data["error"]["type"] == "api_error"
    assert "backend failed during the stream" in data["error"]["message"]
    assert "[DONE]" not in reply.text  # chat's ending is no Anthropic event


def test_tokens_of_a_streamed_answer_are_counted_with_the_cached_ones(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    pieces = stream_events({"cache_read_input_tokens": 3, "input_tokens": 5}, 7)
    fake_child.answer("POST", MESSAGES, Stream(pieces))
    assert client.post(MESSAGES, json={**HELLO, "stream": True}).content == b"".join(pieces)
    # Input from message_start (cache read included), output from message_delta.
    assert token_counts(client, MODEL) == (8, 7)


def test_tokens_of_a_whole_answer_are_counted_with_the_cached_ones(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    usage = {"cache_read_input_tokens": 2, "input_tokens": 4, "output_tokens": 9}
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
              "content": [{"type": "text", "text": "Hello"}], "usage": usage}  # fmt: skip
    fake_child.answer("POST", MESSAGES, Reply(json=answer))
    assert client.post(MESSAGES, json=HELLO).json() == answer
    assert token_counts(client, MODEL) == (6, 9)
    fake_child.answer("POST", "/v1/messages/count_tokens", Reply(json={"input_tokens": 40}))
    counted = client.post("/v1/messages/count_tokens", json=HELLO)
    assert counted.json() == {"input_tokens": 40}
    assert token_counts(client, MODEL) == (6, 9)  # a count carries no usage: nothing more counted
