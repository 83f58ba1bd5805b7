"""A ready llama-server child, the leases requests hold on it, and the starter that makes one.

Which children exist, and when they start and stop, is the lifecycle package's business; this
module only knows how to bring one child from nothing to ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import httpx

from supervisor.children.argv import (
    ChildCommand,
    child_command,
    launch_spec,
    parallel_slots,
    slot_context,
)
from supervisor.children.binary import find_llama_server
from supervisor.children.key import child_key_file
from supervisor.children.logs import ChildLogs, LineSink
from supervisor.children.process import BackendProcess, free_port
from supervisor.children.spec import LoadParams, Role, child_name
from supervisor.config import Settings
from supervisor.errors import ModelLoadError
from supervisor.models.registry import ModelEntry
from supervisor.placement.plan import Placement

LOG = logging.getLogger(__name__)
BIND_RETRIES = 3
BITNET = "bitnet"  # the free port we picked can be taken before the child binds it


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
    def pin(self, cpus: tuple[int, ...]) -> bool: ...


ProcessFactory = Callable[[str, ChildCommand, str, LineSink | None], ChildProcess]


@dataclass(eq=False)
class Backend:
    """A child that answered /health, and what requests need to reach it."""

    entry: ModelEntry
    role: Role
    process: ChildProcess
    port: int
    parallel: int
    params: LoadParams
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)
    api_key: str | None = None  # what requests to the child must carry (children/key.py)
    placement: Placement = field(default_factory=Placement)  # its cores, threads and GPUs
    ctx_size: int | None = None  # its --ctx-size (None: llama-server's own)
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def base_url(self) -> str:
        return self.process.base_url

    @property
    def model_id(self) -> str:
        return self.entry.id

    @property
    def upstream_model(self) -> str | None:
        """A child serves one model whatever a body names: the body goes on as it came."""
        return None

    @property
    def slot_context(self) -> int:
        """Tokens of context one of its slots holds."""
        return slot_context(self.entry, self.ctx_size, self.parallel)

    @property
    def has_free_slot(self) -> bool:
        """Whether a request may have a slot now (whether the child is alive at all is for its
        model to ask first: ``ManagedModel.serving``)."""
        return self.in_flight < self.parallel


class Target(Protocol):
    """Where a leased request goes, as the relay sees it: a child (``Backend``) or another
    server's model (``supervisor/peers``)."""

    in_flight: int
    idle: asyncio.Event

    @property
    def model_id(self) -> str:
        """The model's name as the client knows it, for errors and logs."""

    @property
    def base_url(self) -> str: ...
    @property
    def api_key(self) -> str | None: ...
    @property
    def upstream_model(self) -> str | None:
        """The name the request's body must give as its ``model`` there; None: as it came."""


TargetT = TypeVar("TargetT", bound=Target, covariant=True)


class Lease(Generic[TargetT]):
    """One request's hold on a slot of ``backend``: a child's, or a peer's. Release is
    idempotent (streams end in odd ways) and tells the owner, so queued requests move up and
    drains notice the end."""

    def __init__(self, backend: TargetT, on_release: Callable[[TargetT], None]) -> None:
        self.backend = backend
        self._on_release = on_release
        self._released = False
        backend.in_flight += 1
        backend.idle.clear()

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        backend = self.backend
        backend.in_flight -= 1  # last_used is the model's to set, on its clock
        if backend.in_flight == 0:
            backend.idle.set()
        self._on_release(backend)


def server_binary(settings: Settings, entry: ModelEntry) -> Path:
    """BitNet-architecture models run on the BitNet-flavour binary when one is configured;
    everything else (and BitNet without one) on the main llama-server."""
    if entry.info.architecture == BITNET and settings.bitnet_llama_server is not None:
        return find_llama_server(settings.bitnet_llama_server, settings.cache_dir)
    return find_llama_server(settings.llama_server, settings.cache_dir)


def _default_factory(
    name: str, command: ChildCommand, base_url: str, output: LineSink | None
) -> ChildProcess:
    return BackendProcess(name, command, base_url, output)


class ChildStarter:
    """Starts one child and waits until it is ready, on a fresh loopback port."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        factory: ProcessFactory = _default_factory,
        logs: ChildLogs | None = None,
    ) -> None:
        self._client = client
        self._factory = factory
        self._logs = logs

    async def start(
        self,
        settings: Settings,
        entry: ModelEntry,
        role: Role,
        params: LoadParams,
        placement: Placement | None = None,
    ) -> Backend:
        binary = server_binary(settings, entry)
        name = child_name(entry.id, role)
        for attempt in range(1, BIND_RETRIES + 1):
            port = free_port()
            keyed = child_key_file() if settings.child_keys else nullcontext((None, None))
            with keyed as (key, key_file):
                spec = launch_spec(settings, entry, binary, role, port, params, placement)
                spec = replace(spec, api_key_file=key_file)
                output = self._logs.sink(entry.id, role.value) if self._logs else None
                url = f"http://127.0.0.1:{port}"
                command = child_command(spec, placement)
                process = self._factory(name, command, url, output)
                started = time.monotonic()
                try:
                    await process.start()
                except OSError as exc:
                    raise ModelLoadError(entry.id, f"cannot start llama-server: {exc}") from exc
                try:
                    await process.wait_ready(self._client, settings.load_timeout_s)
                except ModelLoadError as exc:
                    lost_port = any("bind" in line.lower() for line in exc.stderr_tail)
                    if lost_port and attempt < BIND_RETRIES:
                        LOG.warning("[%s] lost port %d to another process; retrying", name, port)
                        continue
                    raise
                except BaseException:
                    await process.stop(grace=0)  # cancelled while loading: leave nothing behind
                    raise
            seconds = time.monotonic() - started
            LOG.info("[%s] ready on port %d in %.2fs", name, port, seconds)
            parallel = parallel_slots(settings, entry)
            return Backend(
                entry, role, process, port, parallel, params, seconds, api_key=key,
                placement=placement or Placement(threads=spec.threads), ctx_size=spec.ctx_size,
            )  # fmt: skip
        raise AssertionError("unreachable")
