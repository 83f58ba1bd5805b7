"""The models the gateway runs: one ManagedModel per (model, role), placement (cores, memory,
GPUs: ``placer.py``) with LRU eviction, restarts of pinned models, and the liveness,
idle-unload and placement loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from supervisor.children.child import Backend, ChildStarter, Lease
from supervisor.children.spec import LoadParams, Role, serving_role
from supervisor.config import ModelSettings, Settings
from supervisor.errors import InsufficientMemory, SupervisorError
from supervisor.lifecycle.events import LifecycleEvents, NoEvents
from supervisor.lifecycle.model import ManagedModel, SwapReport
from supervisor.lifecycle.placer import Placer
from supervisor.lifecycle.state import ModelState, ModelStatus
from supervisor.models.memory import MemoryEstimate, MemoryProbe, format_bytes, process_tree_rss
from supervisor.models.registry import ModelEntry
from supervisor.placement.cores import CoreReader, cpu_list
from supervisor.placement.plan import MemoryFit

LOG = logging.getLogger(__name__)
PLACEMENT_CHECK_S = 1.0  # how often the placement loop compares children with the plan
STALE_PLAN_RESTARTS = 2  # a child that started on a plan made stale meanwhile starts again


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        starter: ChildStarter,
        probe: MemoryProbe,
        client: httpx.AsyncClient,
        events: LifecycleEvents | None = None,
        cores: CoreReader | None = None,
    ) -> None:
        self._settings = settings
        self._events = events or NoEvents()
        self._starter = starter
        self._probe = probe
        self._client = client
        self._cores = cores or CoreReader()
        self._placer = self._make_placer(settings)
        self._models: dict[tuple[str, Role], ManagedModel] = {}
        self._health_misses: dict[Backend, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._replan = asyncio.Event()

    def _make_placer(self, settings: Settings) -> Placer:
        cores = self._cores.host_cores(settings.cpu_cores)
        LOG.info("children may use %d cores: CPUs %s (%s)", cores.count, cpu_list(cores.cpus),
                 cores.source)  # fmt: skip
        return Placer(settings, self._probe, cores)

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def events(self) -> LifecycleEvents:
        return self._events

    @property
    def placer(self) -> Placer:
        return self._placer

    # -- the models ---------------------------------------------------------------------------
    def model(self, entry: ModelEntry, role: Role = Role.CHAT) -> ManagedModel:
        key = (entry.id, role)
        model = self._models.get(key)
        if model is None:
            model = ManagedModel(entry, role, self)
            model.pinned = role is Role.CHAT and _own(entry).pinned
            self._models[key] = model
        return model

    def models(self) -> list[ManagedModel]:
        return list(self._models.values())

    def loaded(self) -> list[ManagedModel]:
        return [m for m in self._models.values() if m.backend is not None]

    async def acquire(self, entry: ModelEntry, role: Role = Role.CHAT) -> Lease:
        model = self.model(entry, serving_role(entry, role))
        return await model.acquire(autoload=self._settings.autoload)

    def try_acquire(self, entry: ModelEntry, role: Role = Role.CHAT) -> Lease | None:
        """A slot at once, or None where ``acquire`` would have to wait, load or refuse."""
        model = self._models.get((entry.id, serving_role(entry, role)))
        return model.try_acquire() if model is not None else None

    async def unload(self, entry: ModelEntry) -> bool:
        results = [await m.unload() for m in self._roles_of(entry)]
        return any(results)

    async def swap(
        self, entry: ModelEntry, new: ModelEntry, params: LoadParams | None
    ) -> SwapReport:
        """Swap the chat child to ``new``; the model's other children (embedding, rerank), if
        running, follow."""
        report = await self.model(entry).swap(new, params)
        for role in Role:
            other = self._models.get((entry.id, role))
            if role is not Role.CHAT and other is not None and other.backend is not None:
                await other.swap(new, params)
        return report

    def _roles_of(self, entry: ModelEntry) -> list[ManagedModel]:
        return [m for role in Role if (m := self._models.get((entry.id, role))) is not None]

    def status(self, entry: ModelEntry) -> ModelStatus:
        chat = self.model(entry)
        backend = chat.backend
        return ModelStatus(
            id=entry.id,
            path=chat.entry.path,
            state=chat.state,
            pinned=chat.pinned,
            pid=backend.process.pid if backend else None,
            port=backend.port if backend else None,
            params=chat.params,
            memory_estimate=self.estimate(chat.entry, chat.params).total,
            rss=process_tree_rss(pid) if backend and (pid := backend.process.pid) else None,
            loaded_at=backend.loaded_at if backend else None,
            load_seconds=backend.load_seconds if backend else None,
            last_error=chat.last_error,
            exit_code=chat.exit_code,
            restart_count=chat.restart_count,
            in_flight=backend.in_flight if backend else 0,
            queued=chat.queued,
            embedding_state=self._state_of(entry, Role.EMBEDDING),
            rerank_state=self._state_of(entry, Role.RERANK),
            placements={
                m.role.value: b.placement for m in self._roles_of(entry) if (b := m.serving())
            },
            pids={
                m.role.value: pid
                for m in self._roles_of(entry)
                if (b := m.serving()) and (pid := b.process.pid)
            },
        )

    def _state_of(self, entry: ModelEntry, role: Role) -> ModelState:
        """The state of the child that serves ``role`` for the model (a dedicated reranker's
        main child serves its reranks)."""
        model = self._models.get((entry.id, serving_role(entry, role)))
        return model.state if model is not None else ModelState.UNLOADED

    # -- memory ----------------------------------------------------------------------------
    def estimate(self, entry: ModelEntry, params: LoadParams) -> MemoryEstimate:
        return self._placer.estimate(entry, params)

    def fits_beside(self, model: ManagedModel, entry: ModelEntry, params: LoadParams) -> bool:
        """Whether a second child for ``entry`` fits beside the model's current one. Children
        of the same file share its mmapped weights in RAM (one copy in the page cache)."""
        same_file = model.serving() is not None and not _changed(model.entry, entry)
        return self._placer.memory_fit(entry, params, shares_weights=same_file).fits

    async def make_room(self, model: ManagedModel, entry: ModelEntry, params: LoadParams) -> None:
        """Evict least-recently-used idle models until ``entry`` fits the memory budget and
        the maximum count of loaded models; never a busy or pinned one."""
        while True:
            others = [m for m in self.loaded() if m.entry.id != model.entry.id]
            fit: MemoryFit = self._placer.memory_fit(entry, params)
            limit = self._settings.max_loaded_models
            too_many = limit is not None and len({m.entry.id for m in others}) >= limit
            if fit.fits and not too_many:
                return
            victim = self._least_recently_used(others)
            if victim is None:
                reason = (
                    f"{len(others)} models loaded (max {limit})"
                    if too_many
                    else f"{format_bytes(fit.free)} {fit.where} free"
                )
                raise InsufficientMemory(
                    f"Model '{model.entry.id}' needs about {format_bytes(fit.need)}; {reason}, "
                    "and every loaded model is busy or pinned"
                )
            LOG.info("evicting '%s' (least recently used) to load '%s'", victim.name, model.name)
            self._events.evicted(victim.entry.id)
            await self.unload(victim.entry)

    @staticmethod
    def _least_recently_used(models: list[ManagedModel]) -> ManagedModel | None:
        idle = [
            m
            for m in models
            if m.backend is not None
            and m.state is ModelState.READY
            and not m.pinned
            and m.backend.in_flight == 0
            and m.queued == 0
        ]
        return min(idle, key=lambda m: m.backend.last_used if m.backend else 0.0, default=None)

    # -- ModelHost --------------------------------------------------------------------------------
    async def start_child(
        self, model: ManagedModel, entry: ModelEntry, params: LoadParams
    ) -> Backend:
        """Start a child for ``model`` where the plan puts it, after making way: running
        children whose share shrinks are replaced first, those that only move are re-pinned."""
        role = model.role
        started = time.monotonic()
        try:
            placement = self._placer.place(model, entry, params, self._models.values())
            await self._placer.make_way(self._models.values(), model, entry, params)
            backend = await self._starter.start(self._settings, entry, role, params, placement)
            for _ in range(STALE_PLAN_RESTARTS):
                # Another child started meanwhile and changed the plan: this one has served
                # nothing yet, so starting it again costs a load and no request.
                fresh = self._placer.place(model, entry, params, self._models.values())
                if fresh.threads == placement.threads:
                    break
                await backend.process.stop(self._settings.stop_grace_s)
                placement = fresh
                backend = await self._starter.start(self._settings, entry, role, params, fresh)
        except Exception:
            self._events.load_finished(entry.id, role, time.monotonic() - started, ok=False)
            raise
        finally:
            self._replan.set()
        self._events.load_finished(entry.id, role, time.monotonic() - started, ok=True)
        return backend

    def child_died(self, model: ManagedModel, restart: bool) -> None:
        """Pinned models (and children killed for not answering) come back by themselves,
        with exponential backoff; others load again on their next request."""
        if restart or model.pinned:
            self.spawn(self._restart(model), f"restart:{model.name}")

    async def _restart(self, model: ManagedModel) -> None:
        settings = self._settings
        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=0.5, max=settings.restart_backoff_max_s),
            stop=stop_after_attempt(settings.restart_max_attempts),
            retry=retry_if_exception_type(SupervisorError),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    model.restart_count += 1
                    self._events.restarted(model.entry.id, model.role)
                    await model.load()
        except SupervisorError as exc:
            LOG.error("[%s] gave up restarting: %s", model.name, exc.message)

    # -- loops -------------------------------------------------------------------------------------
    def start(self, entries: list[ModelEntry]) -> None:
        """Load pinned and preloaded models, and start the liveness and idle loops."""
        for entry in entries:
            own = _own(entry)
            if own.pinned or own.preload:
                self.spawn(self._preload(entry), f"preload:{entry.id}")
        self.spawn(self._liveness_loop(), "liveness")
        self.spawn(self._idle_loop(), "idle-unload")
        if self._settings.place_children:
            self.spawn(self._placement_loop(), "placement")

    async def _preload(self, entry: ModelEntry) -> None:
        try:
            await self.model(entry).load()
        except SupervisorError as exc:
            LOG.error("[%s] could not load at start-up: %s", entry.id, exc.message)

    async def _liveness_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.health_interval_s)
            models = [m for m in self._models.values() if m.serving() is not None]
            await asyncio.gather(*(self._check(m) for m in models))
            serving = {m.serving() for m in models}
            self._health_misses = {b: n for b, n in self._health_misses.items() if b in serving}

    async def _check(self, model: ManagedModel) -> None:
        backend = model.serving()
        if backend is None:
            return
        try:
            response = await self._client.get(
                f"{backend.base_url}/health", timeout=self._settings.health_timeout_s
            )
            alive = response.status_code == 200
        except httpx.HTTPError:
            alive = False
        misses = 0 if alive else self._health_misses.get(backend, 0) + 1
        self._health_misses[backend] = misses
        if misses >= self._settings.health_failures:
            LOG.error("[%s] pid %s stopped answering /health: killing and restarting it",
                      model.name, backend.process.pid)  # fmt: skip
            del self._health_misses[backend]
            model.kill_unresponsive(backend)

    async def _idle_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for model in list(self._models.values()):
                ttl = _own(model.entry).idle_ttl_s or self._settings.idle_ttl_s
                backend = model.serving()
                if ttl is None or backend is None or model.pinned:
                    continue
                if backend.in_flight == 0 and model.queued == 0 and now - backend.last_used > ttl:
                    LOG.info("[%s] idle for %.0fs: unloading", model.name, now - backend.last_used)
                    await model.unload()

    async def _placement_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._replan.wait(), PLACEMENT_CHECK_S)
            self._replan.clear()
            try:
                await self.follow_plan()
            except Exception:  # the loop must outlive any one child's trouble
                LOG.exception("placement check failed")

    async def follow_plan(self) -> None:
        """One step of bringing the running children in line with the plan (``Placer``); the
        loop comes back at once after a replacement."""
        if await self._placer.follow_plan(list(self._models.values())):
            self._replan.set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- configuration reload ------------------------------------------------------------------
    async def apply(self, settings: Settings, entries: list[ModelEntry]) -> dict[str, list[str]]:
        """Adopt new settings and a rescanned registry: swap loaded models whose file or
        configuration changed, unload removed ones. New models need nothing: they load on
        demand (or now, if pinned or preloaded); the caller, which knows the previous
        registry, reports them."""
        self._settings = settings
        self._placer = self._make_placer(settings)
        by_id = {e.id: e for e in entries}
        report: dict[str, list[str]] = {"swapped": [], "unloaded": [], "added": []}
        for (model_id, role), model in list(self._models.items()):
            new = by_id.get(model_id)
            if new is None:
                model.removed = True
                await model.unload()
                del self._models[(model_id, role)]
                report["unloaded"].append(model.name)
                continue
            model.pinned = role is Role.CHAT and _own(new).pinned
            if model.serving() is not None and _changed(model.entry, new):
                await model.swap(new)
                report["swapped"].append(model.name)
            else:
                model.entry = new
        for entry in entries:
            own = _own(entry)
            if (own.pinned or own.preload) and self.model(entry).serving() is None:
                self.spawn(self._preload(entry), f"preload:{entry.id}")
        return report

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(m.close() for m in self._models.values()), return_exceptions=True)


def _own(entry: ModelEntry) -> ModelSettings:
    return entry.overrides or ModelSettings(file=entry.file_name)


def _changed(old: ModelEntry, new: ModelEntry) -> bool:
    """A different file (path, size or time) or different launch settings."""

    def key(e: ModelEntry) -> tuple[object, ...]:
        return (e.path, e.size, e.modified, e.overrides, e.mmproj, e.mmproj_size)

    return key(old) != key(new)
