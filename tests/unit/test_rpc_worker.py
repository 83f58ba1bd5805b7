"""``llama-supervisor rpc-worker``'s supervision with a fake rpc-server and a fake clock:
restarts with doubling backoff, reset after a long run, a clean stop; its command line; finding
the binary."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from fake_clock import FakeClock, settle

from supervisor.cli.program import main
from supervisor.errors import ConfigError
from supervisor.rpc.binary import find_rpc_server
from supervisor.rpc.worker import RpcWorker, ServerProcess, WorkerOptions, server_argv

pytestmark = pytest.mark.anyio


class FakeServer:
    def __init__(self, log: list[str], fail_start: bool = False) -> None:
        self.pid = 4242
        self.log = log
        self.fail_start = fail_start
        self.exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.stopped_with: float | None = None

    async def start(self) -> None:
        if self.fail_start:
            raise FileNotFoundError("no such file")
        self.log.append("start")

    async def wait_exit(self) -> int:
        return await asyncio.shield(self.exit)

    async def stop(self, grace: float) -> None:
        self.stopped_with = grace
        self.log.append("stop")
        if not self.exit.done():
            self.exit.set_result(-15)

    def die(self, code: int) -> None:
        self.exit.set_result(code)


class Servers:
    def __init__(self) -> None:
        self.made: list[FakeServer] = []
        self.log: list[str] = []
        self.fail_starts = 0

    def __call__(self, argv: list[str]) -> ServerProcess:
        server = FakeServer(self.log, fail_start=self.fail_starts > 0)
        self.fail_starts = max(0, self.fail_starts - 1)
        self.made.append(server)
        return server


async def test_a_server_that_dies_is_started_again_with_doubling_backoff() -> None:
    clock, servers, stop = FakeClock(), Servers(), asyncio.Event()
    worker = RpcWorker(["rpc-server"], servers, clock, backoff_initial_s=1, backoff_max_s=4)
    running = asyncio.create_task(worker.run(stop))
    await settle()
    waits = []
    for _ in range(4):
        servers.made[-1].die(1)
        began, count = clock.now, len(servers.made)
        await clock.run_until(lambda: len(servers.made) > count, step=0.25)  # noqa: B023
        waits.append(clock.now - began)
    assert waits == [1.0, 2.0, 4.0, 4.0]  # doubling, capped
    # A run that lasted long enough starts the backoff over.
    await clock.advance(60)
    servers.made[-1].die(1)
    began = clock.now
    await clock.run_until(lambda: len(servers.made) == 6, step=0.25)
    assert clock.now - began == 1.0
    stop.set()
    await asyncio.wait_for(running, 1)
    assert servers.log[-1] == "stop" and servers.made[-1].stopped_with == 10.0
    assert worker.starts == 6


async def test_stop_during_the_backoff_returns_without_starting_again() -> None:
    clock, servers, stop = FakeClock(), Servers(), asyncio.Event()
    running = asyncio.create_task(RpcWorker(["rpc-server"], servers, clock).run(stop))
    await settle()
    servers.made[0].die(1)
    await settle()
    stop.set()
    await asyncio.wait_for(running, 1)
    assert len(servers.made) == 1 and servers.log == ["start"]


async def test_a_binary_that_cannot_start_is_retried_too() -> None:
    clock, servers, stop = FakeClock(), Servers(), asyncio.Event()
    servers.fail_starts = 2
    running = asyncio.create_task(RpcWorker(["rpc-server"], servers, clock).run(stop))
    await clock.run_until(lambda: servers.log == ["start"])
    assert len(servers.made) == 3
    stop.set()
    await asyncio.wait_for(running, 1)


def test_the_server_command_line() -> None:
    binary = Path("/opt/llama/bin/ggml-rpc-server")
    options = WorkerOptions("10.0.0.2", 50053, threads=4, devices="CUDA0", cache=True)
    assert server_argv(binary, options, "") == [
        str(binary), "--host", "10.0.0.2", "--port", "50053", "--threads", "4",
        "--device", "CUDA0", "--cache",
    ]  # fmt: skip


def test_mem_is_passed_only_to_a_server_that_has_it() -> None:
    binary = Path("/opt/llama/bin/rpc-server")
    options = WorkerOptions(mem_mb=2048)
    old_help = "  -m MEM, --mem MEM   backend memory size (in MB)\n"
    assert server_argv(binary, options, old_help)[-2:] == ["--mem", "2048"]
    with pytest.raises(ConfigError, match=r"no --mem option.*--device"):
        server_argv(binary, options, "  -c, --cache  enable local file cache\n")


def test_the_binary_is_the_one_beside_the_newest_llama_server(tmp_path: Path) -> None:
    bin_dir = tmp_path / "builds" / "abc" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("llama-server", "ggml-rpc-server"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        os.chmod(bin_dir / name, 0o755)
    assert find_rpc_server(None, tmp_path) == bin_dir / "ggml-rpc-server"
    assert find_rpc_server(bin_dir / "llama-server", tmp_path) == bin_dir / "llama-server"
    with pytest.raises(ConfigError, match="not found or not executable"):
        find_rpc_server(tmp_path / "missing", tmp_path)


def test_the_command_refuses_a_public_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rpc-worker", "--host", "8.8.8.8"]) == 2
    assert "public" in capsys.readouterr().err


def test_the_command_refuses_options_rpc_server_would_exit_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """rpc-server exits at once on them: the worker would restart it without end."""
    assert main(["rpc-worker", "--threads", "0"]) == 2
    assert "--threads 0" in capsys.readouterr().err


def test_the_command_is_listed_and_its_help_warns_about_authentication(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "rpc-worker" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["rpc-worker", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for word in ("--host", "--port", "--mem", "--cache", "--threads", "--device", "--rpc-server",
                 "NO authentication", "refused rather than ignored"):  # fmt: skip
        assert word in out, word
