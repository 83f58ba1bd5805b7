"""The request fields both chat surfaces (``/api`` and ``/api/v2``) read alike: messages and
bounded numbers, each refused with a 400 that names the field. Pure."""

from __future__ import annotations

import math

from supervisor.errors import BadRequest
from supervisor.sessions.store import ROLES


def parse_number(value: object, param: str, low: float, high: float | None = None) -> float:
    """A JSON number (not a boolean, not NaN or infinite) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise BadRequest(f"'{param}' must be a number", param=param)
    if isinstance(value, float) and math.isinf(value):
        raise BadRequest(f"'{param}' must be a finite number", param=param)
    if value < low or (high is not None and value > high):
        bounds = f">= {low:g}" if high is None else f"between {low:g} and {high:g}"
        raise BadRequest(f"'{param}' must be {bounds}", param=param)
    return value


def parse_int(value: object, param: str, minimum: int) -> int:
    """A JSON integer (not a boolean, not a float such as 1.5) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{param}' must be an integer", param=param)
    if value < minimum:
        raise BadRequest(f"'{param}' must be >= {minimum}", param=param)
    return value


def parse_messages(value: object, param: str = "messages") -> tuple[dict[str, str], ...]:
    """A non-empty array of ``{"role": system|user|assistant, "content": str}``; extras dropped."""
    if not isinstance(value, list) or not value:
        raise BadRequest(f"'{param}' must be a non-empty array of messages", param=param)
    return tuple(_parse_message(item, f"{param}[{index}]") for index, item in enumerate(value))


def _parse_message(item: object, param: str) -> dict[str, str]:
    if not isinstance(item, dict):
        raise BadRequest(f"'{param}' must be an object", param=param)
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        allowed = ", ".join(sorted(ROLES))
        raise BadRequest(f"'{param}.role' must be one of: {allowed}", param=f"{param}.role")
    content = item.get("content")
    if not isinstance(content, str):
        raise BadRequest(f"'{param}.content' must be a string", param=f"{param}.content")
    return {"role": role, "content": content}
