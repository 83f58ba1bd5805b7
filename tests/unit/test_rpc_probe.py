"""Probing RPC workers in ggml's own protocol: against a real ggml-rpc-server on 127.0.0.1
(skipped without a build, a failure under LLAMA_SUPERVISOR_REQUIRE_INTEGRATION=1), and
against small fake servers for the ways a worker can fail; the checks before a load."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from supervisor.children.process import free_port
from supervisor.config import default_cache_dir
from supervisor.errors import ModelLoadError, SupervisorError
from supervisor.rpc.address import WorkerAddress
from supervisor.rpc.binary import find_rpc_server
from supervisor.rpc.probe import (
    CMD_HELLO,
    CONN_CAPS_SIZE,
    DeviceMemory,
    ProbeFailed,
    WorkerReport,
    probe_worker,
)
from supervisor.rpc.workers import WorkerChecks

pytestmark = pytest.mark.anyio
REQUIRED = os.environ.get("LLAMA_SUPERVISOR_REQUIRE_INTEGRATION") == "1"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def rpc_server() -> Iterator[WorkerAddress]:
    """A real ggml-rpc-server (the one beside the cached llama-server) on a free port."""
    try:
        binary = find_rpc_server(None, default_cache_dir())
    except SupervisorError as exc:
        if REQUIRED:
            pytest.fail(exc.message)
        pytest.skip(exc.message)
    port = free_port()
    proc = subprocess.Popen(
        [str(binary), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "no rpc-server"
                time.sleep(0.05)
        yield WorkerAddress("127.0.0.1", port)
    finally:
        proc.kill()
        proc.wait(10)


async def test_a_real_worker_reports_its_protocol_and_devices(rpc_server: WorkerAddress) -> None:
    report = await probe_worker(rpc_server, timeout=5)
    assert report.address == str(rpc_server)
    assert report.version[0] == 7
    assert report.devices and all(0 < d.free <= d.total for d in report.devices)
    assert report.free == sum(d.free for d in report.devices)
    # It serves the next client once a probe is done: probes do not hold it.
    again = await probe_worker(rpc_server, timeout=5)
    assert [d.total for d in again.devices] == [d.total for d in report.devices]


async def test_a_worker_busy_with_another_client_is_told_apart(rpc_server: WorkerAddress) -> None:
    """rpc-server serves one client at a time: a second connection is accepted by the
    kernel, then nobody reads it."""
    held = socket.create_connection((rpc_server.host, rpc_server.port), timeout=5)
    try:
        held.sendall(bytes([CMD_HELLO]) + struct.pack("<Q", CONN_CAPS_SIZE) + bytes(24))
        assert len(held.recv(64)) > 0  # in session: the server is ours now
        with pytest.raises(ProbeFailed, match="another llama-server may be using it"):
            await probe_worker(rpc_server, timeout=0.5)
    finally:
        held.close()
    assert (await probe_worker(rpc_server, timeout=5)).version[0] == 7


@pytest.fixture
async def fake_worker() -> AsyncIterator[Callable[[Handler], Awaitable[WorkerAddress]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> WorkerAddress:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return WorkerAddress("127.0.0.1", server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()


def hello_reply(major: int) -> bytes:
    return struct.pack("<Q", 4 + CONN_CAPS_SIZE) + bytes([major, 1, 2, 0]) + bytes(CONN_CAPS_SIZE)


async def test_a_worker_of_another_protocol_version_is_refused(fake_worker) -> None:  # type: ignore[no-untyped-def]
    async def old(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1 + 8 + CONN_CAPS_SIZE)
        writer.write(hello_reply(6))
        await writer.drain()

    with pytest.raises(ProbeFailed, match=r"protocol 6\.1\.2.*same llama\.cpp build"):
        await probe_worker(await fake_worker(old), timeout=2)


async def test_a_worker_of_a_newer_minor_version_is_refused(fake_worker) -> None:  # type: ignore[no-untyped-def]
    """llama.cpp's client refuses a server whose minor version is above its own (it would
    abort the child), so the probe refuses it first."""

    async def newer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1 + 8 + CONN_CAPS_SIZE)
        writer.write(hello_reply(7))  # 7.1.2, the pinned llama.cpp speaks 7.0
        await writer.drain()

    with pytest.raises(ProbeFailed, match=r"protocol 7\.1\.2.*same llama\.cpp build"):
        await probe_worker(await fake_worker(newer), timeout=2)


async def test_a_host_name_that_never_resolves_fails_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Name resolution counts against the probe's timeout: a resolver that never answers
    is a quick failure, not a load that waits on it."""
    loop = asyncio.get_running_loop()

    async def silent(*args: object, **kwargs: object) -> list[object]:
        await asyncio.Event().wait()
        return []

    monkeypatch.setattr(loop, "getaddrinfo", silent)
    probing = probe_worker(WorkerAddress("worker.lan", 50052), timeout=0.2)
    with pytest.raises(ProbeFailed, match="no answer"):
        await asyncio.wait_for(probing, 10)  # the outer bound only stops a hang


