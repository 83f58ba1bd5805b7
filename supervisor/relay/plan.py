"""What a relayed request needs once its body is read (``plan_relay``: its model, checked
against the request limits), and its relay over ASGI (``relay``), with the narrow services
both ways in share (``RelayServices``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from fastapi import Request
from starlette.responses import Response

from supervisor.errors import BadRequest
from supervisor.http.observer import note_model, request_record
from supervisor.models.catalog import Catalog, Served
from supervisor.models.registry import ModelEntry
from supervisor.redact import scrub_paths
from supervisor.relay.asgi import Proxy
from supervisor.relay.destination import JSON
from supervisor.relay.limits import Limits
from supervisor.relay.stream import Passthrough
from supervisor.relay.table import ModelFrom, Relay
from supervisor.relay.targets import Targets
from supervisor.surfaces import errors as surfaces
from supervisor.surfaces.form import form_field
from supervisor.surfaces.openai import dialect as openai_dialect
from supervisor.telemetry.activity import RequestRecord
from supervisor.telemetry.prometheus import Telemetry
from supervisor.telemetry.tokens import TokenMeter


@dataclass(frozen=True)
class RelayServices:
    """What relaying needs, on either way in: which model (``catalog``) within which limits,
    a slot on its child or peer (``targets``), the upstream connections (``proxy``) and the
    token meters (``telemetry``). Built in the app's lifespan (``app.state.relay_services``)."""

    catalog: Catalog
    limits: Limits
    proxy: Proxy
    telemetry: Telemetry
    targets: Targets


def relay_services(request: Request) -> RelayServices:
    services: RelayServices = request.app.state.relay_services
    return services


@dataclass(frozen=True)
class RelayPlan:
    """What a relayed request needs once its body is read: the model; then, once the child
    answers, its token meter and the stream translator that passes the child's bytes on
    (made then, so that nothing delays the request on its way to the child)."""

    entry: Served
    route: Relay
    telemetry: Telemetry
    record: RequestRecord | None = None  # the ASGI way's: its activity entry shows the meter's

    @cached_property
    def meter(self) -> TokenMeter | None:
        if not self.route.metered:
            return None
        return self.telemetry.meter(self.entry.id, self.record)

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
    services: RelayServices,
    route: Relay,
    body: bytes,
    *,
    query_model: str | None = None,
    content_type: bytes = b"",
    record: RequestRecord | None = None,
) -> RelayPlan:
    """The request is only read (and checked) on the way: its model (where ``route`` says it
    is named), ``stream`` and the request limits; the body goes to the child untouched.
    Shared by both ways a relayed request is served (``relay`` here, and the relay lane's
    exchange, which takes only routes whose model is in the JSON body)."""
    if route.model_from is ModelFrom.BODY:
        data = openai_dialect.parse_body(body)
        openai_dialect.wants_stream(data)  # a bad value is our clear 400, not the child's
        if route.checked:
            services.limits.of(openai_stop=route.openai_stop).check(data)
        name = openai_dialect.requested_model(data)
    elif route.model_from is ModelFrom.FORM:
        name = form_field(body, content_type, "model")
    else:
        if route.method == "POST":
            openai_dialect.parse_json(body)  # llama-server answers bad JSON with a 500
        name = query_model or None
    entry = services.catalog.serve(name)
    # A peer's model: the peer answers for what it can serve.
    if (
        route.needs is not None
        and isinstance(entry, ModelEntry)
        and route.needs not in entry.capabilities
    ):
        raise BadRequest(
            f"Model '{entry.id}' cannot serve {route.path}: it has no {route.needs} projector",
            param="model",
        )
    return RelayPlan(entry, route, services.telemetry, record)


async def relay(request: Request, route: Relay) -> Response:
    """A relayed route (``relay/table.RELAYS``) over ASGI: the relay lane's work, for what it
    does not take."""
    body = await request.body()
    services = relay_services(request)
    # A form goes on with its boundary; any other body is JSON, as the relay lane sends it.
    form = route.model_from is ModelFrom.FORM
    content_type = request.headers.get("content-type", "") if form else JSON
    plan = plan_relay(
        services, route, body, query_model=request.query_params.get("model"),
        content_type=content_type.encode("latin-1"), record=request_record(request.scope),
    )  # fmt: skip
    note_model(request.scope, plan.entry.id)
    query = request.scope.get("query_string", b"").decode("latin-1")
    return await services.proxy.forward(
        lambda: services.targets.acquire(plan.entry, route.role),
        f"{route.path}?{query}" if query else route.path, body, plan.stream, request.receive,
        answer=plan.counted_answer, method=route.method, content_type=content_type,
        model_from=route.model_from,
    )  # fmt: skip
