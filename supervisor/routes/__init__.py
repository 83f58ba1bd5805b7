"""Thin HTTP routes, one module per surface; the work happens in the gateway's services."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Final

from fastapi import Request
from starlette.responses import Response

from ..backends.argv import Role
from ..dialects import openai as openai_dialect
from ..gateway import Gateway
from ..proxy import Passthrough, RelayResponse
from ..registry import ModelEntry
from ..telemetry import Telemetry, note_model
from ..tokens import TokenMeter


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


@dataclass(frozen=True)
class RelayPlan:
    """What a relayed request needs once its body is read: the model; then, once the child
    answers, its token meter and the stream translator that passes the child's bytes on
    (made then, so that nothing delays the request on its way to the child)."""

    entry: ModelEntry
    route: Relay
    telemetry: Telemetry

    @cached_property
    def meter(self) -> TokenMeter:
        return self.telemetry.meter(self.entry.id)

    @cached_property
    def stream(self) -> Passthrough:
        return Passthrough(
            openai_dialect.error_event, ensure_done=self.route.ensure_done, meter=self.meter
        )


def plan_relay(gw: Gateway, route: Relay, body: bytes) -> RelayPlan:
    """The body is only read (and checked) on the way: ``model`` and ``stream``, and the
    request limits; it goes to the child untouched. Shared by both ways a relayed POST is
    served (``relay`` here, and the relay lane's exchange)."""
    data = openai_dialect.parse_body(body)
    openai_dialect.wants_stream(data)  # a bad value is our clear 400, not the child's
    (gw.openai_limits if route.path.startswith("/v1/") else gw.limits).check(data)
    entry = gw.pick_model(openai_dialect.requested_model(data))
    return RelayPlan(entry, route, gw.telemetry)


async def relay(request: Request, route: Relay) -> Response:
    """The passthrough shared by /v1 and the native routes (``RELAYS``), over ASGI."""
    body = await request.body()
    gw = gateway(request)
    plan = plan_relay(gw, route, body)
    note_model(request.scope, plan.entry.id)
    response = await gw.proxy.forward(
        lambda: gw.acquire(plan.entry, route.role), route.upstream, body, plan.stream,
        request.receive,
    )  # fmt: skip
    if not isinstance(response, RelayResponse):
        plan.meter.body(bytes(response.body))
    return response
