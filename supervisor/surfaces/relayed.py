"""The relayed routes' FastAPI declarations, made from the relay table (``relay/table.RELAYS``):
they give the API document its operations, and FastAPI's routing its 405 for another method.
Requests to them are served before FastAPI, by the relay lane or ``asgi_shortcut.FastLane``, with
the same ``relay`` these endpoints call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from supervisor.relay.destination import JSON
from supervisor.relay.plan import relay
from supervisor.relay.table import RELAYS, Relay, Surface
from supervisor.surfaces.schemas import AnthropicError, OpenAIError, json_body, replies

ERROR_CODES = (400, 404, 429, 502, 503)


def relayed_router() -> APIRouter:
    router = APIRouter()
    for route in RELAYS.values():
        router.add_api_route(
            route.path,
            _endpoint(route),
            methods=[route.method],
            summary=route.summary,
            tags=[route.tag],
            openapi_extra=_request_body(route),
            responses=replies(
                route.doc.reply,
                *((401, 403) if route.admin else ()),
                *ERROR_CODES,
                error=AnthropicError if route.surface is Surface.ANTHROPIC else OpenAIError,
                stream=route.doc.stream,
            ),
        )
    return router


def _endpoint(route: Relay) -> Callable[[Request], Awaitable[Response]]:
    async def relayed(request: Request) -> Response:
        return await relay(request, route)

    relayed.__name__ = (
        "relay_" + route.method.lower() + route.path.replace("/", "_").replace("-", "_")
    )
    return relayed


def _request_body(route: Relay) -> dict[str, Any] | None:
    model = route.doc.request
    if model is None:
        return None
    return json_body(model, media="multipart/form-data" if route.doc.multipart else JSON)
