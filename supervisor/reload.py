"""Configuration reload (SIGHUP, or ``POST /api/v2/reload``): the settings and keys in force,
re-read on demand and applied to the catalog, the request limits, the models and the peers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from supervisor.config import Settings
from supervisor.errors import SupervisorError
from supervisor.http.auth import KeyRing, load_keys
from supervisor.lifecycle.manager import ModelManager
from supervisor.models.catalog import Catalog
from supervisor.models.registry import ModelEntry, Registry
from supervisor.peers.directory import Peers
from supervisor.redact import redact_paths
from supervisor.relay.limits import Limits

LOG = logging.getLogger(__name__)
SettingsLoader = Callable[[], Settings]


class Reloader:
    """Holds the settings and keys in force (admission reads both: ``http/admission.py``),
    and the last reload's error, shown by ``/api/v2/health``."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyRing,
        load_settings: SettingsLoader,
        catalog: Catalog,
        limits: Limits,
        manager: ModelManager,
        peers: Peers | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.last_error: str | None = None
        self._load_settings = load_settings
        self._catalog = catalog
        self._limits = limits
        self._manager = manager
        self._peers = peers
        self._lock = asyncio.Lock()

    async def reload(self) -> dict[str, list[str]]:
        """Re-read the configuration and rescan the models directories: changed models are
        hot-swapped, removed ones drained; the report names them, and the models added."""
        async with self._lock:
            settings = self._load_settings()
            keys = load_keys(settings)  # a bad key file fails the reload, old keys stay
            registry = Registry(settings)
            entries = registry.scan()
            report = await self._manager.apply(settings, entries)
            known = {entry.id for entry in self._catalog.entries()}
            report["added"] = sorted({entry.id for entry in entries} - known)
            self.settings, self.keys = settings, keys
            self._catalog.replace(registry, settings)
            self._limits.apply(settings)
            if self._peers is not None:
                self._peers.replace(settings)
            LOG.info("configuration reloaded: %s", report)
            return report

    async def rescan(self) -> list[ModelEntry]:
        """Rescan the models directories with the settings in force (no configuration
        re-read), applied as a reload applies them: a model pulled or imported is served at
        once. Returns the new entries. The scan reads every model file's header: it runs in
        a worker thread (the registry it fills is its own until ``replace``)."""
        async with self._lock:
            registry = Registry(self.settings)
            entries = await asyncio.to_thread(registry.scan)
            report = await self._manager.apply(self.settings, entries)
            self._catalog.replace(registry, self.settings)
            LOG.info("models rescanned: %s", report)
            return entries

    def reload_in_background(self, done: Callable[[], None] | None = None) -> None:
        """Reload in a task of the manager's (a signal handler cannot wait); a failure is
        logged and kept as ``last_error``. ``done`` runs when it is over, either way."""

        async def run() -> None:
            try:
                await self.reload()
            except SupervisorError as exc:
                self.last_error = redact_paths(exc.message)  # public: /api/v2/health
                LOG.error("reload failed: %s", exc.message)
            finally:
                if done is not None:
                    done()

        self._manager.spawn(run(), "reload")