async def test_a_server_that_hangs_up_is_not_taken_for_a_worker(fake_worker) -> None:  # type: ignore[no-untyped-def]
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    with pytest.raises(ProbeFailed, match="closed the connection during the handshake"):
        await probe_worker(await fake_worker(rude), timeout=2)


async def test_a_reply_of_the_wrong_size_is_refused(fake_worker) -> None:  # type: ignore[no-untyped-def]
    async def odd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1 + 8 + CONN_CAPS_SIZE)
        writer.write(struct.pack("<Q", 3) + b"abc")
        await writer.drain()

    with pytest.raises(ProbeFailed, match="with 3 bytes, not 28"):
        await probe_worker(await fake_worker(odd), timeout=2)


async def test_a_port_nobody_listens_on_is_down() -> None:
    with pytest.raises(ProbeFailed, match="connection refused"):
        await probe_worker(WorkerAddress("127.0.0.1", free_port()), timeout=2)


async def test_public_addresses_are_refused_before_connecting() -> None:
    with pytest.raises(ProbeFailed, match="public address"):
        await probe_worker(WorkerAddress("8.8.8.8", 50052), timeout=2)


def report(address: str, free: int) -> WorkerReport:
    return WorkerReport(address, (7, 0, 0), (DeviceMemory(0, free, 2 * free),), 1.0)


async def test_checks_name_every_worker_that_fails_as_the_models_load_error() -> None:
    down = {"10.0.0.3:50052"}

    async def probe(address: WorkerAddress, timeout: float, allow_public: bool) -> WorkerReport:
        if str(address) in down:
            raise ProbeFailed("connection refused")
        return report(str(address), 1 << 30)

    checks = WorkerChecks(probe)
    reports = await checks.check("big", ["10.0.0.2:50052"], False)
    assert [r.address for r in reports] == ["10.0.0.2:50052"]
    with pytest.raises(ModelLoadError) as caught:
        await checks.check("big", ["10.0.0.2:50052", "10.0.0.3:50052"], False)
    error = caught.value
    assert error.status_code == 503 and error.retry_after
    assert error.message == (
        "Model 'big' failed to load: RPC worker 10.0.0.3:50052 is unavailable: connection refused"
    )
    assert checks.free(["10.0.0.2:50052", "10.0.0.3:50052"]) == 1 << 30  # the down one: 0
    down.clear()
    await checks.check("big", ["10.0.0.2:50052", " 10.0.0.3:50052"], False)
    assert checks.free(["10.0.0.2:50052", "10.0.0.3:50052", "10.0.0.2:50052"]) == 2 << 30


async def test_checks_refuse_public_and_malformed_workers_as_load_errors() -> None:
    async def never(address: WorkerAddress, timeout: float, allow_public: bool) -> WorkerReport:
        raise AssertionError("a refused address is never probed")

    checks = WorkerChecks(never)
    with pytest.raises(ModelLoadError, match="public address"):
        await checks.check("m", ["9.9.9.9:1"], allow_public=False)
    with pytest.raises(ModelLoadError, match="expected host:port"):
        await checks.check("m", ["nowhere"], allow_public=False)
    assert await checks.check("m", [], allow_public=False) == []
