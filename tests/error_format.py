"""What an error body looks like on each surface (guide/API.md): the OpenAI envelope
everywhere, except seed 002's ``/api/…`` (not ``/api/v2``), which answers ``{"detail": …}``."""

from __future__ import annotations

from typing import Any


def uses_detail(path: str) -> bool:
    return path.startswith("/api/") and not path.startswith("/api/v2/") and path != "/api/v2"


def assert_error_format(path: str, body: Any) -> None:
    """Fail unless ``body`` is an error in the format of the surface that ``path`` is on."""
    assert isinstance(body, dict), body
    if uses_detail(path):
        assert set(body) == {"detail"}, body
        assert isinstance(body["detail"], str) and body["detail"], body
        return
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str) and isinstance(error["code"], str), body
