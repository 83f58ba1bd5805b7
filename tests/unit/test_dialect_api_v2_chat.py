"""The /api/v2 chat translation (/api/v2/chat/{model_id} and /stream): literal dicts."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor.errors import BadRequest
from supervisor.surfaces.api_v2 import chat as v2

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
USER = {"role": "user", "content": "What is the capital of France?"}


def test_seed_body_maps_n_predict_to_max_tokens() -> None:
    body = {"messages": [SYSTEM, USER], "temperature": 0.7, "top_p": 0.95, "n_predict": 100}
    assert v2.parse_v2_chat(body, False) == {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 100,
        "stream": False,
    }


def test_stream_route_decides_stream() -> None:
    body = {"messages": [USER], "temperature": 0.8, "stream": False}
    assert v2.parse_v2_chat(body, True) == {
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0.8,
        "stream": True,
    }
    assert v2.parse_v2_chat({"messages": [USER], "stream": True}, False)["stream"] is False


def test_n_predict_unlimited_or_absent_sends_no_max_tokens() -> None:
    expected = {
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "stream": False,
    }
    assert v2.parse_v2_chat({"messages": [USER], "n_predict": -1}, False) == expected
    assert v2.parse_v2_chat({"messages": [USER]}, False) == expected
    assert v2.parse_v2_chat({"messages": [USER], "n_predict": None}, False) == expected


def test_n_predict_decides_over_passed_max_tokens() -> None:
    body = {"messages": [USER], "max_tokens": 50, "n_predict": 1}
    assert v2.parse_v2_chat(body, False)["max_tokens"] == 1
    body = {"messages": [USER], "max_tokens": 50, "n_predict": -1}
    assert "max_tokens" not in v2.parse_v2_chat(body, False)
    body = {"messages": [USER], "max_tokens": 50}
    assert v2.parse_v2_chat(body, False)["max_tokens"] == 50


def test_other_keys_pass_through_model_ignored() -> None:
    body = {
        "model": "other.gguf",
        "messages": [USER],
        "top_k": 40,
        "seed": 7,
        "stop": ["\n"],
        "repeat_penalty": 1.1,
        "grammar": None,
    }
    assert v2.parse_v2_chat(body, False) == {
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "top_k": 40,
        "seed": 7,
        "stop": ["\n"],
        "repeat_penalty": 1.1,
        "grammar": None,
        "stream": False,
    }


@pytest.mark.parametrize(
    "body",
    [
        {"temperature": 0},
        {"temperature": 2},
        {"top_p": 0},
        {"top_p": 1},
        {"n_predict": 1},
        {"temperature": None, "top_p": None},
    ],
)
def test_edges_accepted(body: dict[str, Any]) -> None:
    v2.parse_v2_chat({"messages": [USER], **body}, False)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": 2.01}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": False}, "top_p"),
        ({"n_predict": 0}, "n_predict"),
        ({"n_predict": -2}, "n_predict"),
        ({"n_predict": 1.5}, "n_predict"),
        ({"n_predict": True}, "n_predict"),
        ({"n_predict": "100"}, "n_predict"),
    ],
)
def test_out_of_range_rejected(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        v2.parse_v2_chat({"messages": [USER], **body}, False)
    assert caught.value.param == param
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [USER, {"role": "user", "content": 1}]}, "messages[1].content"),
    ],
)
def test_messages_validated(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        v2.parse_v2_chat(body, False)
    assert caught.value.param == param


def test_v2_reply_names_the_model_file() -> None:
    completion = {
        "id": "chat-12345",
        "object": "chat.completion",
        "created": 1705320000,
        "model": "gpt-3.5-turbo",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "The capital of France is Paris."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 33, "completion_tokens": 7, "total_tokens": 40},
    }
    assert v2.v2_reply(completion, "llama-2-7b-chat.gguf") == {
        "id": "chat-12345",
        "object": "chat.completion",
        "created": 1705320000,
        "model": "llama-2-7b-chat.gguf",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "The capital of France is Paris."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 33, "completion_tokens": 7, "total_tokens": 40},
    }
    assert completion["model"] == "gpt-3.5-turbo"
