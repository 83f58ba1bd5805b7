"""A model split over a llama.cpp RPC worker on loopback: `llama-supervisor rpc-worker` runs
the real ggml-rpc-server (the one built beside the llama-server under test), and SmolLM2's
layers go to it (``n_gpu_layers = 99``). Tested only on 127.0.0.1: one machine plays both."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from harness import MODEL_ID, RunningGateway, alive, wait_for, wait_until_gone
from sse import data_lines

from supervisor.children.process import free_port
from supervisor.rpc.binary import NAMES

pytestmark = pytest.mark.integration
REQUIRED = os.environ.get("LLAMA_SUPERVISOR_REQUIRE_INTEGRATION") == "1"
PATIENCE_S = 60.0  # bounds every wait, so a hang fails instead of stalling the suite
LONG = {"max_tokens": 4000, "ignore_eos": True}
CHAT = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Say hello."}]}


class RunningWorker:
    """`llama-supervisor rpc-worker` as a subprocess on 127.0.0.1:``port``."""

    def __init__(self, binary: Path, port: int, log: Path) -> None:
        self.port = port
        self.log_path = log
        self._log = log.open("ab")
        argv = [sys.executable, "-m", "supervisor.cli", "rpc-worker", "--port", str(port),
                "--rpc-server", str(binary)]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        assert wait_for(self.listening, PATIENCE_S), log.read_text()[-2000:]

    def listening(self) -> bool:
        # Connecting and closing without a byte sent is harmless: the server reads EOF.
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return self.server() is not None

    def server(self) -> psutil.Process | None:
        """The rpc-server process now running under the worker."""
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        return next((k for k in kids if alive(k) and k.name() in NAMES), None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        server = self.server()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if server is not None and alive(server):  # never leave one behind
            server.kill()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def rpc_server_bin(llama_server_bin: Path) -> Path:
    """The RPC server of the same build as the llama-server the gateway runs."""
    for name in NAMES:
        if (llama_server_bin.parent / name).is_file():
            return llama_server_bin.parent / name
    reason = f"no ggml-rpc-server beside {llama_server_bin}: rebuild with ./build_llamacpp.sh"
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rpc")


@pytest.fixture(scope="module")
def worker_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def workers(rpc_server_bin: Path, worker_port: int, workdir: Path) -> Iterator[list[RunningWorker]]:
    """The running worker is the last; a test may stop it and start another."""
    started = [RunningWorker(rpc_server_bin, worker_port, workdir / "worker.log")]
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def gateway(
    llama_server_bin: Path,
    demo_model_dir: Path,
    workers: list[RunningWorker],
    worker_port: int,
    workdir: Path,
) -> Iterator[RunningGateway]:
    config = workdir / "config.toml"
    config.write_text(
        "ctx_size = 1024\nparallel = 1\n\n[[models]]\n"
        f'file = "{MODEL_ID}.gguf"\nrpc = ["127.0.0.1:{worker_port}"]\nn_gpu_layers = 99\n'
    )
    running = RunningGateway(llama_server_bin, demo_model_dir, workdir / "gateway.log",
                             "--config", str(config))  # fmt: skip
    yield running
    running.stop()


def chat(gateway: RunningGateway, **extra: object) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "max_tokens": 8,
                      **extra}, timeout=PATIENCE_S)  # fmt: skip


def test_a_split_model_answers_with_its_layers_on_the_worker(
    gateway: RunningGateway, workers: list[RunningWorker], worker_port: int
) -> None:
    server = workers[-1].server()
    assert server is not None
    before = server.memory_info().rss
    reply = chat(gateway)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]
    (child,) = gateway.children()
    argv = child.cmdline()
    assert argv[argv.index("--rpc") + 1] == f"127.0.0.1:{worker_port}"
    # The weights went over the wire: the worker holds most of SmolLM2's 98 MB now.
    assert server.memory_info().rss - before > 50 * 2**20
    assert "Accepted client connection" in workers[-1].log()  # its output is in our log


def test_a_worker_killed_mid_stream_ends_the_stream_then_the_model_loads_again(
    gateway: RunningGateway, workers: list[RunningWorker]
) -> None:
    worker = workers[-1]
    body = {**CHAT, "stream": True, **LONG}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body,
                      timeout=PATIENCE_S) as resp:  # fmt: skip
        assert resp.status_code == 200
        events = data_lines(resp.iter_lines(), strict=True)
        next(events)
        server = worker.server()
        assert server is not None
        children = gateway.children()
        server.kill()
        rest = list(events)
    assert rest[-1] == "[DONE]"
    assert json.loads(rest[-2])["error"]["code"] == "backend_error"
    assert not wait_until_gone(children, timeout=10)  # llama-server gives up on a lost worker
    # rpc-worker starts the server again (after a second's backoff); the model loads again.
    assert wait_for(lambda: worker.listening() and worker.server() is not server, PATIENCE_S)
    assert "starting it again" in worker.log()
    reply = chat(gateway)
    assert reply.status_code == 200, reply.text


def test_a_down_worker_is_a_quick_503_naming_it_and_the_model_loads_once_it_is_back(
    gateway: RunningGateway, workers: list[RunningWorker], rpc_server_bin: Path,
    worker_port: int, workdir: Path,
) -> None:  # fmt: skip
    unloaded = httpx.post(f"{gateway.url}/api/v2/models/{MODEL_ID}/unload", timeout=PATIENCE_S)
    assert unloaded.status_code == 200, unloaded.text
    assert workers[-1].stop() == 0  # SIGTERM: the server stopped, then the worker
    began = time.monotonic()
    reply = chat(gateway)
    took = time.monotonic() - began
    assert reply.status_code == 503, reply.text
    assert reply.headers["retry-after"]
    message = reply.json()["error"]["message"]
    assert f"RPC worker 127.0.0.1:{worker_port} is unavailable: connection refused" in message
    assert took < PATIENCE_S  # no hang (the probe's own bound is 3 s)
    assert not gateway.children()  # no child was started against a dead worker
    workers.append(RunningWorker(rpc_server_bin, worker_port, workdir / "worker2.log"))
    reply = chat(gateway)
    assert reply.status_code == 200, reply.text


def test_the_server_dies_with_a_worker_killed_outright(rpc_server_bin: Path, workdir: Path) -> None:
    """kill -9 of rpc-worker leaves no rpc-server behind holding the port and the devices:
    the launcher's death signal takes it down too."""
    worker = RunningWorker(rpc_server_bin, free_port(), workdir / "worker-killed.log")
    try:
        server = worker.server()
        assert server is not None
        worker.proc.kill()
        worker.proc.wait(PATIENCE_S)
        assert not wait_until_gone([server], timeout=10), worker.log()[-2000:]
    finally:
        worker.stop()
