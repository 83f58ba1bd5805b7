"""What an error body looks like on each surface (guide/API.md): the OpenAI envelope
everywhere, except the /api surface (``/api/…``, not ``/api/v2``), which answers ``{"detail": …}``,
and Anthropic's routes (/v1/messages…), which answer ``{"type": "error", "error": …}``."""

from __future__ import annotations

from typing import Any


def uses_detail(path: str) -> bool:
    return path.startswith("/api/") and not path.startswith("/api/v2/") and path != "/api/v2"


ANTHROPIC_TYPES = {
    "invalid_request_error", "authentication_error", "permission_error", "not_found_error",
    "request_too_large", "rate_limit_error", "api_error", "overloaded_error",
}  # fmt: skip


def uses_anthropic(path: str) -> bool:
    return path.startswith("/v1/messages")


def error_message(path: str, body: Any) -> str:
    """The message of an error body in the surface's format."""
    assert_error_format(path, body)
    if uses_detail(path):
        return str(body["detail"])
    return str(body["error"]["message"])


def assert_error_format(path: str, body: Any) -> None:
    """Fail unless ``body`` is an error in the format of the surface that ``path`` is on."""
    assert isinstance(body, dict), body
    if uses_anthropic(path):
        assert set(body) == {"type", "error"} and body["type"] == "error", body
        error = body["error"]
        assert isinstance(error, dict) and set(error) == {"type", "message"}, body
        assert error["type"] in ANTHROPIC_TYPES, body
        assert isinstance(error["message"], str) and error["message"], body
        return
    if uses_detail(path):
        assert set(body) == {"detail"}, body
        assert isinstance(body["detail"], str) and body["detail"], body
        return
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str) and isinstance(error["code"], str), body
