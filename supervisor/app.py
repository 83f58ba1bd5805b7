"""create_app(settings): the lifespan wires the gateway's services onto app.state."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from supervisor import __version__
from supervisor.children.child import ProcessFactory
from supervisor.config import Settings
from supervisor.gateway import Gateway, SettingsLoader, build_gateway
from supervisor.http.auth import KeyRing
from supervisor.http.body_limit import BodyLimit
from supervisor.http.drain import Drain
from supervisor.http.error_responses import SlashRedirect, install_error_handlers
from supervisor.http.guard import GatewayGuard
from supervisor.http.intake import Intake, IntakeLimits
from supervisor.http.sdnotify import Notifier
from supervisor.models.memory import MemoryProbe
from supervisor.relay.asgi_shortcut import FastLane
from supervisor.relay.lane import RelayLane
from supervisor.surfaces.api import chat_routes as myllm_chat
from supervisor.surfaces.api import routes as myllm
from supervisor.surfaces.api_v2 import logs
from supervisor.surfaces.api_v2 import routes as api_v2
from supervisor.surfaces.openai import routes as openai
from supervisor.surfaces.relayed import relayed_router
from supervisor.surfaces.root import routes as root
from supervisor.surfaces.schemas import build_openapi
from supervisor.telemetry.prometheus import Telemetry, TelemetryMiddleware


def create_app(
    settings: Settings,
    *,
    factory: ProcessFactory | None = None,
    load_settings: SettingsLoader | None = None,
    probe: MemoryProbe | None = None,
    notifier: Notifier | None = None,
) -> FastAPI:
    """The gateway's app. ``app.state.drain`` and ``app.state.notifier`` are what the server
    loop needs for a graceful shutdown under a service manager (server.GatewayServer)."""
    notify = notifier or Notifier(None)
    drain = Drain(settings.shutdown_grace_s)
    telemetry = Telemetry()
    lane = RelayLane(drain)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = build_gateway(settings, factory, load_settings, probe, telemetry)
        app.state.gateway = gateway
        lane.attach(gateway)
        gateway.manager.start(gateway.registry.entries())

        def reload_on_signal() -> None:
            notify.reloading()
            gateway.reload_in_background(done=notify.ready)

        hup = _on_sighup(reload_on_signal)
        try:
            yield
        finally:
            hup()
            lane.attach(None)
            await gateway.close()

    app = GatewayApp(
        title="llama-supervisor",
        version=__version__,
        description="One gateway in front of supervised llama.cpp servers.",
        lifespan=lifespan,
        openapi_tags=_openapi_tags(),
        # FastAPI's own OpenTelemetry hooks ask the OTel API whether a provider is set on
        # every request (about 20 µs); the gateway's telemetry is its Prometheus /metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Starlette's redirect takes its Location's host from the client: ours is relative.
        redirect_slashes=False,
    )
    app.state.drain = drain
    app.state.relay_lane = lane  # served by server.http_protocol's protocol, not over ASGI
    app.state.intake = Intake(IntakeLimits.of(settings), counted=telemetry.connection_cut)
    app.state.notifier = notify
    app.openapi = partial(build_openapi, app)  # type: ignore[method-assign]

    def front(fastapi_stack: ASGIApp) -> ASGIApp:
        # Telemetry outermost, so that it also times and counts what the guard refuses.
        limited = BodyLimit(FastLane(fastapi_stack), limit=partial(_max_body_bytes, app))
        guarded = GatewayGuard(limited, drain=drain, keys=partial(_keys, app))
        return TelemetryMiddleware(_with_cors(guarded, settings), telemetry=telemetry)

    app.front = front
    install_error_handlers(app)
    app.router.default = SlashRedirect(app.router)
    app.include_router(root.router)
    app.include_router(openai.router)
    app.include_router(api_v2.router)
    app.include_router(logs.router)
    app.include_router(myllm.router)
    app.include_router(myllm_chat.router)
    app.include_router(relayed_router())
    return app


class GatewayApp(FastAPI):
    """FastAPI with the gateway's own ASGI layers (``front``) outside all of FastAPI's
    middleware. Every request passes telemetry, CORS (when configured), the guard and the body
    limit (``http/body_limit.py``) first; then the passthrough routes' fast lane skips FastAPI
    entirely: its error, exception-telemetry and body-limit middlewares, its routing and its
    dependency solving (``relay/asgi_shortcut.py``)."""

    front: Callable[[ASGIApp], ASGIApp] | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return stack if self.front is None else self.front(stack)


def _with_cors(app: ASGIApp, settings: Settings) -> ASGIApp:
    """CORS only when ``cors_origins`` is set; outside the guard, as browsers send preflights
    without keys, and outside the fast lane, so relayed answers get the headers too (the
    children's own CORS headers are dropped by the relay). Read at start-up only."""
    if not settings.cors_origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "X-API-Key"],
        max_age=600,
    )


def _keys(app: FastAPI) -> KeyRing:
    """The running gateway's keys (a reload may change them)."""
    gateway: Gateway = app.state.gateway
    return gateway.keys


def _max_body_bytes(app: FastAPI) -> int:
    """The running gateway's body limit (a reload may change it)."""
    gateway: Gateway = app.state.gateway
    return gateway.settings.max_body_bytes


def _openapi_tags() -> list[dict[str, Any]]:
    """One tag per surface, naming the seed document it comes from (shared/seeds)."""
    return [
        {
            "name": "shared",
            "description": "`GET /` (seeds 002, 003), `GET /health` (llama.cpp) and "
            "`GET /metrics` (Prometheus).",
        },
        {
            "name": "openai",
            "description": "OpenAI-compatible `/v1` (seeds 000 and 003): bodies pass through to "
            "llama-server; errors are the OpenAI envelope.",
        },
        {
            "name": "native",
            "description": "llama.cpp's native root routes (seed 004, BitNet; and llama-server's "
            "others): `model` is optional (`?model=` on a GET); /completion's streams end with "
            "`data: [DONE]`.",
        },
        {
            "name": "anthropic",
            "description": "Anthropic Messages (`/v1/messages`), as llama-server serves it: "
            "keys in `x-api-key` or `Authorization`; errors in Anthropic's shape.",
        },
        {
            "name": "api/v2",
            "description": "LLama.cpp API v2 (seed 001): models by file name, load parameters, "
            "chat, metrics; plus our swap and reload admin routes.",
        },
        {
            "name": "api",
            "description": "MyLLM (seed 002): models, chat with server-side sessions, generate, "
            'embeddings; errors are `{"detail": …}`.',
        },
    ]


def _on_sighup(reload: Callable[[], None]) -> Callable[[], None]:
    """SIGHUP re-reads the configuration. The handler only schedules the work; returns the
    undo. Only the main thread may own signals (tests run apps in other threads)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return lambda: None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reload)

    def undo() -> None:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGHUP)

    return undo
