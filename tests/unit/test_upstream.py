"""The relay's HTTP client against scripted local servers that send exact bytes: framing,
keep-alive reuse and expiry, the one resend, errors, cancellation and flow control. Every
test runs on both asyncio's own loop and uvloop, which the gateway runs under."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from supervisor.relay.upstream import (
    HIGH_WATER,
    ClosedBeforeAnswer,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]
T = TypeVar("T")
PATIENCE_S = 2.0  # a bound on waits that should end at once, so a bug fails instead of hanging


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    return request.param  # type: ignore[no-any-return]


def answer(body: bytes, *headers: str, status: str = "HTTP/1.1 200 OK") -> bytes:
    """A whole answer framed by Content-Length, with extra header lines."""
    lines = [status, *headers, f"Content-Length: {len(body)}"]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"


@dataclass
class Request:
    line: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Peer:
    """The server's side of one connection, driven by a test's script."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: list[Request] = field(default_factory=list)
    client_closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self) -> Request | None:
        """The next request, or None once the client has closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.client_closed.set()
            return None
        line, *fields = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = {}
        for header in fields:
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Request(line, headers, body))
        return self.requests[-1]

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_client_closes(self) -> None:
        """Read and drop anything until the client closes or resets the connection."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(1 << 16):
                pass
        self.client_closed.set()

    async def answer_all(self, data: bytes) -> None:
        """Answer every request with ``data`` until the client closes."""
        while await self.request() is not None:
            await self.send(data)


Script = Callable[[Peer], Awaitable[None]]


class ScriptedServer:
    """A server on 127.0.0.1 that runs ``script`` on each connection it accepts and closes
    the connection when the script returns."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self.peers: list[Peer] = []
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[Request]:
        return [request for peer in self.peers for request in peer.requests]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(reader, writer)
        self.peers.append(peer)
        try:
            await self._script(peer)
        except ConnectionError:
            pass  # the client went away: some tests make it do that
        except Exception as exc:
            self.errors.append(exc)
        finally:
            writer.close()
            self._tasks.discard(task)


Serve = Callable[[Script], Awaitable[ScriptedServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start scripted servers; stop them all after the test, failing it if a script broke."""
    servers: list[ScriptedServer] = []

    async def start(script: Script) -> ScriptedServer:
        server = ScriptedServer(script)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()
    assert [error for server in servers for error in server.errors] == []


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    upstream = UpstreamPool()
    yield upstream
    upstream.close()


