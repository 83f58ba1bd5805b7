"""One model in one role: its state machine, its current child, the children still draining,
and the FIFO queue of requests waiting for a slot.

Every transition happens here, under one lock per model, so loads, unloads, swaps and
requests for the same model never race. A request never sees a child being replaced: it waits
(queued, or for the state to settle) and then gets the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from supervisor.children.child import Backend, Lease
from supervisor.children.spec import LoadParams, Role, child_name
from supervisor.clock import Clock
from supervisor.config import Settings
from supervisor.errors import (
    ModelLoadError,
    ModelNotFound,
    ModelUnavailable,
    QueueFull,
    QueueTimeout,
    SupervisorError,
)
from supervisor.lifecycle.events import LifecycleEvents
from supervisor.lifecycle.state import ModelState, check_transition
from supervisor.models.registry import ModelEntry
from supervisor.redact import redact_paths

LOG = logging.getLogger(__name__)


class ModelHost(Protocol):
    """What a model needs from the manager that owns it."""

    @property
    def settings(self) -> Settings: ...
    @property
    def events(self) -> LifecycleEvents: ...
    @property
    def clock(self) -> Clock: ...
    async def start_child(
        self, model: ManagedModel, entry: ModelEntry, params: LoadParams
    ) -> Backend: ...
    async def make_room(
        self, model: ManagedModel, entry: ModelEntry, params: LoadParams
    ) -> None: ...
    def fits_beside(self, model: ManagedModel, entry: ModelEntry, params: LoadParams) -> bool: ...
    def child_died(self, model: ManagedModel, restart: bool) -> None: ...


@dataclass(frozen=True)
class SwapReport:
    mode: str  # "blue-green": new beside old; "stop-start": memory could not hold both
    seconds: float
    backend: Backend


class ManagedModel:
    def __init__(self, entry: ModelEntry, role: Role, host: ModelHost) -> None:
        self.entry = entry
        self.role = role
        self.params = LoadParams()
        self.pinned = False
        self.state = ModelState.UNLOADED
        self.backend: Backend | None = None
        self.last_error: str | None = None
        self.exit_code: int | None = None
        self.restart_count = 0
        self.removed = False  # dropped by a configuration reload: serves nothing more
        self._host = host
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()  # one load, unload or swap at a time
        self._loading: asyncio.Task[Backend] | None = None
        self._waiters: deque[asyncio.Future[Lease[Backend] | None]] = deque()
        self._retiring: set[Backend] = set()  # stopped on purpose: their exit is no crash
        self._restart_on_exit: set[Backend] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- requests ------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def serving(self) -> Backend | None:
        backend = self.backend
        if self.state is ModelState.READY and backend is not None and backend.process.alive:
            return backend
        return None

    async def acquire(self, *, autoload: bool) -> Lease[Backend]:
        """A slot on the current child: loading the model, or waiting for a swap, an unload
        or a restart to settle, or queueing (FIFO) until a slot frees."""
        while True:
            if self.removed:
                raise ModelNotFound(self.entry.id)
            backend = self.serving()
            if backend is not None:
                lease = self.try_acquire()
                if lease is None:
                    lease = await self._enqueue()
                if lease is not None:
                    return lease
            elif self.state in (ModelState.UNLOADED, ModelState.FAILED):
                if not autoload:
                    raise ModelUnavailable(f"Model '{self.entry.id}' is not loaded")
                await self.load()
            else:
                await self._changed.wait()

    def try_acquire(self) -> Lease[Backend] | None:
        """A slot on the current child at once, if one is free and nobody queues for it;
        else None (``acquire`` waits, loads or refuses)."""
        backend = self.serving()
        if backend is None or self.removed or self._waiters or not backend.has_free_slot:
            return None
        return Lease(backend, self._released)

    async def _enqueue(self) -> Lease[Backend] | None:
        settings = self._host.settings
        if self.queued >= settings.queue_max:
            raise QueueFull(f"Model '{self.entry.id}' has {self.queued} requests queued")
        waiter: asyncio.Future[Lease[Backend] | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(settings.queue_timeout_s):
                return await waiter
        except BaseException as exc:
            # Granted in the same instant we gave up (timeout, client gone): hand it back.
            if waiter.done() and not waiter.cancelled() and (lease := waiter.result()):
                lease.release()
            if isinstance(exc, TimeoutError):
                raise QueueTimeout(
                    f"Model '{self.entry.id}' had no free slot for {settings.queue_timeout_s:g}s"
                ) from None
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        """Hand free slots to queued requests in order; if the model cannot serve now, send
        them back to ``acquire`` to wait for (or start) the next child."""
        backend = self.serving()
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
            elif backend is None:
                self._waiters.popleft().set_result(None)
            elif backend.has_free_slot:
                self._waiters.popleft().set_result(Lease(backend, self._released))
            else:
                break

    def _released(self, backend: Backend) -> None:
        backend.last_used = self._host.clock.monotonic()  # on the clock the idle loop reads
        if backend is self.backend:
            self._wake()

    def _set(self, state: ModelState) -> None:
        check_transition(self.state, state)
        LOG.info("[%s] %s -> %s", self.name, self.state, state)
        self.state = state
        self._changed.set()
        self._changed = asyncio.Event()
        self._wake()

    @property
    def name(self) -> str:
        return child_name(self.entry.id, self.role)

    # -- load, unload ---------------------------------------------------------------------
    async def load(self, params: LoadParams | None = None) -> Backend:
        """Make the model ready (with ``params`` if given: a loaded model whose parameters
        differ is swapped to them). Concurrent callers share one load and its outcome."""
        backend = self.serving()
        if backend is not None:
            if params is None or params == self.params:
                return backend
            return (await self.swap(self.entry, params)).backend
        task = self._loading
        if task is None or task.done():
            task = asyncio.create_task(self._load(params), name=f"load:{self.name}")
            self._loading = task
        return await asyncio.shield(task)

    async def _load(self, params: LoadParams | None) -> Backend:
        async with self._lock:
            backend = self.serving()
            if backend is not None:
                return backend
            if self.state is ModelState.READY:  # its child died; the watcher is catching up
                self._set(ModelState.FAILED)
            return await self._start_as_current(self.entry, params or self.params)

    async def _start_as_current(self, entry: ModelEntry, params: LoadParams) -> Backend:
        self._set(ModelState.LOADING)
        try:
            await self._host.make_room(self, entry, params)
            backend = await self._host.start_child(self, entry, params)
        except BaseException as exc:
            # Shown on the model routes: no host paths (the log has the error whole).
            self.last_error = redact_paths(
                exc.message if isinstance(exc, SupervisorError) else repr(exc)
            )
            self._set(ModelState.FAILED)
            raise
        self.entry, self.params = entry, params
        self._install(backend)
        return backend

    def _install(self, backend: Backend) -> None:
        self.backend = backend
        backend.last_used = self._host.clock.monotonic()
        self.last_error = None
        self._spawn(self._watch(backend), f"watch:{self.name}")
        self._set(ModelState.READY)

    async def unload(self) -> bool:
        """Drain in-flight requests (bounded), then stop the child. Requests that arrive
        meanwhile wait, and load the model again afterwards if autoload is on."""
        async with self._lock:
            backend = self.backend
            if backend is None:
                if self.state is ModelState.FAILED:
                    self._set(ModelState.UNLOADED)
                return False
            if self.state is ModelState.READY:
                self._set(ModelState.DRAINING)
                await self._drain(backend)
            self._set(ModelState.STOPPING)
            await self._stop(backend)
            self.backend = None
            self._set(ModelState.UNLOADED)
            self._host.events.unloaded(self.entry.id, self.role)
            return True

    async def _drain(self, backend: Backend) -> None:
        grace = self._host.settings.drain_timeout_s
        try:
            await asyncio.wait_for(backend.idle.wait(), grace)
        except TimeoutError:
            LOG.warning("[%s] %d requests still running after %.0fs drain; stopping anyway",
                        self.name, backend.in_flight, grace)  # fmt: skip

    async def _stop(self, backend: Backend) -> None:
        self._retiring.add(backend)
        await backend.process.stop(self._host.settings.stop_grace_s)

    # -- swap -------------------------------------------------------------------------------
    async def swap(self, entry: ModelEntry, params: LoadParams | None = None) -> SwapReport:
        report = await self._swap(entry, params)
        self._host.events.swapped(self.entry.id, self.role, report.mode, report.seconds)
        return report

    @property
    def transitioning(self) -> bool:
        """Whether a load, unload, swap or replacement holds the model now."""
        return self._lock.locked()

    async def replace_child(self) -> bool:
        """Drain the child (new requests wait), stop it, and start the model again with the
        placement planned now (see ``lifecycle/placer.py`` for why never beside itself). Only
        while the model serves; True if it was replaced. If the new child fails to start, the
        old settings are started again and the error raised."""
        async with self._lock:
            old = self.serving()
            if old is None or self.removed:
                return False
            started = self._host.clock.monotonic()
            await self._swap_stop_start(old, self.entry, self.params, started)
            return True

    async def _swap(self, entry: ModelEntry, params: LoadParams | None) -> SwapReport:
        """Replace the child with one for ``entry`` (a new file version) and ``params``.

        Blue/green when memory holds both: the new child starts beside the old, takes every
        new request once ready, and the old finishes its requests, then stops. Otherwise
        stop-then-start, requests queued meanwhile. If the new version fails, the old one
        keeps (or, after stop-then-start, resumes) serving and the error is raised."""
        params = params if params is not None else self.params
        clock = self._host.clock
        async with self._lock:
            started = clock.monotonic()
            old = self.serving()
            if old is None:
                if self.state is ModelState.READY:
                    self._set(ModelState.FAILED)
                backend = await self._start_as_current(entry, params)
                return SwapReport("load", clock.monotonic() - started, backend)
            if self._host.fits_beside(self, entry, params):
                backend = await self._host.start_child(self, entry, params)
                self.entry, self.params, self.backend = entry, params, backend
                backend.last_used = clock.monotonic()
                self._spawn(self._watch(backend), f"watch:{self.name}")
                self._wake()
                self._spawn(self._retire(old), f"retire:{self.name}")
                return SwapReport("blue-green", clock.monotonic() - started, backend)
            return await self._swap_stop_start(old, entry, params, started)

    async def _swap_stop_start(
        self, old: Backend, entry: ModelEntry, params: LoadParams, started: float
    ) -> SwapReport:
        self._set(ModelState.DRAINING)
        await self._drain(old)
        self._set(ModelState.STOPPING)
        await self._stop(old)
        self.backend = None
        self._set(ModelState.UNLOADED)
        try:
            backend = await self._start_as_current(entry, params)
        except ModelLoadError as exc:
            LOG.warning("[%s] new version failed; restoring the old one", self.name)
            await self._start_as_current(old.entry, old.params)
            raise ModelLoadError(
                self.entry.id, "swap failed; the old version is serving again", exc.stderr_tail
            ) from exc
        return SwapReport("stop-start", self._host.clock.monotonic() - started, backend)

    async def _retire(self, old: Backend) -> None:
        self._retiring.add(old)  # from now on its exit is expected, and close() stops it
        await self._drain(old)
        await self._stop(old)

    # -- children dying ----------------------------------------------------------------------
    async def _watch(self, backend: Backend) -> None:
        code = await backend.process.wait_exit()
        if backend in self._retiring:
            self._retiring.discard(backend)
            return
        restart = backend in self._restart_on_exit
        self._restart_on_exit.discard(backend)
        tail = backend.process.output_tail()[-5:]
        LOG.warning("[%s] child exited unexpectedly with code %s", self.name, code)
        self.exit_code = code
        self.last_error = redact_paths(
            f"llama-server exited with code {code}" + "".join(f"\n{t}" for t in tail)
        )
        if backend is self.backend:
            self.backend = None
            if self.state is not ModelState.FAILED:
                self._set(ModelState.FAILED)
            self._host.child_died(self, restart)

    def kill_unresponsive(self, backend: Backend) -> None:
        """For the liveness check: a child that stopped answering is killed and restarted."""
        self._restart_on_exit.add(backend)
        backend.process.kill_now()

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop every child of this model at once (gateway shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        children = [b for b in (self.backend, *self._retiring) if b is not None]
        self._retiring.update(children)
        await asyncio.gather(
            *(b.process.stop(self._host.settings.stop_grace_s) for b in children),
            return_exceptions=True,
        )
        self.backend = None
