"""The running children, one per (model, role): start on demand, notice exits, stop all."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from ..config import Settings
from ..errors import ModelLoadError, ModelUnavailable
from ..registry import ModelEntry
from .argv import Role, build_argv, launch_spec
from .process import BackendProcess, free_port

LOG = logging.getLogger(__name__)
BIND_RETRIES = 3  # the free port we picked can be taken before the child binds it


class ChildProcess(Protocol):
    name: str
    base_url: str

    @property
    def pid(self) -> int | None: ...
    @property
    def alive(self) -> bool: ...
    def output_tail(self) -> list[str]: ...
    async def start(self) -> None: ...
    async def wait_ready(self, client: httpx.AsyncClient, timeout: float) -> None: ...
    async def wait_exit(self) -> int: ...
    async def stop(self, grace: float) -> None: ...
    def kill_now(self) -> None: ...


ProcessFactory = Callable[[str, list[str], str], ChildProcess]


@dataclass
class Backend:
    """A ready child and what requests need to reach it."""

    entry: ModelEntry
    role: Role
    process: ChildProcess
    port: int
    started_at: float
    ready_at: float
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)

    @property
    def base_url(self) -> str:
        return self.process.base_url

    @property
    def key(self) -> tuple[str, Role]:
        return (self.entry.id, self.role)


class Lease:
    """One request's hold on a backend; release is idempotent (streams end in odd ways)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._released = False
        backend.in_flight += 1

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.backend.in_flight -= 1
            self.backend.last_used = time.monotonic()


def _default_factory(name: str, argv: list[str], base_url: str) -> ChildProcess:
    return BackendProcess(name, argv, base_url)


class BackendPool:
    def __init__(
        self,
        settings: Settings,
        client: httpx.AsyncClient,
        binary: Callable[[], Path],
        factory: ProcessFactory = _default_factory,
    ) -> None:
        self._settings = settings
        self._client = client
        self._binary = binary
        self._factory = factory
        self._backends: dict[tuple[str, Role], Backend] = {}
        self._locks: dict[tuple[str, Role], asyncio.Lock] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    def loaded(self) -> list[Backend]:
        return list(self._backends.values())

    def get(self, entry: ModelEntry, role: Role = Role.CHAT) -> Backend | None:
        backend = self._backends.get((entry.id, role))
        return backend if backend and backend.process.alive else None

    async def lease(self, entry: ModelEntry, role: Role, *, autoload: bool = True) -> Lease:
        backend = self.get(entry, role)
        if backend is None:
            if not autoload:
                raise ModelUnavailable(f"Model '{entry.id}' is not loaded")
            backend = await self.load(entry, role)
        return Lease(backend)

    async def load(self, entry: ModelEntry, role: Role = Role.CHAT) -> Backend:
        """Start the child for (entry, role) unless one runs; concurrent callers share one
        start."""
        key = (entry.id, role)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            backend = self.get(entry, role)
            if backend is not None:
                return backend
            backend = await self._start(entry, role)
            self._backends[key] = backend
            watcher = asyncio.create_task(self._watch(backend), name=f"watch:{entry.id}")
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)
            return backend

    async def _start(self, entry: ModelEntry, role: Role) -> Backend:
        binary = self._binary()
        name = entry.id if role is Role.CHAT else f"{entry.id}#embedding"
        for attempt in range(1, BIND_RETRIES + 1):
            port = free_port()
            argv = build_argv(launch_spec(self._settings, entry, binary, role, port))
            process = self._factory(name, argv, f"http://127.0.0.1:{port}")
            started = time.monotonic()
            try:
                await process.start()
            except OSError as exc:
                raise ModelLoadError(entry.id, f"cannot start llama-server: {exc}") from exc
            try:
                await process.wait_ready(self._client, self._settings.load_timeout_s)
            except ModelLoadError as exc:
                lost_port = any("bind" in line.lower() for line in exc.stderr_tail)
                if lost_port and attempt < BIND_RETRIES:
                    LOG.warning("[%s] lost port %d to another process; retrying", name, port)
                    continue
                raise
            ready = time.monotonic()
            LOG.info("[%s] ready on port %d in %.2fs", name, port, ready - started)
            return Backend(entry, role, process, port, started, ready)
        raise AssertionError("unreachable")

    async def _watch(self, backend: Backend) -> None:
        code = await backend.process.wait_exit()
        if self._backends.get(backend.key) is backend:
            del self._backends[backend.key]
            LOG.warning(
                "[%s] exited with code %s; it will load again on its next request",
                backend.process.name,
                code,
            )

    async def unload(self, entry: ModelEntry, role: Role | None = None) -> bool:
        roles = [role] if role else list(Role)
        stopped = False
        for each in roles:
            backend = self._backends.pop((entry.id, each), None)
            if backend is not None:
                await backend.process.stop(self._settings.stop_grace_s)
                stopped = True
        return stopped

    async def close(self) -> None:
        """Stop every child (SIGTERM, grace, SIGKILL), in parallel."""
        backends = list(self._backends.values())
        self._backends.clear()
        await asyncio.gather(
            *(b.process.stop(self._settings.stop_grace_s) for b in backends),
            return_exceptions=True,
        )
        for watcher in list(self._watchers):
            watcher.cancel()
