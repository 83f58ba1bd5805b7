"""The relay's HTTP client: POST a body to a child over a pooled keep-alive connection and
read the answer as it arrives.

httpx cost about a millisecond of CPU per relayed request, half the gateway's own time (py-spy
on the relay against a zero-cost upstream); the relay needs only a POST to a llama-server on
loopback, which this does on an asyncio protocol with httptools (uvicorn's own parser) for a few
hundredths of that. httpx stays where speed does not matter: health polls, the admin client.

An answer is heard by an ``AnswerSink`` as it comes off the socket: ``UpstreamPool.post`` gives
one to await (``UpstreamResponse``); the relay lane (``relay/lane.py``) is a sink itself.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

from supervisor.relay.destination import JSON, LOOPBACK, Address, probed, request_head

LOG = logging.getLogger(__name__)
IDLE_EXPIRY_S = 2.0  # llama-server drops a keep-alive connection after 5 s idle
CONNECT_TIMEOUT_S = 10.0
HIGH_WATER = 1 << 18  # stop reading from a child this far ahead of a slow client
LOW_WATER = 1 << 16
RawHeaders = list[tuple[bytes, bytes]]  # names lower-case


class UpstreamError(ConnectionError):
    """The connection to a child failed: refused, closed, or a malformed answer."""


class ClosedBeforeAnswer(UpstreamError):
    """The connection closed before a single byte of the answer came back."""


class AnswerSink(Protocol):
    """Hears one answer: its head, its body piece by piece, then its end or a failure (at
    most one of the two, once)."""

    def answer_head(self, status: int, headers: RawHeaders) -> None: ...
    def answer_body(self, chunk: bytes) -> None: ...
    def answer_end(self) -> None: ...
    def answer_failed(self, error: UpstreamError) -> None: ...


class Connection(asyncio.Protocol):
    """One keep-alive connection to a child, and the sink of its current request."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.reused = False  # taken from the pool: the child may have closed it meanwhile
        self.on_lost: Callable[[Connection], None] | None = None
        self._closed = False
        self._sink: AnswerSink | None = None
        self._headers: RawHeaders = []
        self.complete = False
        self.keep_alive = False
        self._answered = False
        self._framed = False
        self._head_done = False
        self._paused = False

    @property
    def usable(self) -> bool:
        return not self._closed

    @property
    def reading_paused(self) -> bool:
        return self._paused

    def send(self, head: bytes, body: bytes, sink: AnswerSink) -> None:
        """Send a request (``head`` from ``request_head``, which leaves the body's length
        to fill in); its answer goes to ``sink``."""
        assert self._transport is not None
        self._sink = sink
        self._headers = []
        self.complete = False
        self.keep_alive = False
        self._answered = False
        self._framed = False
        self._head_done = False
        head += b"%d\r\n\r\n" % len(body)
        if len(body) < 65536:  # the usual small body: one write, one segment
            self._transport.write(head + body)
        else:
            self._transport.write(head)
            self._transport.write(body)

    def pause_reading(self) -> None:
        """Hold the child back (its reader is slow); ``resume_reading`` lets it go on."""
        if not self._paused and not self.complete and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection; its sink hears nothing more."""
        self._closed = True
        self._sink = None
        if self._transport is not None:
            self._transport.abort()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.complete or self._sink is None:  # nothing was asked: out of step
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
        if self.complete or self._sink is None:
            return
        if self._head_done and not self._framed:
            self.on_message_complete()  # an answer that runs until the connection closes
        elif not self._answered:
            self._fail(ClosedBeforeAnswer("the connection closed before any answer"))
        else:
            self._fail(UpstreamError("the connection closed in the middle of the answer"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key == b"content-length" or key == b"transfer-encoding":
            self._framed = True
        self._headers.append((key, value))

    def on_headers_complete(self) -> None:
        self._head_done = True
        self.keep_alive = self._parser.should_keep_alive()
        if self._sink is not None:
            self._sink.answer_head(self._parser.get_status_code(), self._headers)

    def on_body(self, body: bytes) -> None:
        if self._sink is not None:
            self._sink.answer_body(body)

    def on_message_complete(self) -> None:
        self.complete = True
        # Nothing is left of this answer to hold back, and a complete answer may go back to
        # the pool unread: paused there, it would never see its next answer.
        self.resume_reading()
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.answer_end()

    def _fail(self, error: UpstreamError) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.answer_failed(error)


class _Buffered:
    """The ``AnswerSink`` to await: the head, then the body as it arrives, buffered up to
    ``HIGH_WATER`` bytes ahead of its reader (past that the child is held back)."""

    def __init__(self, connection: Connection) -> None:
        loop = asyncio.get_running_loop()
        self._connection = connection
        self._head: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self.status = 0
        self.headers: RawHeaders = []
        self._chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self._ended = False
        self._error: UpstreamError | None = None
        self._wake: asyncio.Future[None] | None = None

    async def head(self) -> None:
        await self._head

    async def chunk(self) -> bytes | None:
        """The next piece of the body as it came off the socket; None at its end."""
        while not self._chunks:
            if self._ended:
                return None
            if self._error is not None:
                raise self._error
            self._wake = self._loop.create_future()
            await self._wake
        chunk = self._chunks.popleft()
        self.buffered -= len(chunk)
        if self.buffered <= LOW_WATER and self._connection.reading_paused:
            self._connection.resume_reading()
        return chunk

    def answer_head(self, status: int, headers: RawHeaders) -> None:
        self.status, self.headers = status, headers
        if not self._head.done():
            self._head.set_result(None)

    def answer_body(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self.buffered += len(chunk)
        if self.buffered > HIGH_WATER:
            self._connection.pause_reading()
        self._wakeup()

    def answer_end(self) -> None:
        self._ended = True
        self._wakeup()

    def answer_failed(self, error: UpstreamError) -> None:
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

    def __init__(
        self, connection: Connection, reader: _Buffered, release: Callable[[Connection], None]
    ) -> None:
        self._connection = connection
        self._reader = reader
        self._release: Callable[[Connection], None] | None = release
        self.status_code = reader.status
        self.raw_headers = reader.headers
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in reader.headers]

    def header(self, name: str) -> str:
        """A header's value ('' if absent); ``name`` lower-case."""
        return next((value for key, value in self.headers if key == name), "")

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        while (chunk := await self._reader.chunk()) is not None:
            yield chunk

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_raw()])

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release(self._connection)


