"""Each error surface's formatters (``relay/table.Surface``), chosen in one place."""

from __future__ import annotations

from typing import Any

from supervisor.errors import SupervisorError
from supervisor.relay.stream import ErrorEvent
from supervisor.relay.table import Surface
from supervisor.surfaces.anthropic import dialect as anthropic
from supervisor.surfaces.openai import dialect as openai
from supervisor.surfaces.openai import responses


def error_body(surface: Surface, error: SupervisorError) -> dict[str, Any]:
    if surface is Surface.ANTHROPIC:
        return anthropic.error_body(error)
    return openai.error_body(error)


def error_event(surface: Surface) -> ErrorEvent:
    """What a stream on ``surface`` ends with when its child fails mid-way."""
    if surface is Surface.ANTHROPIC:
        return anthropic.error_event
    if surface is Surface.RESPONSES:
        return responses.error_event
    return openai.error_event


def child_error(surface: Surface, status: int, content: bytes) -> bytes:
    """A child's error answer (status 400 and up), in the surface's shape."""
    if surface is Surface.ANTHROPIC:
        return anthropic.child_error(status, content)
    return content
