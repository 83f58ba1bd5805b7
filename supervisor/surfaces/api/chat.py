"""The /api surface: chat, generate, embeddings. Pure functions.

Requests become bodies for llama-server's /v1 chat, completions and embeddings endpoints;
replies and stream chunks become the /api surface's shapes. Its option names are also
llama-server's (``top_k``, ``repeat_penalty`` as extensions), so options pass unrenamed; a
``null`` option is dropped, and ``stop`` (a string or strings) is always sent as a list.

The /api surface defines no event for a stream that fails once begun; we send
``{"error", "done": true}`` so a loop that stops at ``done`` stops, and one that looks for
``error`` finds it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from supervisor.errors import BadRequest
from supervisor.surfaces.chat_fields import parse_int, parse_messages, parse_number
from supervisor.surfaces.openai.dialect import requested_model, wants_stream

_USAGE_KEYS: tuple[str, ...] = ("prompt_tokens", "completion_tokens", "total_tokens")


@dataclass(frozen=True)
class ChatRequest:
    model: str | None
    messages: tuple[dict[str, str], ...]
    session_id: str | None
    stream: bool
    options: dict[str, Any]


@dataclass(frozen=True)
class GenerateRequest:
    model: str | None
    prompt: str
    stream: bool
    options: dict[str, Any]


def _parse_stop(value: object, param: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest(f"'{param}' must be a string or an array of strings", param=param)
    return list(value)


def parse_options(options: object) -> dict[str, Any]:
    """The /api surface's ``InferenceOptions``, validated; unknown keys are a 400 naming the key."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise BadRequest("'options' must be an object", param="options")
    for key in options:
        if key not in _OPTIONS:
            raise BadRequest(f"'options.{key}' is not a known option", param=f"options.{key}")
    return {
        key: _OPTIONS[key](value, f"options.{key}")
        for key, value in options.items()
        if value is not None
    }


_OPTIONS: dict[str, Callable[[object, str], Any]] = {
    "temperature": lambda value, param: parse_number(value, param, 0, 2),
    "top_p": lambda value, param: parse_number(value, param, 0, 1),
    "top_k": lambda value, param: parse_int(value, param, 0),
    "max_tokens": lambda value, param: parse_int(value, param, 1),
    "stop": _parse_stop,
    "repeat_penalty": lambda value, param: parse_number(value, param, 0),
}


def _session_id(body: dict[str, Any]) -> str | None:
    value = body.get("session_id")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest("'session_id' must be a non-empty string", param="session_id")
    return value


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    """``POST /api/chat``. ``stream`` defaults to false when absent."""
    return ChatRequest(
        model=requested_model(body),
        messages=parse_messages(body.get("messages")),
        session_id=_session_id(body),
        stream=wants_stream(body),
        options=parse_options(body.get("options")),
    )


def parse_generate_request(body: dict[str, Any]) -> GenerateRequest:
    """``POST /api/generate``."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise BadRequest("'prompt' is required and must be a string", param="prompt")
    return GenerateRequest(
        model=requested_model(body),
        prompt=prompt,
        stream=wants_stream(body),
        options=parse_options(body.get("options")),
    )


def parse_embeddings_request(body: dict[str, Any]) -> tuple[str | None, str | list[str]]:
    """``POST /api/embeddings``: the model, and ``input`` (a string or non-empty string list)."""
    text = body.get("input")
    if isinstance(text, str):
        return requested_model(body), text
    if isinstance(text, list) and text and all(isinstance(item, str) for item in text):
        return requested_model(body), list(text)
    message = "'input' is required and must be a string or a non-empty array of strings"
    raise BadRequest(message, param="input")


def _with_stream(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def chat_upstream_body(
    messages: Sequence[dict[str, str]], options: dict[str, Any], stream: bool
) -> dict[str, Any]:
    """The ``/v1/chat/completions`` body."""
    return _with_stream({"messages": [dict(m) for m in messages], **options}, stream)


def generate_upstream_body(prompt: str, options: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The ``/v1/completions`` body."""
    return _with_stream({"prompt": prompt, **options}, stream)


def embeddings_upstream_body(text: str | list[str]) -> dict[str, Any]:
    """The ``/v1/embeddings`` body."""
    return {"input": text}


def _first_choice(completion: dict[str, Any]) -> dict[str, Any]:
    choices = completion.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


def _usage(usage: object) -> dict[str, int]:
    """The three token counts; missing counts are 0, a missing total is the sum."""
    raw = usage if isinstance(usage, dict) else {}
    counts = {key: raw[key] for key in _USAGE_KEYS if isinstance(raw.get(key), int)}
    prompt = counts.get("prompt_tokens", 0)
    completion = counts.get("completion_tokens", 0)
    total = counts.get("total_tokens", prompt + completion)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def chat_reply(completion: dict[str, Any], session_id: str) -> dict[str, Any]:
    """The /api surface's non-streaming chat reply, from an OpenAI ``chat.completion``."""
    message = _first_choice(completion).get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return {
        "message": {"role": "assistant", "content": content if isinstance(content, str) else ""},
        "session_id": session_id,
        "usage": _usage(completion.get("usage")),
    }


def generate_reply(completion: dict[str, Any]) -> dict[str, Any]:
    """The /api surface's non-streaming generate reply, from an OpenAI ``text_completion``."""
    text = _first_choice(completion).get("text")
    return {"text": text if isinstance(text, str) else "", "usage": _usage(completion.get("usage"))}


def embeddings_reply(response: dict[str, Any], model: str, single: bool) -> dict[str, Any]:
    """``{"embedding", "model"}`` for a single string input, else ``{"embeddings", "model"}``."""
    data = [item for item in response.get("data") or [] if isinstance(item, dict)]
    data.sort(key=lambda item: item.get("index", 0))
    vectors = [item.get("embedding") for item in data]
    if single:
        return {"embedding": vectors[0] if vectors else [], "model": model}
    return {"embeddings": vectors, "model": model}


def stream_text(chunk: dict[str, Any]) -> str | None:
    """The text one OpenAI stream chunk carries (chat delta or completion text), if any."""
    choice = _first_choice(chunk)
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return text if isinstance(text, str) and text else None


def stream_usage(chunk: dict[str, Any]) -> dict[str, int] | None:
    """The token counts of the final chunk that ``include_usage`` asks for, if this is it."""
    usage = chunk.get("usage")
    return _usage(usage) if isinstance(usage, dict) else None


def _event(payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def token_event(text: str) -> bytes:
    return _event({"token": text, "done": False})


def _done_event(payload: dict[str, Any], usage: dict[str, int] | None) -> bytes:
    return _event({"done": True, **payload, **({"usage": usage} if usage is not None else {})})


def chat_done_event(session_id: str, full_text: str, usage: dict[str, int] | None) -> bytes:
    return _done_event({"session_id": session_id, "full_text": full_text}, usage)


def generate_done_event(full_text: str, usage: dict[str, int] | None) -> bytes:
    return _done_event({"full_text": full_text}, usage)


def error_event(message: str) -> bytes:
    """The last event of a stream that failed after it began (see the module docstring)."""
    return _event({"error": message, "done": True})
