"""One llama-server child: spawn (own process group, dies with us), readiness, output, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections import deque
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil  # type: ignore[import-untyped]  # no stubs in the dev deps

from supervisor.children import launcher
from supervisor.children.argv import ChildCommand
from supervisor.children.logs import LineSink
from supervisor.children.output import PipeReader
from supervisor.errors import ModelLoadError

CHILD_LOG = logging.getLogger("supervisor.child")
READY_POLL_S = 0.02  # readiness is noticed within ~20 ms of /health turning 200
TAIL_LINES = 40


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the child may still lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid``, or one under it (the macOS watchdog's llama-server), holds a
    listening TCP socket on ``port``; True where the system will not tell us."""
    try:
        root = psutil.Process(pid)
        for proc in (root, *root.children(recursive=True)):
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return True
    except psutil.AccessDenied:
        return True
    except psutil.NoSuchProcess:
        return False
    return False


class BackendProcess:
    """A running (or exited) llama-server, identified by ``name`` in logs."""

    def __init__(
        self, name: str, command: ChildCommand, base_url: str, output: LineSink | None = None
    ) -> None:
        self.name = name
        self._output = output
        self.argv = command.argv
        self._command = command
        self.base_url = base_url
        self._proc: asyncio.subprocess.Process | None = None
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._reader: PipeReader | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def output_tail(self) -> list[str]:
        return list(self._tail)

    async def start(self) -> None:
        launcher_script = Path(launcher.__file__)
        cpus = self._command.cpus
        pinning = ["--cpus", ",".join(map(str, cpus))] if cpus else []
        env = {**os.environ, **self._command.env} if self._command.env else None
        read_fd, write_fd = os.pipe()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, str(launcher_script), str(os.getpid()), *pinning, "--",
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=write_fd,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )  # fmt: skip
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        CHILD_LOG.info("[%s] started pid %s: %s", self.name, self._proc.pid, " ".join(self.argv))
        self._reader = PipeReader(read_fd, partial(self._line, self._proc.pid))

    def _line(self, pid: int, line: str) -> None:
        """One line of the child's output: kept for a failed start's error, and passed on
        (to the model's log, which also decides what the gateway's own log shows)."""
        self._tail.append(line)
        if self._output is not None:
            self._output(pid, line)

    async def wait_exit(self) -> int:
        assert self._proc is not None
        code = await self._proc.wait()
        if self._reader is not None:  # its last lines, unless a grandchild keeps the pipe open
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader.finished), 1.0)
            self._reader.close()
        return code

    async def wait_ready(self, client: httpx.AsyncClient, timeout: float) -> None:
        """Return once /health answers 200; raise ModelLoadError if the child exits first or
        the timeout passes (the child is then stopped)."""
        exited = asyncio.ensure_future(self.wait_exit())
        try:
            async with asyncio.timeout(timeout):
                while not exited.done():
                    if await self._healthy(client) and self._holds_port():
                        return
                    await asyncio.wait({exited}, timeout=READY_POLL_S)
        except TimeoutError:
            await self.stop(grace=2.0)
            reason = f"not ready after {timeout:.0f}s"
            raise ModelLoadError(self.name, reason, self.output_tail()) from None
        finally:
            if not exited.done():
                exited.cancel()
        code = exited.result()
        raise ModelLoadError(self.name, f"llama-server exited with code {code}", self.output_tail())

    def _holds_port(self) -> bool:
        """Whether the child itself listens on its port. Between our pick of a free port and
        the child's bind, another server can take it; if that one answers /health, the child
        fails to bind and exits, but not before a poll took the stranger for it (and would
        have sent it prompts)."""
        port = urlsplit(self.base_url).port
        return self.pid is None or port is None or listens_on(self.pid, port)

    async def _healthy(self, client: httpx.AsyncClient) -> bool:
        try:
            response = await client.get(f"{self.base_url}/health", timeout=1.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def stop(self, grace: float) -> None:
        """SIGTERM to the process group, ``grace`` seconds, then SIGKILL."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            CHILD_LOG.warning("[%s] did not stop in %.1fs: SIGKILL", self.name, grace)
            self._signal_group(signal.SIGKILL)
            await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        CHILD_LOG.info("[%s] stopped (exit %s)", self.name, proc.returncode)

    def pin(self, cpus: tuple[int, ...]) -> bool:
        """Move every thread of the running child (and of anything under it: the macOS
        watchdog's llama-server) onto ``cpus``; False where that could not be done."""
        if self._proc is None or not cpus or not hasattr(os, "sched_setaffinity"):
            return False
        try:
            root = psutil.Process(self._proc.pid)
            threads = [t.id for proc in (root, *root.children(recursive=True))
                       for t in proc.threads()]  # fmt: skip
            for thread in threads:
                os.sched_setaffinity(thread, cpus)
        except (psutil.Error, OSError) as exc:
            CHILD_LOG.warning("[%s] cannot move to CPUs %s: %s", self.name, cpus, exc)
            return False
        return True

    def kill_now(self) -> None:
        """SIGKILL the group without waiting: for a gateway on its way out."""
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
