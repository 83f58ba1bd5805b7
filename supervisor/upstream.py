"""The relay's HTTP client: POST a body to a child over a pooled keep-alive connection and
read the answer as it arrives.

httpx cost about a millisecond of CPU per relayed request, half the gateway's own time (py-spy
on the relay against a zero-cost upstream). The relay needs one thing only (POST to a
llama-server on loopback, read a framed answer, stream it on), which this does on an asyncio
protocol with httptools, uvicorn's own parser, for a few hundredths of that. httpx stays where
speed does not matter: readiness and health polls, the admin client.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import cast
from urllib.parse import urlsplit

import httptools

LOG = logging.getLogger(__name__)
IDLE_EXPIRY_S = 2.0  # llama-server drops a keep-alive connection after 5 s idle
CONNECT_TIMEOUT_S = 10.0
HIGH_WATER = 1 << 18  # stop reading from a child this far ahead of a slow client
LOW_WATER = 1 << 16


class UpstreamError(ConnectionError):
    """The connection to a child failed: refused, closed, or a malformed answer."""


class ClosedBeforeAnswer(UpstreamError):
    """The connection closed before a single byte of the answer came back."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the answer to its current request."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.on_lost: Callable[[_Connection], None] | None = None
        self._closed = False
        self._start_request()

    def _start_request(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.complete = False
        self.keep_alive = False
        self._head: asyncio.Future[None] = self._loop.create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._wake: asyncio.Future[None] | None = None
        self._error: UpstreamError | None = None
        self._answered = False
        self._framed = False

    @property
    def usable(self) -> bool:
        return not self._closed

    def send(self, head: bytes, body: bytes) -> None:
        assert self._transport is not None
        self._start_request()
        if len(body) < 65536:  # the usual small body: one write, one segment
            self._transport.write(head + body)
        else:
            self._transport.write(head)
            self._transport.write(body)

    async def head(self) -> None:
        await self._head

    async def chunk(self) -> bytes | None:
        """The next piece of the body as it came off the socket; None at its end."""
        while not self._chunks:
            if self.complete:
                return None
            if self._error is not None:
                raise self._error
            self._wake = self._loop.create_future()
            await self._wake
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= LOW_WATER and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return chunk

    def abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.complete:  # nothing was asked: the connection is out of step
            self.abort()
            return
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed answer: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self.on_lost is not None:
            self.on_lost(self)
        if self.complete:
            return
        if self._head.done() and not self._framed:
            self.on_message_complete()  # an answer that runs until the connection closes
        elif not self._answered:
            self._fail(ClosedBeforeAnswer("the connection closed before any answer"))
        else:
            self._fail(UpstreamError("the connection closed in the middle of the answer"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key in ("content-length", "transfer-encoding"):
            self._framed = True
        self.headers.append((key, value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        if not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wakeup()

    def on_message_complete(self) -> None:
        self.complete = True
        if self._paused and self._transport is not None:
            # Nothing is left of this answer to hold back, and a complete answer may go back
            # to the pool unread: paused there, it would never see its next answer.
            self._paused = False
            self._transport.resume_reading()
        self._wakeup()

    def _fail(self, error: UpstreamError) -> None:
        self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: nobody may be waiting for it
        self._wakeup()

    def _wakeup(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)


class UpstreamResponse:
    """A child's answer: status and headers at once, the body as it arrives. ``close`` gives
    a fully read connection back to the pool and drops any other, which makes llama-server
    stop generating."""

    def __init__(self, connection: _Connection, release: Callable[[_Connection], None]) -> None:
        self._connection = connection
        self._release: Callable[[_Connection], None] | None = release
        self.status_code = connection.status
        self.headers = connection.headers

    def header(self, name: str) -> str:
        """A header's value ('' if absent); ``name`` lower-case."""
        return next((value for key, value in self.headers if key == name), "")

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        while (chunk := await self._connection.chunk()) is not None:
            yield chunk

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_raw()])

    def close(self) -> None:
        release, self._release = self._release, None
        if release is None:
            return
        connection = self._connection
        if connection.complete and connection.keep_alive and connection.usable:
            release(connection)
        else:
            connection.abort()


class UpstreamPool:
    """Keep-alive connections to the children, by address; idle ones are reused newest first
    and dropped after ``idle_expiry`` seconds, before llama-server would close them."""

    def __init__(
        self, idle_expiry: float = IDLE_EXPIRY_S, connect_timeout: float = CONNECT_TIMEOUT_S
    ) -> None:
        self._idle_expiry = idle_expiry
        self._connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def post(
        self, base_url: str, path: str, body: bytes, api_key: str | None = None
    ) -> UpstreamResponse:
        """POST ``body`` (JSON) to ``base_url + path``; the answer once its head is in.

        A pooled connection can be dead the moment it is reused: llama-server closes
        keep-alive connections without saying so (after two streamed answers, seen here; and
        after 5 s idle). If one closes before any answer, the request never reached the child
        and goes once more on a fresh connection; if the child itself is gone, that fails to
        connect."""
        address = _address(base_url)
        head = _request_head(address, path, len(body), api_key)
        connection = self._take(address)
        if connection is not None:
            try:
                return await self._exchange(connection, address, head, body)
            except ClosedBeforeAnswer:
                LOG.info("pooled connection to %s:%d was closed; sending again", *address)
        return await self._exchange(await self._connect(address), address, head, body)

    def close(self) -> None:
        for connections in list(self._idle.values()):
            for connection in list(connections):
                connection.abort()
        self._idle.clear()

    async def _exchange(
        self, connection: _Connection, address: tuple[str, int], head: bytes, body: bytes
    ) -> UpstreamResponse:
        connection.send(head, body)
        try:
            await connection.head()
        except BaseException:
            connection.abort()
            raise
        return UpstreamResponse(connection, lambda done: self._put(address, done))

    async def _connect(self, address: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(_Connection, *address)
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to {address[0]}:{address[1]}: {exc}") from exc
        return connection

    def _take(self, address: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(address)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            connection.on_lost = None
            if connection.usable and now - connection.idle_since < self._idle_expiry:
                return connection
            connection.abort()
        return None

    def _put(self, address: tuple[str, int], connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        idle = self._idle.setdefault(address, [])
        idle.append(connection)

        def forget(lost: _Connection) -> None:
            if lost in idle:
                idle.remove(lost)
            if not idle and self._idle.get(address) is idle:
                del self._idle[address]

        connection.on_lost = forget


def _address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        raise UpstreamError(f"not a plain http:// address: {base_url}")
    return parts.hostname, parts.port or 80


def _request_head(
    address: tuple[str, int], path: str, length: int, api_key: str | None = None
) -> bytes:
    authorization = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n{authorization}"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode("latin-1")
