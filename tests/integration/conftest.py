"""The integration tier: a real gateway process, real llama-server children, SmolLM2.

Without a built llama-server these tests are skipped, unless
LLAMA_SUPERVISOR_REQUIRE_INTEGRATION=1 (set by `make test` and CI), where that is a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from supervisor.backends.binary import find_llama_server
from supervisor.backends.process import free_port
from supervisor.config import default_cache_dir
from supervisor.demo_model import MODEL_FILE, fetch_demo_model
from supervisor.errors import SupervisorError

MODEL_ID = MODEL_FILE.removesuffix(".gguf")
REQUIRED = os.environ.get("LLAMA_SUPERVISOR_REQUIRE_INTEGRATION") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    try:
        return find_llama_server(None, default_cache_dir())
    except SupervisorError as exc:
        _unavailable(exc.message)
        raise


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("models")
    try:
        fetch_demo_model(models, default_cache_dir(), say=lambda _: None)
    except SupervisorError as exc:
        _unavailable(exc.message)
    return models


class RunningGateway:
    """`llama-supervisor serve` as a real subprocess on a free port."""

    def __init__(self, binary: Path, models_dir: Path, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        argv = [
            sys.executable, "-m", "supervisor.cli", "serve",
            "--port", str(self.port), "--models-dir", str(models_dir),
            "--llama-server", str(binary), *extra,
        ]  # fmt: skip
        self._log = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
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
            if "--embeddings" in child.cmdline():
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


def wait_until_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        survivors = [p for p in procs if alive(p)]
        if not survivors:
            return []
        time.sleep(0.05)
    return [p for p in procs if alive(p)]


@pytest.fixture(scope="module")
def gateway(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    running = RunningGateway(llama_server_bin, demo_model_dir, log)
    yield running
    running.stop()
