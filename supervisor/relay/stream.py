"""What passes from a child's answer to the client: which of its headers, whether it is an
event stream, its bytes as they pass (``Passthrough``: untouched, for the surfaces that speak
llama-server's own dialect) and its SSE events parsed (``sse_events``: for the surfaces with
event shapes of their own). Shared by both ways a relayed request is served: the relay lane
(``relay/lane.py``) and ASGI (``relay/asgi.py``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Protocol

from supervisor.errors import SupervisorError
from supervisor.relay.upstream import RawHeaders

ErrorEvent = Callable[[SupervisorError], bytes]
STREAM_HEADERS = [(b"x-accel-buffering", b"no"), (b"cache-control", b"no-cache")]
HOP_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"server", b"date"}
)
DONE_EVENT = b"data: [DONE]\n\n"


def is_event_stream(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether an answer with these headers (names lower-case, as the child's come and as
    ASGI gives them) is an SSE stream: its first ``content-type`` says so."""
    for name, value in headers:
        if name == b"content-type":
            return value.startswith(b"text/event-stream")
    return False


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
