"""OpenAI Responses (/v1/responses) over both ways a request is served: typed events passed
through, a broken stream's ``event: error`` (no chat ``data: [DONE]``), token metrics from the
``usage`` of ``response.completed``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_child import FakeChild, Reply, Stream
from metrics_read import token_counts
from served import Serve
from sse import last_event, typed_event

from supervisor.errors import BackendError
from supervisor.surfaces.openai import responses

MODEL = "tiny.Q4_1"
RESPONSES = "/v1/responses"
MakeGGUF = Callable[..., Path]
ASK = {"model": MODEL, "input": "Hi"}


def sse(data: dict[str, Any]) -> bytes:
    return typed_event(data["type"], data)


def stream_events(usage: dict[str, Any]) -> list[bytes]:
    """A Responses stream as llama-server writes it; only the last event carries usage."""
    response = {"id": "resp_1", "object": "response", "status": "in_progress", "model": MODEL,
                "output": []}  # fmt: skip
    done = {**response, "status": "completed", "usage": usage}
    return [
        sse({"type": "response.created", "response": response}),
        sse({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
             "content_index": 0, "delta": "Hello"}),
        sse({"type": "response.completed", "response": done}),
    ]  # fmt: skip


@pytest.fixture
def client(serve: Serve, make_gguf: MakeGGUF) -> Iterator[httpx.Client]:
    make_gguf(f"models/{MODEL}.gguf")
    with serve() as http_client:
        yield http_client


def test_the_error_event_is_the_responses_apis_own() -> None:
    event = responses.error_event(BackendError("it broke"))
    assert event.startswith(b"event: error\ndata: ") and event.endswith(b"\n\n")
    assert json.loads(event.removeprefix(b"event: error\ndata: ")) == {
        "type": "error", "code": "backend_error", "message": "it broke", "param": None,
    }  # fmt: skip


@pytest.mark.parametrize("path", [RESPONSES, "/responses"])
def test_a_stream_passes_through_byte_for_byte(
    client: httpx.Client, fake_child: FakeChild, path: str
) -> None:
    pieces = stream_events({"input_tokens": 3, "output_tokens": 1, "total_tokens": 4})
    fake_child.answer("POST", path, Stream(pieces))
    with client.stream("POST", path, json={**ASK, "stream": True}) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert reply.read() == b"".join(pieces)  # no data: [DONE] added


def test_a_child_dying_mid_stream_ends_it_with_an_error_event(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    pieces = stream_events({"input_tokens": 3, "output_tokens": 1})[:2]
    half = b'event: response.output_text.delta\ndata: {"type":"resp'
    fake_child.answer("POST", RESPONSES, Stream([*pieces, half], end="break"))
    reply = client.post(RESPONSES, json={**ASK, "stream": True})
    assert reply.status_code == 200
    assert reply.content.startswith(b"".join(pieces) + half)
    name, error = last_event(reply.text)
    assert name == "error"
    assert error["type"] == "error" and error["code"] == "backend_error"
    assert "backend failed during the stream" in error["message"]
    assert "[DONE]" not in reply.text


def test_tokens_of_a_stream_are_read_from_response_completed(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    usage = {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17,
             "input_tokens_details": {"cached_tokens": 4}}  # fmt: skip
    fake_child.answer("POST", RESPONSES, Stream(stream_events(usage)))
    assert client.post(RESPONSES, json={**ASK, "stream": True}).status_code == 200
    # The Responses API's input_tokens already include the cached ones.
    assert token_counts(client, MODEL) == (12, 5)


def test_tokens_of_a_whole_answer_are_counted(client: httpx.Client, fake_child: FakeChild) -> None:
    usage = {"input_tokens": 6, "output_tokens": 2, "total_tokens": 8}
    answer = {"id": "resp_1", "object": "response", "status": "completed", "model": MODEL,
              "output": [], "usage": usage}  # fmt: skip
    fake_child.answer("POST", RESPONSES, Reply(json=answer))
    assert client.post(RESPONSES, json=ASK).json() == answer
    assert token_counts(client, MODEL) == (6, 2)
