"""Thin HTTP routes, one module per surface; the work happens in the gateway's services."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from fastapi import Request
from starlette.responses import Response

from supervisor.errors import BadRequest
from supervisor.gateway import Gateway
from supervisor.models.registry import ModelEntry
from supervisor.redact import scrub_paths
from supervisor.relay.asgi import Passthrough
from supervisor.relay.table import ModelFrom, Relay
from supervisor.relay.upstream import JSON
from supervisor.surfaces import errors as surfaces
from supervisor.surfaces.form import form_field
from supervisor.surfaces.openai import dialect as openai_dialect
from supervisor.telemetry.prometheus import Telemetry, note_model
from supervisor.telemetry.tokens import TokenMeter


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
class RelayPlan:
    """What a relayed request needs once its body is read: the model; then, once the child
    answers, its token meter and the stream translator that passes the child's bytes on
    (made then, so that nothing delays the request on its way to the child)."""

    entry: ModelEntry
    route: Relay
    telemetry: Telemetry

    @cached_property
    def meter(self) -> TokenMeter | None:
        return self.telemetry.meter(self.entry.id) if self.route.metered else None

    @cached_property
    def stream(self) -> Passthrough:
        error_event = surfaces.error_event(self.route.surface)
        return Passthrough(error_event, ensure_done=self.route.ensure_done, meter=self.meter)

    def answer(self, status: int, content: bytes) -> bytes:
        """A whole (not streamed) answer as the client gets it: an error in the route's
        shape, no host paths where the route may name them."""
        if status >= 400:
            return surfaces.child_error(self.route.surface, status, content)
        return scrub_paths(content) if self.route.scrub else content

    def count(self, content: bytes) -> None:
        """A whole answer's tokens, for the metrics."""
        if self.meter is not None:
            self.meter.body(content)

    def counted_answer(self, status: int, content: bytes) -> bytes:
        content = self.answer(status, content)
        self.count(content)
        return content


def plan_relay(
    gw: Gateway,
    route: Relay,
    body: bytes,
    *,
    query_model: str | None = None,
    content_type: bytes = b"",
) -> RelayPlan:
    """The request is only read (and checked) on the way: its model (where ``route`` says it
    is named), ``stream`` and the request limits; the body goes to the child untouched.
    Shared by both ways a relayed request is served (``relay`` here, and the relay lane's
    exchange, which takes only routes whose model is in the JSON body)."""
    if route.model_from is ModelFrom.BODY:
        data = openai_dialect.parse_body(body)
        openai_dialect.wants_stream(data)  # a bad value is our clear 400, not the child's
        if route.checked:
            (gw.openai_limits if route.openai_stop else gw.limits).check(data)
        name = openai_dialect.requested_model(data)
    elif route.model_from is ModelFrom.FORM:
        name = form_field(body, content_type, "model")
    else:
        if route.method == "POST":
            openai_dialect.parse_json(body)  # llama-server answers bad JSON with a 500
        name = query_model or None
    entry = gw.pick_model(name)
    if route.needs is not None and route.needs not in entry.capabilities:
        raise BadRequest(
            f"Model '{entry.id}' cannot serve {route.path}: it has no {route.needs} projector",
            param="model",
        )
    return RelayPlan(entry, route, gw.telemetry)


async def relay(request: Request, route: Relay) -> Response:
    """A relayed route (``relays.RELAYS``) over ASGI: the relay lane's work, for what it
    does not take."""
    body = await request.body()
    gw = gateway(request)
    # A form goes on with its boundary; any other body is JSON, as the relay lane sends it.
    form = route.model_from is ModelFrom.FORM
    content_type = request.headers.get("content-type", "") if form else JSON
    plan = plan_relay(
        gw, route, body, query_model=request.query_params.get("model"),
        content_type=content_type.encode("latin-1"),
    )  # fmt: skip
    note_model(request.scope, plan.entry.id)
    query = request.scope.get("query_string", b"").decode("latin-1")
    return await gw.proxy.forward(
        lambda: gw.acquire(plan.entry, route.role), f"{route.path}?{query}" if query else
        route.path, body, plan.stream, request.receive, answer=plan.counted_answer,
        method=route.method, content_type=content_type,
    )  # fmt: skip
