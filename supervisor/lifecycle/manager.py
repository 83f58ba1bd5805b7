"""The models the gateway runs, behind one object: the table of models (``table.py``), making
room by LRU eviction (``eviction.py``), starting and restarting children (``starts.py``),
the liveness, idle-unload and placement loops (``watch.py``), status snapshots
(``status.py``) and configuration reload (``reload.py``). This class only wires them and
delegates; it is also the host each ManagedModel calls back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import httpx

from supervisor.children.child import Backend, ChildStarter, Lease
from supervisor.children.spec import LoadParams, Role
from supervisor.clock import Clock, SystemClock
from supervisor.config import Settings
from supervisor.errors import SupervisorError
from supervisor.lifecycle import eviction, reload
from supervisor.lifecycle.context import LifecycleContext
from supervisor.lifecycle.events import LifecycleEvents, NoEvents
from supervisor.lifecycle.model import ManagedModel, SwapReport
from supervisor.lifecycle.placer import Placer
from supervisor.lifecycle.starts import ChildStarts
from supervisor.lifecycle.state import ModelState, ModelStatus
from supervisor.lifecycle.status import StatusReader
from supervisor.lifecycle.table import ModelTable
from supervisor.lifecycle.watch import Watch
from supervisor.models.memory import MemoryEstimate, MemoryProbe
from supervisor.models.registry import ModelEntry
from supervisor.placement.cores import CoreReader, cpu_list
from supervisor.rpc.workers import (
    WorkerChecks,
    model_workers,
    refuse_shared_workers,
    shared_workers,
)

LOG = logging.getLogger(__name__)


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        starter: ChildStarter,
        probe: MemoryProbe,
        client: httpx.AsyncClient,
        events: LifecycleEvents | None = None,
        cores: CoreReader | None = None,
        clock: Clock | None = None,
        workers: WorkerChecks | None = None,
    ) -> None:
        self._probe = probe
        self._workers = workers or WorkerChecks()  # RPC workers: probed before each load
        self._cores = cores or CoreReader()
        clock = clock or SystemClock()
        placer = self._make_placer(settings, clock)
        self._context = LifecycleContext(settings, placer, events or NoEvents(), clock)
        self._table = ModelTable(lambda entry, role: ManagedModel(entry, role, self))
        self._watch = Watch(self._context, self._table, client)
        self._starts = ChildStarts(self._context, starter, self._table, self._watch.replan)
        self._status = StatusReader(self._context, self._table)
        self._tasks: set[asyncio.Task[None]] = set()

    def _make_placer(self, settings: Settings, clock: Clock) -> Placer:
        cores = self._cores.host_cores(settings.cpu_cores)
        LOG.info("children may use %d cores: CPUs %s (%s)", cores.count, cpu_list(cores.cpus),
                 cores.source)  # fmt: skip
        return Placer(settings, self._probe, cores, clock, self._workers)

    @property
    def settings(self) -> Settings:
        return self._context.settings

    @property
    def events(self) -> LifecycleEvents:
        return self._context.events

    @property
    def clock(self) -> Clock:
        return self._context.clock

    @property
    def placer(self) -> Placer:
        return self._context.placer

    # -- the models (table.py) ------------------------------------------------------------------
    def model(self, entry: ModelEntry, role: Role = Role.CHAT) -> ManagedModel:
        """The model in ``role``, made (unloaded) if new: for those about to use it; to look,
        ``status``."""
        return self._table.model(entry, role)

    def get(self, entry: ModelEntry, role: Role = Role.CHAT) -> ManagedModel | None:
        """The model in ``role`` if the table has it (looking makes nothing)."""
        return self._table.get(entry, role)

    def models(self) -> list[ManagedModel]:
        return self._table.models()

    def loaded(self) -> list[ManagedModel]:
        return self._table.loaded()

    async def acquire(self, entry: ModelEntry, role: Role = Role.CHAT) -> Lease[Backend]:
        return await self._table.acquire(entry, role, autoload=self.settings.autoload)

    def try_acquire(self, entry: ModelEntry, role: Role = Role.CHAT) -> Lease[Backend] | None:
        return self._table.try_acquire(entry, role)

    async def load(self, entry: ModelEntry, params: LoadParams | None = None) -> Backend:
        return await self._table.load(entry, params)

    async def unload(self, entry: ModelEntry) -> bool:
        return await self._table.unload(entry)

    async def swap(
        self, entry: ModelEntry, new: ModelEntry, params: LoadParams | None
    ) -> SwapReport:
        return await self._table.swap(entry, new, params)

    def status(self, entry: ModelEntry) -> ModelStatus:
        return self._status.status(entry)

    def estimate(self, entry: ModelEntry, params: LoadParams) -> MemoryEstimate:
        return self.placer.estimate(entry, params)

    # -- ModelHost: what each ManagedModel calls back --------------------------------------------
    def fits_beside(self, model: ManagedModel, entry: ModelEntry, params: LoadParams) -> bool:
        if model_workers(self.settings, entry):
            return False  # an rpc-server serves one child at a time: never two side by side
        return eviction.fits_beside(self.placer, model, entry, params)

    async def make_room(self, model: ManagedModel, entry: ModelEntry, params: LoadParams) -> None:
        """Check the model's RPC workers (a quick load error naming one that is down, before
        anything is evicted for it), then evict until it fits, counting what they have free."""
        workers = model_workers(self.settings, entry)
        if workers:
            await self._take_workers(model, entry, workers)
        limit = self.settings.max_loaded_models
        await eviction.make_room(self._table, self.placer, limit, self.events, model, entry, params)

    async def _take_workers(
        self, model: ManagedModel, entry: ModelEntry, workers: list[str]
    ) -> None:
        """Probe ``workers``; a worker that another model's child holds (an rpc-server serves
        one client at a time) is freed by evicting that model when it is idle, as memory
        eviction would, and probed after; when it is busy, pinned or loading, a load error."""
        settings = self.settings
        holders = {
            other: model_workers(settings, other.entry)
            for other in self._table.models()
            if other is not model
            and (other.backend is not None or other.state is ModelState.LOADING)
            and shared_workers(workers, model_workers(settings, other.entry))
        }
        stuck = {
            o.name: theirs
            for o, theirs in holders.items()
            if eviction.least_recently_used([o]) is None  # busy, pinned or loading
        }
        refuse_shared_workers(entry.id, workers, stuck)
        held = {key for theirs in holders.values() for key in shared_workers(workers, theirs)}
        free_now = [worker for worker in workers if not shared_workers([worker], list(held))]
        await self._workers.check(entry.id, free_now, settings.rpc_allow_public)
        for other in holders:
            LOG.info("evicting '%s' (it holds an RPC worker) to load '%s'", other.name, model.name)
            self.events.evicted(other.entry.id)
            await other.unload()
        await self._workers.check(entry.id, sorted(held), settings.rpc_allow_public)

    async def start_child(
        self, model: ManagedModel, entry: ModelEntry, params: LoadParams
    ) -> Backend:
        return await self._starts.start(model, entry, params)

    def child_died(self, model: ManagedModel, restart: bool) -> None:
        """Pinned models (and children killed for not answering) come back by themselves,
        with exponential backoff; others load again on their next request."""
        if restart or model.pinned:
            self.spawn(self._starts.restart(model), f"restart:{model.name}")

    # -- loops (watch.py) ---------------------------------------------------------------------
    def start(self, entries: list[ModelEntry]) -> None:
        """Load pinned and preloaded models, and start the liveness and idle loops."""
        self._preload(entries)
        self.spawn(self._watch.liveness_loop(), "liveness")
        self.spawn(self._watch.idle_loop(), "idle-unload")
        if self.settings.place_children:
            self.spawn(self._watch.placement_loop(), "placement")

    def _preload(self, entries: list[ModelEntry]) -> None:
        for entry in reload.to_preload(self._table, entries):
            self.spawn(self._load_at_start(entry), f"preload:{entry.id}")

    async def _load_at_start(self, entry: ModelEntry) -> None:
        try:
            await self._table.model(entry).load()
        except SupervisorError as exc:
            LOG.error("[%s] could not load at start-up: %s", entry.id, exc.message)

    async def follow_plan(self) -> None:
        await self._watch.follow_plan()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- configuration reload (reload.py) -------------------------------------------------------
    async def apply(self, settings: Settings, entries: list[ModelEntry]) -> dict[str, list[str]]:
        """Adopt new settings and a rescanned registry: swap loaded models whose file or
        configuration changed, unload removed ones, load new pinned or preloaded ones."""
        self._context.settings = settings
        self._context.placer = self._make_placer(settings, self.clock)
        report = await reload.adopt(self._table, entries)
        self._preload(entries)
        return report

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._table.close()
