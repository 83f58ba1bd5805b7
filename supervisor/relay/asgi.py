"""The relay from a child back to the client, and the shared httpx client for polls.

Bytes from the child are passed through untouched where the surface speaks llama-server's own
dialect (no JSON parsing, no re-buffering); surfaces with their own event shapes get the
child's SSE events parsed and translated.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol

import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from supervisor.children.child import Lease
from supervisor.errors import BackendError, SupervisorError
from supervisor.relay.disconnect import DisconnectWatch
from supervisor.relay.upstream import (
    JSON,
    RawHeaders,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
)

LOG = logging.getLogger(__name__)

ErrorEvent = Callable[[SupervisorError], bytes]
STREAM_HEADERS = [(b"x-accel-buffering", b"no"), (b"cache-control", b"no-cache")]
CLIENT_CLOSED_REQUEST = 499  # nginx's code; the client never sees it
HOP_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"server", b"date"}
)


def make_client() -> httpx.AsyncClient:
    """The client for readiness and health polls (the relay has its own, ``UpstreamPool``).
    Idle connections are dropped after 2 s, well before llama-server's own 5 s keep-alive
    timeout."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=10.0, read=None, write=60.0, pool=60.0),
        limits=httpx.Limits(max_connections=None, keepalive_expiry=2.0),
        trust_env=False,
    )


@contextlib.contextmanager
def map_upstream_errors(model: str) -> Iterator[None]:
    """Translate the upstream client's errors into ours, once, at the boundary."""
    try:
        yield
    except UpstreamError as exc:
        raise backend_failed(model, exc) from exc


def backend_failed(model: str, error: UpstreamError) -> BackendError:
    return BackendError(f"Model '{model}' backend failed: {error}")


def stream_broke(model: str) -> BackendError:
    """What a stream's client is told when the child fails after the stream began."""
    return BackendError(
        f"Model '{model}' backend failed during the stream; the request did not complete"
    )


class Proxy:
    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool

    @property
    def pool(self) -> UpstreamPool:
        return self._pool

    def close(self) -> None:
        self._pool.close()

    async def forward(
        self,
        acquire: Callable[[], Awaitable[Lease]],
        path: str,
        body: bytes,
        stream: StreamTranslator,
        receive: Receive,
        *,
        answer: Callable[[int, bytes], bytes] | None = None,
        method: str = "POST",
        content_type: str = JSON,
    ) -> Response:
        """Wait for a slot (``acquire``), POST ``body`` to its child (or send ``method``)
        and relay the answer: SSE through ``stream`` (raw bytes with ``Passthrough``),
        anything else through ``answer`` (its status and body to the body the client gets).

        The client's disconnect is watched (on ``receive``) all along: a client that gives up
        while queued leaves the queue, and one that gives up while llama-server generates a
        non-streamed answer (sent only when complete) cancels the upstream request, so the
        slot frees at once."""
        exchange = await self._exchange(acquire, path, body, receive, method, content_type)
        if exchange is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        lease, upstream, content = exchange
        if is_event_stream(upstream.raw_headers):
            return RelayResponse(upstream, lease, stream, stream_headers(upstream.raw_headers))
        _close(upstream, lease)
        if answer is not None:
            content = answer(upstream.status_code, content)
        response = Response(content, upstream.status_code)
        response.raw_headers = [*passed_headers(upstream.raw_headers), *response.raw_headers]
        return response

    async def fetch_json(
        self,
        acquire: Callable[[], Awaitable[Lease]],
        path: str,
        body: bytes,
        receive: Receive,
    ) -> tuple[int, Any] | None:
        """Like ``forward`` for a non-streamed request whose answer a surface reshapes: the
        status and parsed JSON, or None if the client went away."""
        exchange = await self._exchange(acquire, path, body, receive)
        if exchange is None:
            return None
        lease, upstream, content = exchange
        _close(upstream, lease)
        try:
            return upstream.status_code, json.loads(content)
        except ValueError as exc:
            raise BackendError(f"Model '{lease.backend.entry.id}' answered no JSON") from exc

    async def _exchange(
        self,
        acquire: Callable[[], Awaitable[Lease]],
        path: str,
        body: bytes,
        receive: Receive,
        method: str = "POST",
        content_type: str = JSON,
    ) -> tuple[Lease, UpstreamResponse, bytes] | None:
        """The lease, the child's response (open if it streams) and its body if it does not;
        None if the client disconnected first (everything is released then)."""
        lease: Lease | None = None
        upstream: UpstreamResponse | None = None
        content = b""
        try:
            with DisconnectWatch(receive) as watch:
                lease = await acquire()
                with map_upstream_errors(lease.backend.entry.id):
                    backend = lease.backend
                    upstream = await self._pool.post(
                        backend.base_url, path, body, backend.api_key,
                        method=method, content_type=content_type,
                    )  # fmt: skip
                    if not is_event_stream(upstream.raw_headers):
                        content = await upstream.aread()
        except BaseException:
            _close(upstream, lease)
            raise
        if watch.gone or upstream is None or lease is None:
            _close(upstream, lease)  # the client went away: nobody reads the answer
            return None
        return lease, upstream, content


