"""The /api/v2 chat surface: ``/api/v2/chat/{model_id}`` and ``/stream``. Pure.

The /api/v2 chat body is llama.cpp-flavoured OpenAI: ``messages``, ``temperature``, ``top_p`` and
``n_predict``. We validate those and send llama-server's ``/v1/chat/completions`` an OpenAI body;
every other key passes through untouched (llama.cpp accepts many: ``top_k``, ``seed``,
``stop`` …), except ``model`` (the model is in the path) and ``stream`` (the route decides).

``n_predict`` becomes ``max_tokens``; ``-1`` means "unlimited", so no ``max_tokens`` is sent. When
``n_predict`` is given it decides the limit, and a ``max_tokens`` passed alongside it is dropped.
"""

from __future__ import annotations

from typing import Any

from supervisor.errors import BadRequest
from supervisor.surfaces.chat_fields import parse_messages, parse_number

# Keys this module owns; every other key of the body passes through to llama-server.
_OWNED: frozenset[str] = frozenset(
    {"messages", "temperature", "top_p", "n_predict", "model", "stream"}
)
UNLIMITED = -1


def _n_predict(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != UNLIMITED):
        message = "'n_predict' must be an integer >= 1, or -1 for unlimited"
        raise BadRequest(message, param="n_predict")
    return value


def parse_v2_chat(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The /api/v2 chat body as the ``/v1/chat/completions`` body for llama-server."""
    messages = parse_messages(body.get("messages"))
    upstream: dict[str, Any] = {key: value for key, value in body.items() if key not in _OWNED}
    upstream["messages"] = list(messages)
    for key, high in (("temperature", 2.0), ("top_p", 1.0)):
        if body.get(key) is not None:
            upstream[key] = parse_number(body[key], key, 0, high)
    if body.get("n_predict") is not None:
        n_predict = _n_predict(body["n_predict"])
        upstream.pop("max_tokens", None)
        if n_predict != UNLIMITED:
            upstream["max_tokens"] = n_predict
    upstream["stream"] = stream
    return upstream


def v2_reply(completion: dict[str, Any], model_id: str) -> dict[str, Any]:
    """The ``chat.completion`` (or a stream chunk) naming the model as /api/v2 does: its file."""
    return {**completion, "model": model_id}