class UpstreamPool:
    """Keep-alive connections to the children, by address; idle ones are reused newest first
    and dropped after ``idle_expiry`` seconds, before llama-server would close them."""

    def __init__(
        self, idle_expiry: float = IDLE_EXPIRY_S, connect_timeout: float = CONNECT_TIMEOUT_S
    ) -> None:
        self._idle_expiry = idle_expiry
        self._connect_timeout = connect_timeout
        self._idle: dict[Address, list[Connection]] = {}

    async def post(
        self,
        base_url: str,
        path: str,
        body: bytes,
        api_key: str | None = None,
        *,
        method: str = "POST",
        content_type: str = JSON,
    ) -> UpstreamResponse:
        """POST ``body`` (JSON unless said) to ``base_url + path`` (or send ``method``: a GET
        with no body); the answer once its head is in. A pooled connection the child had
        closed is replaced once (``stale``)."""
        address = address_of(base_url)
        head = request_head(address, path, api_key, method=method, content_type=content_type)
        connection = self.take(address)
        if connection is not None:
            try:
                return await self._exchange(connection, head, body)
            except UpstreamError as exc:
                if not stale(connection, exc):
                    raise
        return await self._exchange(await self.connect(address), head, body)

    def close(self) -> None:
        for connections in list(self._idle.values()):
            for connection in list(connections):
                connection.abort()
        self._idle.clear()

    async def _exchange(self, connection: Connection, head: bytes, body: bytes) -> UpstreamResponse:
        reader = _Buffered(connection)
        connection.send(head, body, reader)
        try:
            await reader.head()
        except BaseException:
            connection.abort()
            raise
        return UpstreamResponse(connection, reader, self.release)

    async def connect(self, address: Address) -> Connection:
        """A fresh connection to ``address``."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                transport, connection = await loop.create_connection(
                    lambda: Connection(address), *address
                )
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to {address[0]}:{address[1]}: {exc}") from exc
        if not address[0].startswith(LOOPBACK):
            probed(transport)
        return connection

    def take(self, address: Address) -> Connection | None:
        """An idle connection to ``address``, if the pool has a live one."""
        idle = self._idle.get(address)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            connection.on_lost = None
            if connection.usable and now - connection.idle_since < self._idle_expiry:
                connection.reused = True
                return connection
            connection.abort()
        return None

    def release(self, connection: Connection) -> None:
        """Done with ``connection``: back to the pool if its answer was whole and it may be
        kept alive, else closed (a child stops generating when its connection drops)."""
        if not (connection.complete and connection.keep_alive and connection.usable):
            connection.abort()
            return
        address = connection.address
        connection.idle_since = time.monotonic()
        idle = self._idle.setdefault(address, [])
        idle.append(connection)

        def forget(lost: Connection) -> None:
            if lost in idle:
                idle.remove(lost)
            if not idle and self._idle.get(address) is idle:
                del self._idle[address]

        connection.on_lost = forget


def stale(connection: Connection, error: UpstreamError) -> bool:
    """Whether a request failed only because ``connection`` was dead when taken from the pool
    (llama-server closes keep-alive connections unannounced: after two streamed answers, seen
    here, and 5 s idle): it never reached the child, and goes once more on a fresh one."""
    if connection.reused and isinstance(error, ClosedBeforeAnswer):
        LOG.info("pooled connection to %s:%d was closed; sending again", *connection.address)
        return True
    return False


def address_of(base_url: str) -> Address:
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        raise UpstreamError(f"not a plain http:// address: {base_url}")
    return parts.hostname, parts.port or 80
