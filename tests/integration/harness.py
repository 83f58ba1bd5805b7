"""Running the real gateway as a subprocess, and watching processes come and go."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import psutil

from supervisor.children.process import free_port
from supervisor.models.demo import MODEL_FILE

MODEL_ID = MODEL_FILE.removesuffix(".gguf")


class RunningGateway:
    """`llama-supervisor serve` as a real subprocess on a free port; ``env`` adds to (or
    overrides) the inherited environment; ``open_files`` sets its open-files limit."""

    def __init__(
        self,
        binary: Path,
        models_dir: Path,
        log: Path,
        *extra: str,
        env: Mapping[str, str] | None = None,
        open_files: int | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        argv = [
            sys.executable, "-m", "supervisor.cli", "serve",
            "--port", str(self.port), "--models-dir", str(models_dir),
            "--llama-server", str(binary), "--data-dir", str(log.parent / "data"), *extra,
        ]  # fmt: skip
        self._log = log.open("wb")
        environ = {**os.environ, **env} if env else None
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environ,
            preexec_fn=None if open_files is None else lambda: _limit_open_files(open_files),
        )
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("gateway did not become healthy")

    def children(self) -> list[psutil.Process]:
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [k for k in kids if _is_llama_server(k)]

    def child_port(self) -> int:
        """The listening port of the (single) chat child."""
        for child in self.children():
            if "--embeddings" in child.cmdline() or "--reranking" in child.cmdline():
                continue
            argv = child.cmdline()
            return int(argv[argv.index("--port") + 1])
        raise AssertionError("no chat child running")

    def stop(self) -> None:
        leftovers = self.children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for child in leftovers:  # never leave a llama-server behind, even when a test failed
            if alive(child):
                child.kill()
        self._log.close()


def _limit_open_files(count: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


def _is_llama_server(proc: psutil.Process) -> bool:
    try:
        return Path(proc.cmdline()[0]).name == "llama-server"
    except (psutil.Error, IndexError):
        return False


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def wait_until_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        survivors = [p for p in procs if alive(p)]
        if not survivors:
            return []
        time.sleep(0.05)
    return [p for p in procs if alive(p)]