async def soon(awaitable: Awaitable[T]) -> T:
    async with asyncio.timeout(PATIENCE_S):
        return await awaitable


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (a state the test cannot await)."""
    async with asyncio.timeout(PATIENCE_S):
        while not condition():  # noqa: ASYNC110 - the protocol's state has no event to await
            await asyncio.sleep(0.001)


def idle_connections(pool: UpstreamPool) -> int:
    return sum(len(connections) for connections in pool._idle.values())


async def post_and_read(pool: UpstreamPool, url: str, body: bytes = b"{}") -> bytes:
    response = await soon(pool.post(url, "/completion", body))
    try:
        return await soon(response.aread())
    finally:
        response.close()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# Framing, status and headers


async def test_content_length_answer(pool: UpstreamPool, serve: Serve) -> None:
    body = b'{"content": "hi"}'
    reply = answer(body, "Content-Type: application/json", "X-Request-ID: Abc-1")
    server = await serve(lambda peer: peer.answer_all(reply))
    response = await soon(pool.post(server.url, "/v1/chat/completions", b'{"n": 1}'))

    assert response.status_code == 200
    assert ("x-request-id", "Abc-1") in response.headers
    assert response.header("content-type") == "application/json"
    assert response.header("content-length") == str(len(body))
    assert response.header("x-missing") == ""
    assert await soon(response.aread()) == body
    response.close()

    (request,) = server.requests
    assert request.line == "POST /v1/chat/completions HTTP/1.1"
    assert request.headers["host"] == server.url.removeprefix("http://")
    assert request.headers["content-type"] == "application/json"
    assert request.body == b'{"n": 1}'


async def test_error_status_is_an_answer_not_an_error(pool: UpstreamPool, serve: Serve) -> None:
    reply = answer(b'{"error": "busy"}', status="HTTP/1.1 503 Service Unavailable")
    server = await serve(lambda peer: peer.answer_all(reply))
    response = await soon(pool.post(server.url, "/completion", b"{}"))
    assert response.status_code == 503
    assert await soon(response.aread()) == b'{"error": "busy"}'
    response.close()


async def test_large_request_body_arrives_whole(pool: UpstreamPool, serve: Serve) -> None:
    server = await serve(lambda peer: peer.answer_all(answer(b"ok")))
    body = bytes(range(256)) * 1024  # 256 KiB: written apart from the head
    assert await post_and_read(pool, server.url, body) == b"ok"
    assert server.requests[0].body == body


async def test_chunked_pieces_arrive_as_the_server_flushes_them(
    pool: UpstreamPool, serve: Serve
) -> None:
    go_on = asyncio.Event()

    async def stream(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        await go_on.wait()
        await peer.send(chunk(b"data: 2\n\n"))
        await go_on.wait()
        await peer.send(chunk(b"data: [DONE]\n\n") + LAST_CHUNK)
        await peer.until_client_closes()

    server = await serve(stream)
    response = await soon(pool.post(server.url, "/completion", b'{"stream": true}'))
    assert response.header("transfer-encoding") == "chunked"
    pieces = response.aiter_raw()
    assert await soon(anext(pieces)) == b"data: 1\n\n"  # before the server sent any more
    go_on.set()
    assert await soon(anext(pieces)) == b"data: 2\n\n"
    assert await soon(anext(pieces)) == b"data: [DONE]\n\n"
    with pytest.raises(StopAsyncIteration):
        await soon(anext(pieces))
    response.close()
    assert idle_connections(pool) == 1  # a whole chunked answer keeps its connection
    assert len(server.peers) == 1


async def test_aread_joins_chunks(pool: UpstreamPool, serve: Serve) -> None:
    async def stream(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(CHUNKED_HEAD)
            for piece in (b"one ", b"two ", b"three"):
                await peer.send(chunk(piece))
            await peer.send(LAST_CHUNK)

    server = await serve(stream)
    assert await post_and_read(pool, server.url) == b"one two three"
    assert await post_and_read(pool, server.url) == b"one two three"
    assert len(server.peers) == 1


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
async def test_answer_without_framing_is_read_to_eof(
    pool: UpstreamPool, serve: Serve, version: str
) -> None:
    async def until_eof(peer: Peer) -> None:
        await peer.request()
        await peer.send(f"{version} 200 OK\r\nContent-Type: text/plain\r\n\r\n".encode())
        await peer.send(b"part one, ")
        await peer.send(b"part two")
        # the script returns: the server closes the connection, which ends the answer

    server = await serve(until_eof)
    assert await post_and_read(pool, server.url) == b"part one, part two"
    assert idle_connections(pool) == 0


# Keep-alive reuse


async def test_sequential_posts_share_one_connection(pool: UpstreamPool, serve: Serve) -> None:
    server = await serve(lambda peer: peer.answer_all(answer(b"ok")))
    assert await post_and_read(pool, server.url, b'{"n": 1}') == b"ok"
    assert idle_connections(pool) == 1
    assert await post_and_read(pool, server.url, b'{"n": 2}') == b"ok"
    assert len(server.peers) == 1
    assert [request.body for request in server.peers[0].requests] == [b'{"n": 1}', b'{"n": 2}']


@pytest.mark.parametrize(
    "reply",
    [
        answer(b"ok", "Connection: close"),
        answer(b"ok", status="HTTP/1.0 200 OK"),
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_answer_that_ends_keep_alive_is_not_reused(
    pool: UpstreamPool, serve: Serve, reply: bytes
) -> None:
    # The server would go on answering: the client alone decides not to reuse.
    server = await serve(lambda peer: peer.answer_all(reply))
    assert await post_and_read(pool, server.url) == b"ok"
    assert idle_connections(pool) == 0
    await soon(server.peers[0].client_closed.wait())
    assert await post_and_read(pool, server.url) == b"ok"
    assert len(server.peers) == 2


async def test_closing_an_unfinished_answer_aborts_its_connection(
    pool: UpstreamPool, serve: Serve
) -> None:
    async def partial(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            await peer.until_client_closes()

    server = await serve(partial)
    response = await soon(pool.post(server.url, "/completion", b"{}"))
    pieces = response.aiter_raw()
    assert await soon(anext(pieces)) == b"0123456789"
    response.close()
    response.close()  # twice is harmless
    await soon(server.peers[0].client_closed.wait())
    assert idle_connections(pool) == 0

    await soon(pool.post(server.url, "/completion", b"{}"))  # not on the aborted one
    assert len(server.peers) == 2


async def test_closing_an_unread_but_complete_answer_keeps_its_connection(
    pool: UpstreamPool, serve: Serve
) -> None:
    server = await serve(lambda peer: peer.answer_all(answer(b"unread")))
    response = await soon(pool.post(server.url, "/completion", b"{}"))
    response.close()  # the whole answer came with its head: nothing is left on the wire
    assert idle_connections(pool) == 1
    assert await post_and_read(pool, server.url) == b"unread"
    assert len(server.peers) == 1


async def test_idle_connection_past_its_expiry_is_not_reused(serve: Serve) -> None:
    server = await serve(lambda peer: peer.answer_all(answer(b"ok")))
    pool = UpstreamPool(idle_expiry=0.05)
    try:
        assert await post_and_read(pool, server.url) == b"ok"
        await asyncio.sleep(0.1)
        assert await post_and_read(pool, server.url) == b"ok"
        assert len(server.peers) == 2
        await soon(server.peers[0].client_closed.wait())  # the expired one was dropped
    finally:
        pool.close()


async def test_idle_connection_closed_by_the_server_leaves_the_pool(
    pool: UpstreamPool, serve: Serve
) -> None:
    async def one_answer(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"ok"))

    server = await serve(one_answer)
    assert await post_and_read(pool, server.url) == b"ok"
    await until(lambda: idle_connections(pool) == 0)
    assert pool._idle == {}  # no empty list left behind for the address


async def test_unsolicited_bytes_on_an_idle_connection_drop_it(
    pool: UpstreamPool, serve: Serve
) -> None:
    pooled = asyncio.Event()

    async def chatty(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"ok"))
        if server.peers[0] is not peer:  # only the first connection misbehaves
            await peer.answer_all(answer(b"ok"))
            return
        await pooled.wait()
        await peer.send(b"HTTP/1.1 200 OK\r\n")  # nothing was asked
        await peer.until_client_closes()

    server = await serve(chatty)
    assert await post_and_read(pool, server.url) == b"ok"
    pooled.set()
    await soon(server.peers[0].client_closed.wait())
    assert idle_connections(pool) == 0
    assert await post_and_read(pool, server.url) == b"ok"
    assert len(server.peers) == 2


async def test_bytes_trailing_an_answer_spoil_its_connection(
    pool: UpstreamPool, serve: Serve
) -> None:
    server = await serve(lambda peer: peer.answer_all(answer(b"ok") + b"junk"))
    assert await post_and_read(pool, server.url) == b"ok"  # the answer itself is whole
    assert idle_connections(pool) == 0
    assert await post_and_read(pool, server.url) == b"ok"
    assert len(server.peers) == 2


async def test_pool_close_aborts_idle_connections(pool: UpstreamPool, serve: Serve) -> None:
    server = await serve(lambda peer: peer.answer_all(answer(b"ok")))
    other = await serve(lambda peer: peer.answer_all(answer(b"ok")))
    responses = await soon(
        asyncio.gather(*(pool.post(url, "/completion", b"{}") for url in [server.url] * 2))
    )
    responses.append(await soon(pool.post(other.url, "/completion", b"{}")))
    for response in responses:
        assert await soon(response.aread()) == b"ok"
        response.close()
    assert idle_connections(pool) == 3

    pool.close()
    assert idle_connections(pool) == 0
    for peer in [*server.peers, *other.peers]:
        await soon(peer.client_closed.wait())


# The one resend


async def test_pooled_connection_closed_before_answering_is_resent_once(
    pool: UpstreamPool, serve: Serve
) -> None:
    async def hang_up_on_the_second(peer: Peer) -> None:
        if server.peers[0] is not peer:
            await peer.answer_all(answer(b"resent"))
            return
        await peer.request()
        await peer.send(answer(b"first"))
        await peer.request()  # then it closes without a word, as llama-server does

    server = await serve(hang_up_on_the_second)
    assert await post_and_read(pool, server.url, b"1") == b"first"
    assert await post_and_read(pool, server.url, b"2") == b"resent"
    assert len(server.peers) == 2
    assert [request.body for request in server.peers[0].requests] == [b"1", b"2"]
    assert [request.body for request in server.peers[1].requests] == [b"2"]


async def test_server_closing_after_its_answer_costs_no_request(
    pool: UpstreamPool, serve: Serve
) -> None:
    async def one_answer(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"ok"))  # then the server closes, keep-alive notwithstanding

    server = await serve(one_answer)
    for _ in range(3):  # at once: the close may or may not have arrived yet
        assert await post_and_read(pool, server.url) == b"ok"
    assert len(server.requests) == len(server.peers) == 3


async def test_fresh_connection_closed_before_answering_is_not_resent(
    pool: UpstreamPool, serve: Serve
) -> None:
    async def hang_up(peer: Peer) -> None:
        await peer.request()

    server = await serve(hang_up)
    with pytest.raises(ClosedBeforeAnswer):
        await soon(pool.post(server.url, "/completion", b"{}"))
    assert len(server.peers) == 1
    assert idle_connections(pool) == 0


async def test_resend_that_also_fails_is_not_resent_again(pool: UpstreamPool, serve: Serve) -> None:
    async def answer_once_then_hang_up(peer: Peer) -> None:
        await peer.request()
        if server.peers[0] is peer:
            await peer.send(answer(b"first"))
            await peer.request()

    server = await serve(answer_once_then_hang_up)
    assert await post_and_read(pool, server.url) == b"first"
    with pytest.raises(ClosedBeforeAnswer):
        await soon(pool.post(server.url, "/completion", b"{}"))
    assert len(server.peers) == 2  # the pooled one and one fresh one, no more


async def test_pooled_connection_that_began_to_answer_is_not_resent(
    pool: UpstreamPool, serve: Serve
) -> None:
    async def stammer_on_the_second(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"first"))
        await peer.request()
        await peer.send(b"HTTP/1.1 20")  # the child got the request: sending it again is wrong

    server = await serve(stammer_on_the_second)
    assert await post_and_read(pool, server.url) == b"first"
    with pytest.raises(UpstreamError) as failed:
        await soon(pool.post(server.url, "/completion", b"{}"))
    assert not isinstance(failed.value, ClosedBeforeAnswer)
    assert len(server.peers) == 1


@pytest.mark.parametrize(
    "sent",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
        CHUNKED_HEAD + chunk(b"hello") + b"5\r\nwor",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
    ],
    ids=["content-length", "chunked", "head-only"],
)
async def test_close_in_the_middle_of_the_body_fails_the_body(
    pool: UpstreamPool, serve: Serve, sent: bytes
) -> None:
    async def cut_off(peer: Peer) -> None:
        await peer.request()
        await peer.send(sent)

    server = await serve(cut_off)
    response = await soon(pool.post(server.url, "/completion", b"{}"))
    assert response.status_code == 200
    received: list[bytes] = []
    with pytest.raises(UpstreamError) as failed:
        async with asyncio.timeout(PATIENCE_S):
            async for piece in response.aiter_raw():
                received.append(piece)
    assert not isinstance(failed.value, ClosedBeforeAnswer)
    assert b"".join(received) in (b"hello", b"hellowor", b"")
    response.close()
    assert idle_connections(pool) == 0
    assert len(server.peers) == 1


# Errors


async def test_refused_connection_is_an_upstream_error(pool: UpstreamPool) -> None:
    with pytest.raises(UpstreamError, match="cannot connect"):
        await soon(pool.post(f"http://127.0.0.1:{free_port()}", "/completion", b"{}"))


@pytest.mark.parametrize(
    "sent",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
    ],
    ids=["status-line", "content-length"],
)
async def test_malformed_answer_is_an_upstream_error(
    pool: UpstreamPool, serve: Serve, sent: bytes
) -> None:
    async def garble(peer: Peer) -> None:
        await peer.request()
        await peer.send(sent)
        await peer.until_client_closes()

    server = await serve(garble)
    with pytest.raises(UpstreamError, match="malformed") as failed:
        await soon(pool.post(server.url, "/completion", b"{}"))
    assert not isinstance(failed.value, ClosedBeforeAnswer)  # so it is not sent again
    await soon(server.peers[0].client_closed.wait())
    assert len(server.peers) == 1


async def test_malformed_body_is_an_upstream_error(pool: UpstreamPool, serve: Serve) -> None:
    async def garble(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + chunk(b"fine") + b"zz\r\n")
        await peer.until_client_closes()

    server = await serve(garble)
    response = await soon(pool.post(server.url, "/completion", b"{}"))
    with pytest.raises(UpstreamError):
        await soon(response.aread())
    response.close()
    await soon(server.peers[0].client_closed.wait())


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1:8080", "unix:///tmp/llama.sock", "127.0.0.1:8080", "http://"]
)
async def test_address_that_is_not_plain_http_is_an_upstream_error(
    pool: UpstreamPool, url: str
) -> None:
    with pytest.raises(UpstreamError, match="not a plain http"):
        await pool.post(url, "/completion", b"{}")


# Cancellation


async def test_cancelled_post_aborts_its_connection(pool: UpstreamPool, serve: Serve) -> None:
    asked = asyncio.Event()

    async def answer_once_then_never(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"ok"))
        await peer.request()
        asked.set()
        await peer.until_client_closes()

    server = await serve(answer_once_then_never)
    assert await post_and_read(pool, server.url) == b"ok"
    waiting = asyncio.create_task(pool.post(server.url, "/completion", b"{}"))
    await soon(asked.wait())
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await soon(server.peers[0].client_closed.wait())
    assert idle_connections(pool) == 0
    assert len(server.peers) == 1


async def test_cancelled_body_read_then_close_aborts(pool: UpstreamPool, serve: Serve) -> None:
    async def head_only(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD)
        await peer.until_client_closes()

    server = await serve(head_only)
    response = await soon(pool.post(server.url, "/completion", b"{}"))
    reading = asyncio.create_task(response.aread())
    await asyncio.sleep(0.01)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    response.close()
    await soon(server.peers[0].client_closed.wait())
    assert idle_connections(pool) == 0


# Flow control


def pattern(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]  # 251: prime, so no piece aligns


def transport_of(response: UpstreamResponse) -> Any:
    return response._connection._transport


async def test_slow_reader_pauses_the_connection_and_gets_everything(
    pool: UpstreamPool, serve: Serve
) -> None:
    size = 32 << 20  # far more than the socket buffers of both ends can hold
    body = pattern(size)
    sent_all = asyncio.Event()

    async def flood(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
            for start in range(0, size, 1 << 20):
                await peer.send(body[start : start + (1 << 20)])
            sent_all.set()

    server = await serve(flood)
    response = await soon(pool.post(server.url, "/completion", b"{}"))
    reader = response._reader
    await until(lambda: not transport_of(response).is_reading())
    assert reader.buffered <= HIGH_WATER + (1 << 20)  # one socket read past the mark
    await asyncio.sleep(0.05)
    assert not sent_all.is_set()  # the server is held back, not buffered for
    assert reader.buffered <= HIGH_WATER + (1 << 20)

    received = bytearray()
    async with asyncio.timeout(PATIENCE_S * 2):
        async for piece in response.aiter_raw():
            received += piece
            if len(received) % 7 == 0:
                await asyncio.sleep(0)  # a reader a little slower than the socket
    assert received == body
    assert sent_all.is_set()
    response.close()

    assert idle_connections(pool) == 1  # and the connection still works
    assert await post_and_read(pool, server.url) == body
    assert len(server.peers) == 1


async def test_connection_paused_when_its_answer_completed_works_again(
    pool: UpstreamPool, serve: Serve
) -> None:
    # One byte over the mark: the read that completes the answer is the one that pauses.
    big = answer(b"x" * (HIGH_WATER + 1))
    replies = iter([big, answer(b"small")])

    async def serve_replies(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(next(replies))

    server = await serve(serve_replies)
    response = await soon(pool.post(server.url, "/completion", b"{}"))
    await until(lambda: response._connection.complete)
    assert response._reader.buffered > HIGH_WATER  # enough to pause reading...
    assert transport_of(response).is_reading()  # ...but it is whole: nothing to hold back
    response.close()  # complete, so it goes back to the pool without being read
    assert idle_connections(pool) == 1

    assert await post_and_read(pool, server.url) == b"small"
    assert len(server.peers) == 1


def this_hosts_address() -> str | None:
    """An IPv4 address of this host that is not loopback, if it has a route out (a UDP
    socket's connect picks its source address and sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: any routed address does
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


async def test_a_connection_to_another_host_is_probed_one_on_loopback_is_not(
    pool: UpstreamPool,
) -> None:
    """A peer host gone from the network sends no reset: keep-alive probes end its requests
    instead of leaving them waiting for ever. A child on loopback needs none."""
    host = this_hosts_address()
    if host is None:
        pytest.skip("this host has no address but loopback")
    server = await asyncio.start_server(lambda r, w: None, "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for address, probed in ((host, 1), ("127.0.0.1", 0)):
            connection = await pool.connect((address, port))
            try:
                sock = connection._transport.get_extra_info("socket")  # type: ignore[union-attr]
                assert bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) == probed
            finally:
                connection.abort()
    finally:
        server.close()
