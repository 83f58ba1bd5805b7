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
from supervisor.console.routes import console_router
from supervisor.http.admission import Admission
from supervisor.http.drain import Drain
from supervisor.http.error_responses import SlashRedirect, install_error_handlers
from supervisor.http.guard import GatewayGuard
from supervisor.http.intake import Intake, IntakeLimits
from supervisor.http.observer import RequestObserver, TelemetryMiddleware
from supervisor.http.sdnotify import Notifier
from supervisor.models.memory import MemoryProbe
from supervisor.models.pulls.transfer import PullTools
from supervisor.relay.asgi_shortcut import FastLane
from supervisor.relay.lane import RelayLane
from supervisor.reload import SettingsLoader
from supervisor.services import activity_log, build_services
from supervisor.surfaces.api import chat_routes as api_chat
from supervisor.surfaces.api import routes as api
from supervisor.surfaces.api_v2 import activity, logs, pulls
from supervisor.surfaces.api_v2 import routes as api_v2
from supervisor.surfaces.openai import imports
from supervisor.surfaces.openai import routes as openai
from supervisor.surfaces.relayed import relayed_router
from supervisor.surfaces.root import routes as root
from supervisor.surfaces.schemas import build_openapi
from supervisor.telemetry.prometheus import Telemetry


def create_app(
    settings: Settings,
    *,
    factory: ProcessFactory | None = None,
    load_settings: SettingsLoader | None = None,
    probe: MemoryProbe | None = None,
    notifier: Notifier | None = None,
    pull_tools: PullTools | None = None,
) -> FastAPI:
    """The gateway's app. ``app.state.drain`` and ``app.state.notifier`` are what the server
    loop needs for a graceful shutdown under a service manager (server.GatewayServer).
    ``pull_tools``: what model pulls reach the network and the disk through (tests' faults)."""
    notify = notifier or Notifier(None)
    drain = Drain(settings.shutdown_grace_s)
    telemetry = Telemetry(activity_log(settings))
    admission = Admission(drain)  # the one judge of requests, for both ways in
    observer = RequestObserver(telemetry)
    lane = RelayLane(admission, observer)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, factory, load_settings, probe, telemetry, pull_tools)
        services.install(app.state)
        admission.attach(services.reloader)  # the keys and body limit in force
        lane.attach(services.relay)
        services.start()

        def reload_on_signal() -> None:
            notify.reloading()
            services.reloader.reload_in_background(done=notify.ready)

        hup = _on_sighup(reload_on_signal)
        try:
            yield
        finally:
            hup()
            lane.attach(None)
            admission.attach(None)
            await services.close()

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
        guarded = GatewayGuard(FastLane(fastapi_stack), admission)
        return TelemetryMiddleware(_with_cors(guarded, settings), observer)

    app.front = front
    install_error_handlers(app)
    app.router.default = SlashRedirect(app.router)
    app.include_router(root.router)
    app.include_router(openai.router)
    app.include_router(imports.router)
    app.include_router(pulls.router)  # before api_v2's /models/{model_id} routes
    app.include_router(activity.router)
    app.include_router(api_v2.router)
    app.include_router(logs.router)
    app.include_router(api.router)
    app.include_router(api_chat.router)
    app.include_router(relayed_router())
    app.include_router(console_router())  # the web console's files, at /ui/
    return app


class GatewayApp(FastAPI):
    """FastAPI with the gateway's own ASGI layers (``front``) outside all of FastAPI's
    middleware. Every request passes telemetry (``http/observer.py``), CORS (when configured)
    and the guard (``http/guard.py``: admission, the drain, the body limit) first; then the
    passthrough routes' fast lane skips FastAPI entirely: its error, exception-telemetry and
    body-limit middlewares, its routing and its dependency solving (``relay/asgi_shortcut.py``).
    """

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


def _openapi_tags() -> list[dict[str, Any]]:
    """One tag per surface, described by its URLs and what it is for."""
    return [
        {
            "name": "shared",
            "description": "The gateway's own routes, whatever surface a client speaks: `GET /` "
            "(what is served), `GET /health` (in llama-server's shape) and `GET /metrics` "
            "(Prometheus).",
        },
        {
            "name": "openai",
            "description": "The OpenAI-compatible surface under `/v1`: models, chat and text "
            "completions, responses, embeddings, rerank; bodies pass through to llama-server; "
            "errors are the OpenAI envelope.",
        },
        {
            "name": "native",
            "description": "llama-server's own routes at the root (`/completion`, `/tokenize`, "
            "`/props`, …): `model` is optional (`?model=` on a GET); `/completion`'s streams "
            "end with `data: [DONE]`.",
        },
        {
            "name": "anthropic",
            "description": "Anthropic Messages (`/v1/messages`), as llama-server serves it: "
            "keys in `x-api-key` or `Authorization`; errors in Anthropic's shape.",
        },
        {
            "name": "api/v2",
            "description": "The `/api/v2` surface: models by file name, load with parameters, "
            "chat, metrics, health and child logs; plus our swap and reload admin routes.",
        },
        {
            "name": "api",
            "description": "The `/api` surface: models, load and unload, chat with server-side "
            'sessions, generate, embeddings; errors are `{"detail": …}`.',
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
