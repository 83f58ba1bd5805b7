"""The gateway's services, built once per app in its lifespan (``build_services``) and set
on ``app.state`` one by one (``Services.install``), where routes reach each through its
one-line accessor (``surfaces/services.py``; the relay's in ``relay/plan.py``). This holder
is only the lifespan's: it starts them and closes them in order."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
from starlette.datastructures import State

from supervisor.children.child import ChildStarter, ProcessFactory
from supervisor.children.logs import ChildLogs
from supervisor.children.poll_client import make_client
from supervisor.config import Settings
from supervisor.http.auth import load_keys
from supervisor.lifecycle.manager import ModelManager
from supervisor.models.catalog import Catalog
from supervisor.models.memory import MemoryProbe
from supervisor.models.pulls.service import Pulls
from supervisor.models.pulls.transfer import PullTools
from supervisor.models.registry import Registry
from supervisor.peers.directory import Peers
from supervisor.relay.asgi import Proxy
from supervisor.relay.limits import Limits
from supervisor.relay.plan import RelayServices
from supervisor.relay.targets import Targets
from supervisor.relay.upstream import UpstreamPool
from supervisor.reload import Reloader, SettingsLoader
from supervisor.sessions.base import Store
from supervisor.sessions.locks import SessionLocks, SharedLocks, Turns
from supervisor.sessions.pick import open_store
from supervisor.telemetry.activity import ActivityLog
from supervisor.telemetry.history import MetricsHistory
from supervisor.telemetry.host import HostReader
from supervisor.telemetry.prometheus import Telemetry


@dataclass
class Services:
    client: httpx.AsyncClient  # the children's health polls
    manager: ModelManager
    reloader: Reloader
    relay: RelayServices
    sessions: Store  # SQLite, or PostgreSQL shared with other gateways (sessions_url)
    probe: MemoryProbe
    logs: ChildLogs
    telemetry: Telemetry
    pulls: Pulls
    history: MetricsHistory  # the console's charts: sampled while the gateway runs
    peers: Peers  # other servers whose models are served too, health-checked while it runs
    session_locks: SessionLocks = field(default_factory=SessionLocks)
    shared_locks: SharedLocks | None = None  # the sessions database's, shared by gateways
    started_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        # A session's turn: its lock here, then the database's when several gateways share it.
        self.turns = Turns(self.shared_locks, self.session_locks)

    def install(self, state: State) -> None:
        """Each service on ``state`` under the name its accessor reads."""
        state.manager = self.manager
        state.catalog = self.relay.catalog
        state.limits = self.relay.limits
        state.reloader = self.reloader
        state.relay_services = self.relay
        state.proxy = self.relay.proxy
        state.targets = self.relay.targets
        state.sessions = self.sessions
        state.session_locks = self.session_locks
        state.session_turns = self.turns
        state.probe = self.probe
        state.child_logs = self.logs
        state.telemetry = self.telemetry
        state.pulls = self.pulls
        state.performance = self.telemetry.performance
        state.activity = self.telemetry.activity
        state.metrics_history = self.history
        state.peers = self.peers
        state.started_at = self.started_at

    def start(self) -> None:
        self.manager.start(self.relay.catalog.entries())
        self.history.start()
        self.peers.start()
        self.pulls.sweep()  # hidden copies a killed gateway left in the models directory

    async def close(self) -> None:
        await self.history.stop()
        await self.peers.close()
        await self.pulls.close()  # running pulls stopped; their partial files kept to resume
        await self.manager.close()
        self.sessions.close()
        await self.turns.close()
        self.relay.proxy.close()
        await self.client.aclose()


def build_services(
    settings: Settings,
    factory: ProcessFactory | None = None,
    load_settings: SettingsLoader | None = None,
    probe: MemoryProbe | None = None,
    telemetry: Telemetry | None = None,
    pull_tools: PullTools | None = None,
) -> Services:
    registry = Registry(settings)
    registry.scan()
    client = make_client()
    logs = ChildLogs(settings.child_log_lines, settings.child_log_echo)
    starter = ChildStarter(client, factory, logs) if factory else ChildStarter(client, logs=logs)
    probe = probe or MemoryProbe(reserve_bytes=settings.memory_reserve_mb * 1024**2)
    telemetry = telemetry or Telemetry(activity_log(settings))
    manager = ModelManager(settings, starter, probe, client, telemetry)
    telemetry.watch(manager.models)
    peers = Peers(settings, client)
    telemetry.watch_peers(peers.listing)
    catalog = Catalog(registry, settings, lambda: [m.entry.id for m in manager.loaded()], peers)
    limits = Limits(settings)
    keys = load_keys(settings)
    reloader = Reloader(
        settings, keys, load_settings or (lambda: settings), catalog, limits, manager, peers
    )
    targets = Targets(manager, peers)
    relay = RelayServices(catalog, limits, Proxy(UpstreamPool()), telemetry, targets)
    sessions, shared_locks = open_store(settings)
    pulls = Pulls(lambda: reloader.settings, catalog, reloader.rescan, pull_tools)
    history = MetricsHistory(telemetry.activity, manager.models, HostReader(probe))
    return Services(
        client, manager, reloader, relay, sessions, probe, logs, telemetry, pulls, history, peers,
        shared_locks=shared_locks,
    )  # fmt: skip


def activity_log(settings: Settings) -> ActivityLog:
    """The log of finished requests, as large as configured, with their text if configured."""
    return ActivityLog(settings.activity_size, keep_text=settings.activity_text)
