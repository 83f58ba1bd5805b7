"""The gateway's services, built once per app in its lifespan and reached by routes through
``app.state``: the registry, the model manager, the proxy, model picking and reload."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from supervisor.children.child import ChildStarter, Lease, ProcessFactory
from supervisor.children.logs import ChildLogs
from supervisor.children.spec import Role
from supervisor.config import Settings
from supervisor.errors import ModelUnavailable, SupervisorError
from supervisor.http.auth import KeyRing, load_keys
from supervisor.lifecycle.manager import ModelManager
from supervisor.models.memory import MemoryProbe
from supervisor.models.registry import ModelEntry, Registry
from supervisor.redact import redact_paths
from supervisor.relay.asgi import Proxy, make_client
from supervisor.relay.limits import RequestLimits
from supervisor.relay.upstream import UpstreamPool
from supervisor.sessions.store import SessionStore
from supervisor.telemetry.prometheus import Telemetry

LOG = logging.getLogger(__name__)
SettingsLoader = Callable[[], Settings]


@dataclass
class Gateway:
    settings: Settings
    registry: Registry
    manager: ModelManager
    proxy: Proxy
    client: httpx.AsyncClient
    probe: MemoryProbe
    sessions: SessionStore
    load_settings: SettingsLoader
    keys: KeyRing
    logs: ChildLogs
    started_at: float = field(default_factory=time.time)
    last_error: str | None = None
    performance: dict[str, Performance] = field(default_factory=dict)
    telemetry: Telemetry = field(default_factory=Telemetry)
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _session_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )
    # The settings' request limits, made once per settings rather than per request; the /v1
    # routes add seed 003's stop-list limit.
    limits: RequestLimits = field(init=False)
    openai_limits: RequestLimits = field(init=False)

    def __post_init__(self) -> None:
        self._set_limits(self.settings)

    def _set_limits(self, settings: Settings) -> None:
        self.limits = RequestLimits.of(settings)
        self.openai_limits = RequestLimits.of(settings, openai_stop=True)

    def session_lock(self, session_id: str) -> asyncio.Lock:
        """One lock per session, so concurrent requests on a session take turns."""
        lock = self._session_locks.get(session_id)
        if lock is None:
            lock = asyncio.Lock()
            self._session_locks[session_id] = lock
        return lock

    def record_timings(self, model_id: str, answer: object) -> None:
        """Count a finished answer's tokens (metrics) and what its ``timings`` say of the
        generation's speed (seed 001's performance)."""
        self.telemetry.count_answer(model_id, answer)
        timings = answer.get("timings") if isinstance(answer, dict) else None
        if isinstance(timings, dict):
            self.performance.setdefault(model_id, Performance()).add(timings)

    def pick_model(self, name: str | None) -> ModelEntry:
        """The model a request names; without a name, the configured default, else the only
        loaded model (guide/API.md: never a silent fallback for an unknown name)."""
        if name is not None:
            return self.registry.resolve(name)
        if self.settings.default_model:
            return self.registry.resolve(self.settings.default_model)
        loaded = {m.entry.id: m.entry for m in self.manager.loaded()}
        if len(loaded) == 1:
            return self.registry.resolve(next(iter(loaded)))
        raise ModelUnavailable(
            "No model named in the request and no default model configured"
            if not loaded
            else "No model named in the request and several models are loaded"
        )

    async def acquire(self, entry: ModelEntry, role: Role = Role.CHAT) -> Lease:
        return await self.manager.acquire(entry, role)

    def try_acquire(self, entry: ModelEntry, role: Role = Role.CHAT) -> Lease | None:
        return self.manager.try_acquire(entry, role)

    async def reload(self) -> dict[str, list[str]]:
        """Re-read the configuration and rescan the models directories (SIGHUP, or
        POST /api/v2/reload): changed models are hot-swapped, removed ones drained."""
        async with self._reload_lock:
            settings = self.load_settings()
            keys = load_keys(settings)  # a bad key file fails the reload, old keys stay
            registry = Registry(settings)
            entries = registry.scan()
            report = await self.manager.apply(settings, entries)
            known = {entry.id for entry in self.registry.entries()}
            report["added"] = sorted({entry.id for entry in entries} - known)
            self.settings, self.registry, self.keys = settings, registry, keys
            self._set_limits(settings)
            LOG.info("configuration reloaded: %s", report)
            return report

    def reload_in_background(self, done: Callable[[], None] | None = None) -> None:
        async def run() -> None:
            try:
                await self.reload()
            except SupervisorError as exc:
                self.last_error = redact_paths(exc.message)  # public: /api/v2/health
                LOG.error("reload failed: %s", exc.message)
            finally:
                if done is not None:
                    done()

        self.manager.spawn(run(), "reload")

    async def close(self) -> None:
        await self.manager.close()
        self.sessions.close()
        self.proxy.close()
        await self.client.aclose()


def build_gateway(
    settings: Settings,
    factory: ProcessFactory | None = None,
    load_settings: SettingsLoader | None = None,
    probe: MemoryProbe | None = None,
    telemetry: Telemetry | None = None,
) -> Gateway:
    registry = Registry(settings)
    registry.scan()
    client = make_client()
    logs = ChildLogs(settings.child_log_lines, settings.child_log_echo)
    starter = ChildStarter(client, factory, logs) if factory else ChildStarter(client, logs=logs)
    probe = probe or MemoryProbe(reserve_bytes=settings.memory_reserve_mb * 1024**2)
    telemetry = telemetry or Telemetry()
    manager = ModelManager(settings, starter, probe, client, telemetry)
    telemetry.watch(manager.models)
    sessions = SessionStore(settings.data_dir / "sessions.sqlite3", open_later=True)
    return Gateway(
        settings,
        registry,
        manager,
        Proxy(UpstreamPool()),
        client,
        probe,
        sessions,
        load_settings or (lambda: settings),
        keys=load_keys(settings),
        logs=logs,
        telemetry=telemetry,
    )


@dataclass
class Performance:
    """Seed 001's ``performance``: tokens generated and their average speed, per model."""

    tokens: int = 0
    seconds: float = 0.0

    def add(self, timings: dict[str, object]) -> None:
        count, millis = timings.get("predicted_n"), timings.get("predicted_ms")
        if isinstance(count, int) and isinstance(millis, int | float):
            self.tokens += count
            self.seconds += millis / 1000

    @property
    def average_speed(self) -> float:
        return round(self.tokens / self.seconds, 1) if self.seconds else 0.0
