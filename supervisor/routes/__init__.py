"""Thin HTTP routes, one module per surface; the work happens in the gateway's services."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from fastapi import Request
from starlette.responses import Response

from ..backends.argv import Role
from ..dialects import openai as openai_dialect
from ..gateway import Gateway
from ..limits import RequestLimits
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


@dataclass(frozen=True)
class Relay:
    """A passthrough route: a POST to ``path`` goes to the child's ``upstream`` path."""

    path: str
    upstream: str
    role: Role = Role.CHAT
    ensure_done: bool = False  # a stream the child ends without ``data: [DONE]`` gets it


RELAYS: Final[Mapping[str, Relay]] = MappingProxyType(
    {
        relay.path: relay
        for relay in (
            Relay("/v1/chat/completions", "/v1/chat/completions"),
            Relay("/v1/completions", "/v1/completions"),
            Relay("/v1/embeddings", "/v1/embeddings", Role.EMBEDDING),
            Relay("/chat/completions", "/chat/completions"),
            Relay("/completion", "/completion", ensure_done=True),
            Relay("/tokenize", "/tokenize"),
            Relay("/detokenize", "/detokenize"),
            Relay("/embedding", "/embedding", Role.EMBEDDING),
        )
    }
)


async def relay(request: Request, route: Relay) -> Response:
    """The passthrough shared by /v1 and the native routes (``RELAYS``): the body goes to the
    child untouched; ``model`` and ``stream`` are only read (and checked) on the way."""
    body = await request.body()
    data = openai_dialect.parse_body(body)
    openai_dialect.wants_stream(data)  # a bad value is our clear 400, not the child's
    gw = gateway(request)
    RequestLimits.of(gw.settings, openai_stop=route.path.startswith("/v1/")).check(data)
    entry = pick_model(request, openai_dialect.requested_model(data))
    meter = gw.telemetry.meter(entry.id)
    stream = Passthrough(openai_dialect.error_event, ensure_done=route.ensure_done, meter=meter)
    response = await gw.proxy.forward(
        lambda: gw.acquire(entry, route.role), route.upstream, body, stream, request.receive
    )
    if not isinstance(response, RelayResponse):
        meter.body(bytes(response.body))
    return response
