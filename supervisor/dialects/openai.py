"""The OpenAI surface (/v1, and the OpenAI-shaped native routes): pure functions."""

from __future__ import annotations

import json
from typing import Any

from ..errors import BadRequest, SupervisorError
from ..registry import ModelEntry

OWNER = "llama-supervisor"


def parse_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object; bad JSON or a non-object is a 400."""
    try:
        data = _decode(body) if body else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # thousands of nested brackets: no request needs them
        raise BadRequest("Request body is nested too deeply") from exc
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object")
    return data


def _decode(body: bytes) -> Any:
    """``json.loads(body)``, the short way for the usual body: UTF-8 text that is one JSON
    value from its first byte to its last. On the gateway's hot path, run cold after each
    wait for the model, json.loads's own wrappers (the encoding sniff, two whitespace
    regexes) took longer than the scan itself. Anything else, errors included, takes
    json.loads, which words the error."""
    try:
        text = body.decode()
        data, end = _DECODER.raw_decode(text)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return json.loads(body)
    return data if end == len(text) else json.loads(body)


_DECODER = json.JSONDecoder()  # holds no state between calls


def requested_model(data: dict[str, Any]) -> str | None:
    model = data.get("model")
    if model is None or model == "":
        return None
    if not isinstance(model, str):
        raise BadRequest("'model' must be a string", param="model")
    return model


def wants_stream(data: dict[str, Any]) -> bool:
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream")
    return stream


def model_object(entry: ModelEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "object": "model",
        "created": int(entry.modified),
        "owned_by": OWNER,
    }


def model_list(entries: list[ModelEntry]) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(e) for e in entries]}


def error_body(error: SupervisorError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.error_type,
            "param": error.param,
            "code": error.code,
        }
    }


def error_event(error: SupervisorError) -> bytes:
    """The one SSE event a failed stream ends with, then the usual terminator."""
    payload = json.dumps(error_body(error), separators=(",", ":"))
    return f"data: {payload}\n\ndata: [DONE]\n\n".encode()
