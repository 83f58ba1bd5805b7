"""``llama-supervisor rpc-worker``: one ``ggml-rpc-server`` kept running on a worker machine.

The server is started through the children's launcher (``children/launcher.py``), so it dies
with us even on SIGKILL, and in its own process group. Each line it prints goes to our log.
When it exits it is started again after a backoff that doubles from ``backoff_initial_s`` up
to ``backoff_max_s``, and starts over once a run lasted ``stable_after_s``. SIGTERM or SIGINT
only set the ``stop`` event (the handler records, the loop acts): the server gets SIGTERM,
``stop_grace_s``, then SIGKILL, and ``run`` returns."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from supervisor.children.argv import ChildCommand
from supervisor.children.process import BackendProcess
from supervisor.clock import Clock, SystemClock, wait_or_sleep
from supervisor.errors import ConfigError

LOG = logging.getLogger("supervisor.rpc.worker")
SERVER_LOG = logging.getLogger("supervisor.rpc.server")
NAME = "rpc-server"


class ServerProcess(Protocol):
    """What supervision needs of a running rpc-server (``BackendProcess`` is one)."""

    @property
    def pid(self) -> int | None: ...
    async def start(self) -> None: ...
    async def wait_exit(self) -> int: ...
    async def stop(self, grace: float) -> None: ...


ServerFactory = Callable[[list[str]], ServerProcess]


@dataclass(frozen=True)
class WorkerOptions:
    host: str = "127.0.0.1"
    port: int = 50052
    threads: int | None = None
    devices: str | None = None  # rpc-server's --device: "CUDA0,CUDA1"
    cache: bool = False  # rpc-server's --cache: tensors kept on disk, loads skip the network
    mem_mb: int | None = None  # only for an rpc-server that lists --mem (see ``server_argv``)


def server_argv(binary: Path, options: WorkerOptions, help_text: str) -> list[str]:
    """rpc-server's command line. ``help_text`` is its ``--help``: ``--mem`` is passed only to
    a server that lists it (older llama.cpp's did, for its CPU device); the pinned one has
    none, and pretending to cap memory would be worse than refusing."""
    argv = [str(binary), "--host", options.host, "--port", str(options.port)]
    if options.threads is not None:
        argv += ["--threads", str(options.threads)]
    if options.devices:
        argv += ["--device", options.devices]
    if options.cache:
        argv.append("--cache")
    if options.mem_mb is not None:
        if "--mem" not in help_text:
            raise ConfigError(
                f"{binary.name} has no --mem option (llama.cpp dropped it); limit what a "
                "worker offers with --device (or CUDA_VISIBLE_DEVICES) instead"
            )
        argv += ["--mem", str(options.mem_mb)]
    return argv


def server_help(binary: Path) -> str:
    """What ``binary --help`` prints (to either stream); empty if it cannot be run."""
    try:
        done = subprocess.run(
            [str(binary), "--help"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout + done.stderr


def _log_line(pid: int | None, line: str) -> None:
    SERVER_LOG.info("[%s %s] %s", NAME, pid, line)


def spawn_server(argv: list[str]) -> ServerProcess:
    return BackendProcess(NAME, ChildCommand(argv), "", _log_line)


class RpcWorker:
    def __init__(
        self,
        argv: list[str],
        factory: ServerFactory = spawn_server,
        clock: Clock | None = None,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        stable_after_s: float = 60.0,
        stop_grace_s: float = 10.0,
    ) -> None:
        self.argv = argv
        self.starts = 0
        self._factory = factory
        self._clock = clock or SystemClock()
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._stable_after_s = stable_after_s
        self._stop_grace_s = stop_grace_s

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the server running until ``stop`` is set; then stop it and return."""
        delay = self._backoff_initial_s
        while not stop.is_set():
            began = self._clock.monotonic()
            code = await self._run_once(stop)
            if code is None:  # stopped on purpose
                return
            if self._clock.monotonic() - began >= self._stable_after_s:
                delay = self._backoff_initial_s
            LOG.warning("rpc-server exited with code %s; starting it again in %.1fs", code, delay)
            await wait_or_sleep(self._clock, stop, delay)
            delay = min(delay * 2, self._backoff_max_s)

    async def _run_once(self, stop: asyncio.Event) -> int | None:
        """One run of the server: its exit code, or None when ``stop`` ended it."""
        process = self._factory(self.argv)
        self.starts += 1
        try:
            await process.start()
        except OSError as exc:
            LOG.error("cannot start %s: %s", self.argv[0], exc)
            return 127
        LOG.info("rpc-server running (pid %s): %s", process.pid, " ".join(self.argv))
        exited = asyncio.ensure_future(process.wait_exit())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await process.stop(self._stop_grace_s)  # cancelled from outside: leave nothing
            raise
        finally:
            stopping.cancel()
        if exited.done():
            return exited.result()
        LOG.info("stopping rpc-server (pid %s)", process.pid)
        await process.stop(self._stop_grace_s)
        await exited
        return None
