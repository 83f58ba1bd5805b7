"""/api chat, generate and embeddings translation: literal bodies in, literal dicts out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from supervisor.errors import BadRequest
from supervisor.surfaces.api import chat as api_chat

USER = {"role": "user", "content": "Hello!"}


def bad(call: Any, *args: Any) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        call(*args)
    return caught.value


def data_line(event: bytes) -> dict[str, Any]:
    text = event.decode("utf-8")
    assert text.startswith("data: ")
    assert text.endswith("\n\n")
    assert text.count("\n") == 2
    parsed: dict[str, Any] = json.loads(text[len("data: ") : -2])
    return parsed


# --- options --------------------------------------------------------------------------------------


def test_options_absent_or_null_are_empty() -> None:
    assert api_chat.parse_options(None) == {}
    assert api_chat.parse_options({}) == {}
    assert api_chat.parse_options({"temperature": None, "stop": None}) == {}


def test_options_all_known_keys_pass_unrenamed() -> None:
    options = {
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 40,
        "max_tokens": 512,
        "stop": ["\n\n", "User:"],
        "repeat_penalty": 1.1,
    }
    assert api_chat.parse_options(options) == options


def test_options_stop_single_string_becomes_list() -> None:
    assert api_chat.parse_options({"stop": "END"}) == {"stop": ["END"]}
    assert api_chat.parse_options({"stop": []}) == {"stop": []}


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": 0},
        {"temperature": 2},
        {"temperature": 2.0},
        {"temperature": 0.0},
        {"top_p": 0},
        {"top_p": 1},
        {"top_k": 0},
        {"max_tokens": 1},
        {"repeat_penalty": 0},
        {"repeat_penalty": 100.5},
    ],
)
def test_options_range_edges_accepted(options: dict[str, Any]) -> None:
    assert api_chat.parse_options(options) == options


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"temperature": 2.01}, "options.temperature"),
        ({"temperature": -0.01}, "options.temperature"),
        ({"temperature": True}, "options.temperature"),
        ({"temperature": "0.7"}, "options.temperature"),
        ({"temperature": float("nan")}, "options.temperature"),
        ({"top_p": 1.01}, "options.top_p"),
        ({"top_p": -1}, "options.top_p"),
        ({"top_p": False}, "options.top_p"),
        ({"top_k": -1}, "options.top_k"),
        ({"top_k": 1.5}, "options.top_k"),
        ({"top_k": 40.0}, "options.top_k"),
        ({"top_k": True}, "options.top_k"),
        ({"max_tokens": 0}, "options.max_tokens"),
        ({"max_tokens": -5}, "options.max_tokens"),
        ({"max_tokens": "100"}, "options.max_tokens"),
        ({"max_tokens": False}, "options.max_tokens"),
        ({"repeat_penalty": -0.1}, "options.repeat_penalty"),
        ({"repeat_penalty": float("inf")}, "options.repeat_penalty"),
        ({"repeat_penalty": True}, "options.repeat_penalty"),
        ({"stop": 5}, "options.stop"),
        ({"stop": ["ok", 5]}, "options.stop"),
        ({"stop": {"a": "b"}}, "options.stop"),
        ({"seed": 42}, "options.seed"),
        ({"num_ctx": None}, "options.num_ctx"),
    ],
)
def test_options_rejected_with_param(options: dict[str, Any], param: str) -> None:
    error = bad(api_chat.parse_options, options)
    assert error.param == param
    assert error.status_code == 400
    assert param in error.message


def test_options_unknown_key_named() -> None:
    error = bad(api_chat.parse_options, {"temperature": 0.5, "mirostat": 2})
    assert error.param == "options.mirostat"
    assert "mirostat" in error.message


@pytest.mark.parametrize("options", [[], "hot", 1, True, [{"temperature": 1}]])
def test_options_not_an_object(options: object) -> None:
    assert bad(api_chat.parse_options, options).param == "options"


# --- messages ---------------------------------------------------------------------------------


def test_messages_keep_role_and_content_only() -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!", "name": "bob"},
        {"role": "assistant", "content": ""},
    ]
    assert api_chat.parse_messages(messages) == (
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": ""},
    )


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (None, "messages"),
        ([], "messages"),
        ({"role": "user", "content": "hi"}, "messages"),
        ("hi", "messages"),
        (["hi"], "messages[0]"),
        ([USER, {"role": "tool", "content": "x"}], "messages[1].role"),
        ([{"role": "User", "content": "x"}], "messages[0].role"),
        ([{"content": "x"}], "messages[0].role"),
        ([{"role": 1, "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "text", "text": "x"}]}], "messages[0].content"),
    ],
)
def test_messages_rejected(messages: object, param: str) -> None:
    assert bad(api_chat.parse_messages, messages).param == param


# --- chat -------------------------------------------------------------------------------------


def test_parse_chat_request_full() -> None:
    body = {
        "model": "llama-3-8b",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            USER,
        ],
        "session_id": "optional-session-id",
        "stream": True,
        "options": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 512},
    }
    assert api_chat.parse_chat_request(body) == api_chat.ChatRequest(
        model="llama-3-8b",
        messages=({"role": "system", "content": "You are a helpful assistant."}, USER),
        session_id="optional-session-id",
        stream=True,
        options={"temperature": 0.7, "top_p": 0.9, "max_tokens": 512},
    )


def test_parse_chat_request_defaults() -> None:
    assert api_chat.parse_chat_request({"messages": [USER]}) == api_chat.ChatRequest(
        model=None, messages=(USER,), session_id=None, stream=False, options={}
    )
    request = api_chat.parse_chat_request({"messages": [USER], "model": "", "session_id": None})
    assert (request.model, request.session_id) == (None, None)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": [USER], "model": 3}, "model"),
        ({"messages": [USER], "stream": "yes"}, "stream"),
        ({"messages": [USER], "session_id": ""}, "session_id"),
        ({"messages": [USER], "session_id": 123}, "session_id"),
        ({"messages": [USER], "options": []}, "options"),
        ({"messages": [USER], "options": {"temperature": 3}}, "options.temperature"),
    ],
)
def test_parse_chat_request_rejected(body: dict[str, Any], param: str) -> None:
    assert bad(api_chat.parse_chat_request, body).param == param


def test_chat_upstream_body() -> None:
    messages = (USER,)
    assert api_chat.chat_upstream_body(messages, {"temperature": 0.7, "top_k": 40}, False) == {
        "messages": [{"role": "user", "content": "Hello!"}],
        "temperature": 0.7,
        "top_k": 40,
        "stream": False,
    }
    assert api_chat.chat_upstream_body(messages, {}, True) == {
        "messages": [{"role": "user", "content": "Hello!"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_chat_reply() -> None:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1705320000,
        "model": "llama-3-8b",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you?"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18},
    }
    assert api_chat.chat_reply(completion, "123e4567-e89b-12d3-a456-426614174000") == {
        "message": {"role": "assistant", "content": "Hello! How can I help you?"},
        "session_id": "123e4567-e89b-12d3-a456-426614174000",
        "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18},
    }


def test_chat_reply_null_content_and_missing_usage() -> None:
    completion = {"choices": [{"message": {"role": "assistant", "content": None}}]}
    assert api_chat.chat_reply(completion, "s") == {
        "message": {"role": "assistant", "content": ""},
        "session_id": "s",
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    partial = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    assert api_chat.chat_reply(partial, "s")["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
    }


# --- generate ---------------------------------------------------------------------------------


def test_parse_generate_request() -> None:
    body = {
        "model": "llama-3-8b",
        "prompt": "Once upon a time",
        "stream": False,
        "options": {"temperature": 0.8, "max_tokens": 100},
    }
    assert api_chat.parse_generate_request(body) == api_chat.GenerateRequest(
        model="llama-3-8b",
        prompt="Once upon a time",
        stream=False,
        options={"temperature": 0.8, "max_tokens": 100},
    )
    assert api_chat.parse_generate_request({"prompt": "x"}) == api_chat.GenerateRequest(
        model=None, prompt="x", stream=False, options={}
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": "x", "options": {"max_tokens": 0}}, "options.max_tokens"),
        ({"prompt": "x", "stream": 1}, "stream"),
    ],
)
def test_parse_generate_request_rejected(body: dict[str, Any], param: str) -> None:
    assert bad(api_chat.parse_generate_request, body).param == param


def test_generate_upstream_body() -> None:
    assert api_chat.generate_upstream_body("Once", {"stop": ["\n"]}, False) == {
        "prompt": "Once",
        "stop": ["\n"],
        "stream": False,
    }
    assert api_chat.generate_upstream_body("Once", {}, True) == {
        "prompt": "Once",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_generate_reply() -> None:
    completion = {
        "object": "text_completion",
        "choices": [{"index": 0, "text": ", in a land far away...", "finish_reason": "length"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 10, "total_tokens": 14},
    }
    assert api_chat.generate_reply(completion) == {
        "text": ", in a land far away...",
        "usage": {"prompt_tokens": 4, "completion_tokens": 10, "total_tokens": 14},
    }


# --- embeddings -------------------------------------------------------------------------------


def test_parse_embeddings_request() -> None:
    body = {"model": "llama-3-8b", "input": "Hello world"}
    assert api_chat.parse_embeddings_request(body) == ("llama-3-8b", "Hello world")
    assert api_chat.parse_embeddings_request({"input": ["a", "b"]}) == (None, ["a", "b"])


@pytest.mark.parametrize(
    "body", [{}, {"input": None}, {"input": []}, {"input": ["a", 1]}, {"input": 7}]
)
def test_parse_embeddings_request_rejected(body: dict[str, Any]) -> None:
    assert bad(api_chat.parse_embeddings_request, body).param == "input"


def test_embeddings_upstream_body() -> None:
    assert api_chat.embeddings_upstream_body("Hello world") == {"input": "Hello world"}
    assert api_chat.embeddings_upstream_body(["a", "b"]) == {"input": ["a", "b"]}


EMBEDDINGS = {
    "object": "list",
    "model": "whatever-llama-server-says",
    "data": [
        {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]},
        {"object": "embedding", "index": 0, "embedding": [0.1, -0.2]},
    ],
    "usage": {"prompt_tokens": 4, "total_tokens": 4},
}


def test_embeddings_reply_single() -> None:
    single = {"data": [{"object": "embedding", "index": 0, "embedding": [0.123, -0.456]}]}
    assert api_chat.embeddings_reply(single, "llama-3-8b", True) == {
        "embedding": [0.123, -0.456],
        "model": "llama-3-8b",
    }


def test_embeddings_reply_list_in_index_order() -> None:
    assert api_chat.embeddings_reply(EMBEDDINGS, "llama-3-8b", False) == {
        "embeddings": [[0.1, -0.2], [0.3, 0.4]],
        "model": "llama-3-8b",
    }


# --- streams ----------------------------------------------------------------------------------


def test_stream_text_chat_chunks() -> None:
    role_only = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}],
    }
    role_no_content = {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    empty = {"choices": [{"index": 0, "delta": {"content": ""}}]}
    text = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}],
    }
    finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    assert api_chat.stream_text(role_only) is None
    assert api_chat.stream_text(role_no_content) is None
    assert api_chat.stream_text(empty) is None
    assert api_chat.stream_text(text) == "Hello"
    assert api_chat.stream_text(finish) is None


def test_stream_text_completion_chunks() -> None:
    chunk = {
        "object": "text_completion",
        "choices": [{"index": 0, "text": " upon", "logprobs": None, "finish_reason": None}],
    }
    assert api_chat.stream_text(chunk) == " upon"
    assert api_chat.stream_text({"choices": [{"index": 0, "text": None}]}) is None


def test_stream_usage_only_chunk() -> None:
    chunk = {
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18},
    }
    assert api_chat.stream_text(chunk) is None
    assert api_chat.stream_usage(chunk) == {
        "prompt_tokens": 10,
        "completion_tokens": 8,
        "total_tokens": 18,
    }
    assert api_chat.stream_usage({"choices": [{"delta": {"content": "x"}}]}) is None
    assert api_chat.stream_usage({"choices": [], "usage": None}) is None


def test_token_event_bytes() -> None:
    assert api_chat.token_event("Hello") == b'data: {"token":"Hello","done":false}\n\n'
    event = api_chat.token_event('café "ok"\n')
    assert data_line(event) == {"token": 'café "ok"\n', "done": False}
    assert "café".encode() in event


def test_chat_done_event() -> None:
    sid = "123e4567-e89b-12d3-a456-426614174000"
    event = api_chat.chat_done_event(sid, "Hello! How can I help you?", None)
    assert event == (
        b'data: {"done":true,"session_id":"123e4567-e89b-12d3-a456-426614174000",'
        b'"full_text":"Hello! How can I help you?"}\n\n'
    )
    usage = {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}
    assert data_line(api_chat.chat_done_event(sid, "Hi", usage)) == {
        "done": True,
        "session_id": sid,
        "full_text": "Hi",
        "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18},
    }


def test_generate_done_event() -> None:
    assert data_line(api_chat.generate_done_event("Once upon", None)) == {
        "done": True,
        "full_text": "Once upon",
    }
    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    assert data_line(api_chat.generate_done_event("", usage)) == {
        "done": True,
        "full_text": "",
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
    }


def test_error_event() -> None:
    event = api_chat.error_event("Model 'x' failed")
    assert event == b'data: {"error":"Model \'x\' failed","done":true}\n\n'
    assert data_line(event) == {"error": "Model 'x' failed", "done": True}
