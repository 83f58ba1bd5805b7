"""The HTTP server: uvicorn's, with a gateway's manners under a service manager.

- SIGTERM or SIGINT starts a drain (new requests 503, in-flight ones finish within
  ``shutdown_grace_s``), then uvicorn's shutdown runs the lifespan's, which stops every child;
  a second signal skips what is left of the drain. The process then exits 0, not by re-raising
  the signal as plain uvicorn does, so systemd and launchd count it a clean stop.
- sd_notify: READY=1 once listening, WATCHDOG=1 on the loop's ticks, STOPPING=1 at the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from supervisor.app import create_app
from supervisor.children.binary import find_llama_server
from supervisor.config import Settings, load_settings
from supervisor.http.auth import load_keys
from supervisor.http.drain import Drain
from supervisor.http.intake import FD_RESERVE, Intake, open_files_limit
from supervisor.http.intake_protocol import IntakeProtocol, intake_protocol
from supervisor.http.protocol import relay_protocol
from supervisor.http.sdnotify import Notifier
from supervisor.log_setup import configure_logging
from supervisor.relay.lane import RelayLane

LOG = logging.getLogger(__name__)
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Drain, notifier: Notifier) -> None:
        super().__init__(config)
        self.drain = drain
        self.notifier = notifier
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Only records the signal: the drain starts on the loop, the tick loop ends it."""
        loop = self._loop
        if loop is None or not self.started or self.drain.draining:
            super().handle_exit(sig, frame)
            return
        loop.call_soon_threadsafe(self._begin_drain, signal.Signals(sig).name)

    def _begin_drain(self, name: str) -> None:
        self.drain.begin()
        self.notifier.stopping()
        LOG.info("%s: draining %d in-flight request(s) for up to %.0fs",
                 name, self.drain.in_flight, self.drain.grace_s)  # fmt: skip

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started:
            self.notifier.ready()

    async def on_tick(self, counter: int) -> bool:
        self.notifier.watchdog_tick(time.monotonic())
        if self.drain.finished() and not self.should_exit:
            if self.drain.in_flight:
                LOG.warning("shutdown grace over: cutting %d request(s)", self.drain.in_flight)
            self.should_exit = True
        return await super().on_tick(counter)


def http_protocol(app: FastAPI, settings: Settings) -> type[IntakeProtocol]:
    """httptools with the intake's bounds (``http/intake.py``); and the relay lane where the
    settings allow it (``Settings.relay_lane_enabled``)."""
    intake: Intake = app.state.intake
    if not settings.relay_lane_enabled:
        return intake_protocol(intake)
    lane: RelayLane = app.state.relay_lane
    return relay_protocol(lane, intake)


def serve(config_file: Path | None, given: dict[str, Any]) -> int:
    """``llama-supervisor serve``: settings from flags (``given``, None meaning "not given"),
    environment and file; then the server, until a signal stops it."""
    settings = load_settings(config_file, **given)
    configure_logging(settings.log_level, settings.log_format)
    if load_keys(settings).open and settings.host not in LOOPBACK:  # a bad key file stops here
        LOG.warning("no API keys configured and listening on %s: anyone who reaches this port "
                    "can use and administer the gateway (set admin_keys, or keep it behind "
                    "nginx on 127.0.0.1)", settings.host)  # fmt: skip
    binary = find_llama_server(settings.llama_server, settings.cache_dir)
    LOG.info("llama-server: %s", binary)

    def reload_settings() -> Settings:
        """SIGHUP and POST /api/v2/reload: the same flags, the file and environment anew."""
        fresh = load_settings(config_file, **given)
        return fresh if fresh.llama_server else fresh.model_copy(update={"llama_server": binary})

    settings = settings.model_copy(update={"llama_server": binary})
    notifier = Notifier.from_env()
    app = create_app(settings, load_settings=reload_settings, notifier=notifier)
    cap = app.state.intake.limits.connection_cap
    if cap < settings.max_connections:
        LOG.info("at most %d client connections: the open-files limit (%d) keeps %d of them "
                 "for children and model loads", cap, open_files_limit(), FD_RESERVE)  # fmt: skip
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        http=http_protocol(app, settings),
        ws="none",  # no WebSocket routes; an upgrade would take a connection past the intake
        log_level=settings.log_level,
        access_log=settings.access_log,
        # The drain already waited for requests; this only bounds the last connections' close.
        timeout_graceful_shutdown=2,
    )
    GatewayServer(config, app.state.drain, notifier).run()
    return 0
