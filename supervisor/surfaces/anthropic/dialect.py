"""The Anthropic Messages surface (/v1/messages): its error shape, pure functions.

llama-server speaks the Messages API itself, so requests and answers pass through; only
errors change shape: the gateway's own, and those the child words in OpenAI's envelope."""

from __future__ import annotations

import json
from typing import Any

from supervisor.errors import SupervisorError

# Anthropic's error type for each status (docs.anthropic.com, "Errors"); any other 4xx is
# an invalid request, any other 5xx an API error.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    known = ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "invalid_request_error" if status < 500 else "api_error"


def error_body(error: SupervisorError) -> dict[str, Any]:
    return _body(error.status_code, error.message)


def _body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def error_event(error: SupervisorError) -> bytes:
    """The event a stream ends with when the child fails mid-way (as Anthropic's own)."""
    payload = json.dumps(error_body(error), separators=(",", ":"))
    return f"event: error\ndata: {payload}\n\n".encode()


def child_error(status: int, content: bytes) -> bytes:
    """A child's error answer in Anthropic's shape. llama-server words its errors in
    OpenAI's envelope, ``{"error": {"message", "type", "code"}}``, on every route."""
    try:
        answer = json.loads(content)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and answer.get("type") == "error":
        return content  # already Anthropic's
    error = answer.get("error") if isinstance(answer, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str):
        message = f"the model server answered {status}"
    return json.dumps(_body(status, message), separators=(",", ":")).encode()
