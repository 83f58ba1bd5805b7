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
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # thousands of nested brackets: no request needs them
        raise BadRequest("Request body is nested too deeply") from exc
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object")
    return data


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