def is_event_stream(headers: RawHeaders) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.startswith(b"text/event-stream")
    return False


def _close(upstream: UpstreamResponse | None, lease: Lease | None) -> None:
    if upstream is not None:
        upstream.close()
    if lease is not None:
        lease.release()


def passed_headers(headers: RawHeaders) -> RawHeaders:
    """The child's headers minus hop-by-hop ones (names come lower-cased), so ours can
    replace its own, and minus its CORS headers: llama-server allows every origin
    (``Access-Control-Allow-Origin: *``), which would let any web page read the gateway's
    answers; the gateway's own CORS setting (``cors_origins``) decides instead."""
    return [
        (k, v) for k, v in headers if k not in HOP_HEADERS and not k.startswith(b"access-control-")
    ]


def stream_headers(headers: RawHeaders) -> RawHeaders:
    """A relayed stream's headers: the child's passed ones, with ours for streams in place
    of any it sent itself."""
    ours = {name for name, _ in STREAM_HEADERS}
    return [*((k, v) for k, v in passed_headers(headers) if k not in ours), *STREAM_HEADERS]


class StreamTranslator(Protocol):
    """What a relayed SSE stream sends: ``chunks`` turns the child's raw body, as it arrives,
    into the surface's bytes; ``error`` is the tail sent when the child fails mid-stream; ``closed``
    runs once when the relay is over, however it ended."""

    def chunks(self, raw: AsyncIterator[bytes]) -> AsyncIterator[bytes]: ...
    def error(self, error: SupervisorError) -> bytes: ...
    def closed(self) -> None: ...


DONE_EVENT = b"data: [DONE]\n\n"


class StreamMeter(Protocol):
    """Sees a relayed stream's bytes as they pass, and its end (the token metrics)."""

    def chunk(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class Passthrough:
    """The child's bytes untouched. Per chunk only whether it ended an SSE event is noted, so
    an error event after a child's death starts on a fresh line. With ``ensure_done``, a
    stream the child ends without ``data: [DONE]`` (llama.cpp's native /completion) gets it;
    a ``meter`` sees each chunk."""

    def __init__(
        self,
        error_event: ErrorEvent,
        *,
        ensure_done: bool = False,
        meter: StreamMeter | None = None,
    ) -> None:
        self._error_event = error_event
        self._ensure_done = ensure_done
        self._meter = meter
        self._event_closed = True
        self._last = b""

    async def chunks(self, raw: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in raw:
            yield self.feed(chunk)
        if tail := self.tail():
            yield tail

    def feed(self, chunk: bytes) -> bytes:
        """One piece of the child's body, as the client gets it (``chunks`` one at a time)."""
        self._event_closed = chunk.endswith(b"\n\n")
        self._last = chunk
        if self._meter is not None:
            self._meter.chunk(chunk)
        return chunk

    def tail(self) -> bytes:
        """What follows the child's last piece: ``data: [DONE]`` where it is owed."""
        owed = self._ensure_done and not self._last.endswith(DONE_EVENT)
        return DONE_EVENT if owed else b""

    def error(self, error: SupervisorError) -> bytes:
        return (b"" if self._event_closed else b"\n\n") + self._error_event(error)

    def closed(self) -> None:
        if self._meter is not None:
            self._meter.close()


async def sse_events(raw: AsyncIterator[bytes]) -> AsyncIterator[Any]:
    """The JSON payloads of a child's SSE stream, in order; None for ``data: [DONE]``."""
    buffer = b""
    async for chunk in raw:
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                yield None if payload == b"[DONE]" else json.loads(payload)


class RelayResponse(Response):
    """Relays a child's SSE stream.

    Starlette's StreamingResponse (ASGI spec >= 2.4) notices a gone client only at its next
    send, and then leaves the body iterator unclosed. Here a watcher cancels the relay as soon
    as the client disconnects, and the upstream response is always closed, which makes
    llama-server drop the generation and free its slot at once."""

    def __init__(
        self,
        upstream: UpstreamResponse,
        lease: Lease,
        stream: StreamTranslator,
        headers: RawHeaders,
    ) -> None:
        self.status_code = upstream.status_code
        self.background = None
        self.raw_headers = headers
        self._upstream = upstream
        self._lease = lease
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with DisconnectWatch(receive):
                await self._relay(send)
        except OSError:
            pass  # the client went away while we were sending
        finally:
            _close(self._upstream, self._lease)
            self._stream.closed()

    async def _relay(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        try:
            async for chunk in self._stream.chunks(self._upstream.aiter_raw()):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (UpstreamError, ValueError) as exc:
            model = self._lease.backend.entry.id
            LOG.warning("[%s] stream broke: %r", model, exc)
            tail = self._stream.error(stream_broke(model))
            await send({"type": "http.response.body", "body": tail, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
