"""Asking one ``ggml-rpc-server`` what it offers, in its own wire protocol: HELLO, the device
count, then each device's free and total memory (ggml/src/ggml-rpc/ggml-rpc.cpp of the
pinned llama.cpp, protocol 7).

A request is ``| command (1 byte) | size (u64) | data |`` and a reply ``| size (u64) | data |``,
little-endian and packed. The server serves one client at a time: while a llama-server child
is connected, a new connection is accepted by the kernel but nobody reads it, so a probe that
connects and then hears nothing is told apart from a worker that is down.

A probe that fails raises ``ProbeFailed`` with a reason fit for a message that names the
worker; ``workers.py`` turns it into the model's load error."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass

from supervisor.errors import ConfigError
from supervisor.rpc.address import WorkerAddress, refuse_public

PROTOCOL_MAJOR = 7  # RPC_PROTO_MAJOR_VERSION of the pinned llama.cpp
PROTOCOL_MINOR = 0  # RPC_PROTO_MINOR_VERSION: its client refuses a server with a higher one
CONN_CAPS_SIZE = 24  # RPC_CONN_CAPS_SIZE: transport capabilities; all zero means plain TCP
CMD_GET_DEVICE_MEMORY = 11
CMD_HELLO = 14
CMD_DEVICE_COUNT = 15
MAX_DEVICES = 64  # a sanity bound on what a stranger on the port may claim
_U64 = struct.Struct("<Q")


class ProbeFailed(Exception):
    """The worker could not be asked: ``reason`` says why, without its address."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DeviceMemory:
    index: int
    free: int  # bytes
    total: int  # bytes


@dataclass(frozen=True)
class WorkerReport:
    address: str  # as configured: host:port
    version: tuple[int, int, int]
    devices: tuple[DeviceMemory, ...]
    latency_ms: float  # the whole probe, connect to last reply

    @property
    def free(self) -> int:
        return sum(device.free for device in self.devices)

    @property
    def total(self) -> int:
        return sum(device.total for device in self.devices)


async def probe_worker(
    worker: WorkerAddress, timeout: float, allow_public: bool = False
) -> WorkerReport:
    """Connect to ``worker``, shake hands and read its devices' memory, all within
    ``timeout`` seconds. Host names resolve over IPv4, as llama.cpp's client resolves them,
    and what they resolve to is held to the same public-address rule as a literal."""
    began = time.monotonic()
    try:
        ip = await asyncio.wait_for(_resolve(worker, allow_public), timeout)
    except TimeoutError:
        reason = f"no answer from the resolver for {worker.host!r} within {timeout:g}s"
        raise ProbeFailed(reason) from None
    try:
        remaining = max(0.1, timeout - (time.monotonic() - began))
        connecting = asyncio.open_connection(ip, worker.port)
        reader, writer = await asyncio.wait_for(connecting, remaining)
    except TimeoutError:
        raise ProbeFailed(f"no answer to a connection within {timeout:g}s") from None
    except OSError as exc:
        raise ProbeFailed(_connect_reason(exc)) from None
    try:
        remaining = max(0.1, timeout - (time.monotonic() - began))
        version, devices = await _ask_within(reader, writer, remaining, timeout)
    except BaseException:
        _reset_on_close(writer)  # a HELLO of ours may be left unanswered
        raise
    finally:
        writer.close()
    return WorkerReport(str(worker), version, devices, (time.monotonic() - began) * 1000)


async def _ask_within(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float, timeout: float
) -> tuple[tuple[int, int, int], tuple[DeviceMemory, ...]]:
    """``_ask`` within ``seconds``, its failures as ``ProbeFailed``."""
    try:
        async with asyncio.timeout(seconds):
            return await _ask(reader, writer)
    except TimeoutError:
        raise ProbeFailed(
            f"connected, but no reply within {timeout:g}s: rpc-server serves one client at a "
            "time, so another llama-server may be using it"
        ) from None
    except asyncio.IncompleteReadError:
        raise ProbeFailed(
            "closed the connection during the handshake: is it an rpc-server of the same "
            f"llama.cpp version (RPC protocol {PROTOCOL_MAJOR}.x)?"
        ) from None
    except OSError as exc:
        raise ProbeFailed(f"connection lost: {exc.strerror or exc}") from None


async def _resolve(worker: WorkerAddress, allow_public: bool) -> str:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            worker.host, worker.port, family=socket.AF_INET, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise ProbeFailed(f"cannot resolve {worker.host!r}: {exc.strerror or exc}") from None
    ips = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not ips:
        raise ProbeFailed(f"{worker.host!r} has no IPv4 address")
    try:
        for ip in ips:
            refuse_public(worker, ip, allow_public)
    except ConfigError as exc:
        raise ProbeFailed(exc.message) from None
    return ips[0]


def _reset_on_close(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (SO_LINGER 0) instead of a FIN. rpc-server writes without
    MSG_NOSIGNAL: if it later reached a HELLO of ours that we stopped waiting for, its reply
    to a closed peer would kill it with SIGPIPE. A reset connection fails its first read."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _connect_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is llama-supervisor rpc-worker running there?)"
    return f"cannot connect: {exc.strerror or exc}"


async def _ask(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[tuple[int, int, int], tuple[DeviceMemory, ...]]:
    hello = await _call(reader, writer, CMD_HELLO, bytes(CONN_CAPS_SIZE), 4 + CONN_CAPS_SIZE)
    major, minor, patch = hello[0], hello[1], hello[2]
    if major != PROTOCOL_MAJOR or minor > PROTOCOL_MINOR:
        raise ProbeFailed(
            f"speaks RPC protocol {major}.{minor}.{patch}, the gateway's llama.cpp "
            f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}: run the same llama.cpp build on the worker"
        )
    (count,) = struct.unpack("<I", await _call(reader, writer, CMD_DEVICE_COUNT, b"", 4))
    if not 0 < count <= MAX_DEVICES:
        raise ProbeFailed(f"reports {count} devices")
    devices = []
    for index in range(count):
        reply = await _call(reader, writer, CMD_GET_DEVICE_MEMORY, struct.pack("<I", index), 16)
        free, total = struct.unpack("<QQ", reply)
        devices.append(DeviceMemory(index, free, total))
    return (major, minor, patch), tuple(devices)


async def _call(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    command: int,
    data: bytes,
    reply_size: int,
) -> bytes:
    writer.write(bytes([command]) + _U64.pack(len(data)) + data)
    await writer.drain()
    (size,) = _U64.unpack(await reader.readexactly(_U64.size))
    if size != reply_size:
        raise ProbeFailed(f"answered command {command} with {size} bytes, not {reply_size}")
    return await reader.readexactly(size)
