"""Thin HTTP routes, one module per surface; the work happens in the gateway's services."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from ..backends.argv import Role
from ..dialects import openai as openai_dialect
from ..gateway import Gateway
from ..proxy import Passthrough, RelayResponse
from ..registry import ModelEntry
from ..telemetry import note_model


def gateway(request: Request) -> Gateway:
    state_gateway: Gateway = request.app.state.gateway
    return state_gateway


def pick_model(request: Request, name: str | None) -> ModelEntry:
    """The model a request names, else the default one (``Gateway.pick_model``), noted as
    the model the request uses for its metrics."""
    entry = gateway(request).pick_model(name)
    note_model(request.scope, entry.id)
    return entry


async def relay_openai_shaped(
    request: Request, path: str, role: Role = Role.CHAT, *, ensure_done: bool = False
) -> Response:
    """The passthrough shared by /v1 and the native routes: the body goes to the child's
    ``path`` untouched; ``model`` and ``stream`` are only read (and checked) on the way."""
    body = await request.body()
    data = openai_dialect.parse_body(body)
    openai_dialect.wants_stream(data)  # a bad value is our clear 400, not the child's
    gw = gateway(request)
    entry = pick_model(request, openai_dialect.requested_model(data))
    meter = gw.telemetry.meter(entry.id)
    stream = Passthrough(openai_dialect.error_event, ensure_done=ensure_done, meter=meter)
    response = await gw.proxy.forward(
        lambda: gw.acquire(entry, role), path, body, stream, request.receive
    )
    if not isinstance(response, RelayResponse):
        meter.body(bytes(response.body))
    return response
