"""What a client's connection may hold while it sends a request: time, open files, memory.

None of this needs a key, so an attacker can hold all of it. Before these bounds a probe held
the gateway with connections that sent nothing, heads trickled a byte at a time and bodies that
stalled or trickled (all kept forever); 300 silent sockets used up an open-files limit of 256,
so new clients were reset and a model load failed with "Too many open files"; and 16 stalled
15 MiB uploads grew the gateway by 225 MB. ``Intake`` bounds each:

- **Time.** A request's line and headers must arrive within ``head_timeout_s`` of their first
  byte, and a new connection must start one within that time too. A body must not stall for
  ``body_idle_timeout_s``, nor, once it has taken that long, arrive slower than
  ``body_min_rate`` bytes a second. Then the connection gets a 408 (none if it sent nothing of
  the request yet) and is closed.
- **Open files.** At most ``connection_cap`` client connections: one more is answered 503 and
  closed at once. The cap leaves ``FD_RESERVE`` of the open-files limit for children's pipes,
  model files and the like, and half the rest for connections to children.
- **Memory.** Bodies still arriving hold at most ``max_pending_body_bytes`` together; a read
  that would pass it gets a 503 and the connection is closed.

Time is judged by one sweep a second over the open connections (``Intake.sweep``), not by a
timer per read: a request's own path pays a counter and a set, nothing per answer chunk.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Protocol

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from supervisor.config import Settings
from supervisor.errors import RequestTimeout, SupervisorError
from supervisor.http.error_responses import error_response

LOG = logging.getLogger(__name__)
SWEEP_S = 1.0  # at most; a quarter of the shortest timeout when that is shorter
# Open files kept from client connections: children's pipes and logs, GGUF files read on a
# load, the sessions database, health polls, the listening socket.
FD_RESERVE = 128


class Phase(Enum):
    HEAD = "head"  # reading a request's line and headers, or waiting for a new one's first byte
    BODY = "body"  # reading a request's body
    BUSY = "busy"  # answering, or reading paused by the gateway itself: not the client's doing


class Progress(NamedTuple):
    """Where a connection is: its phase, the number of the request it is on, and the bytes
    of that request's head or body read so far."""

    phase: Phase
    request: int
    read: int


class Connection(Protocol):
    """What the intake needs of a client connection (``intake_protocol.IntakeProtocol``)."""

    def progress(self) -> Progress: ...
    def cut(self, error: SupervisorError | None) -> None: ...


@dataclass(frozen=True)
class IntakeLimits:
    head_timeout_s: float
    body_idle_timeout_s: float
    body_min_rate: int
    connection_cap: int
    max_pending_body_bytes: int

    @classmethod
    def of(cls, settings: Settings, open_files: int | None = None) -> IntakeLimits:
        """The configured limits; the connection cap lowered to fit ``open_files`` (the
        process's soft limit when not given)."""
        files = open_files if open_files is not None else open_files_limit()
        fitting = max(1, (files - FD_RESERVE) // 2)
        return cls(
            head_timeout_s=settings.head_timeout_s,
            body_idle_timeout_s=settings.body_idle_timeout_s,
            body_min_rate=settings.body_min_rate,
            connection_cap=min(settings.max_connections, fitting),
            max_pending_body_bytes=max(settings.max_pending_body_bytes, settings.max_body_bytes),
        )


def open_files_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


@dataclass
class _Watch:
    """What the sweep last saw of one connection."""

    progress: Progress
    since: float  # when this phase of this request was first seen
    moved: float  # when its byte count last grew


class Intake:
    """The connections of one server, and the body bytes they hold. ``counted`` is told of
    every connection closed or refused for one of the bounds, by reason (the metrics count
    them)."""

    def __init__(
        self,
        limits: IntakeLimits,
        *,
        counted: Callable[[str], None] = lambda reason: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.pending_body_bytes = 0
        self.counted = counted
        self._clock = clock
        self._watched: dict[Connection, _Watch | None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._sweep_s = min(SWEEP_S, limits.head_timeout_s / 4, limits.body_idle_timeout_s / 4)

    def enter(self, connection: Connection) -> bool:
        """A new connection; False when it is one too many (the caller answers and closes)."""
        if len(self._watched) >= self.limits.connection_cap:
            self.counted("too_many_connections")
            return False
        self._watched[connection] = None
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._sweep_s, self._tick)
        return True

    def leave(self, connection: Connection, body_bytes: int) -> None:
        """A connection closed, holding ``body_bytes`` of an unfinished body."""
        self._watched.pop(connection, None)
        self.pending_body_bytes -= body_bytes

    def hold(self, size: int) -> bool:
        """Take ``size`` more bytes of an unfinished body; False (and nothing taken) when the
        total would pass the bound."""
        total = self.pending_body_bytes + size
        if total > self.limits.max_pending_body_bytes:
            return False
        self.pending_body_bytes = total
        return True

    def release(self, size: int) -> None:
        """A body of ``size`` bytes is whole, or dropped."""
        self.pending_body_bytes -= size

    def _tick(self) -> None:
        self._timer = None
        self.sweep()
        if self._watched:
            self._timer = asyncio.get_running_loop().call_later(self._sweep_s, self._tick)

    def sweep(self) -> None:
        """Cut the connections whose head or body has taken too long."""
        now = self._clock()
        for connection, watch in list(self._watched.items()):
            progress = connection.progress()
            if watch is None or progress[:2] != watch.progress[:2]:  # a new phase or request
                self._watched[connection] = _Watch(progress, now, now)
                continue
            if progress.read != watch.progress.read:
                watch.progress, watch.moved = progress, now
            late = self._late(watch, now)
            if late is not None:  # once cut, its progress is BUSY: it is not judged again
                self.counted(late)
                connection.cut(_timeout(progress))

    def _late(self, watch: _Watch, now: float) -> str | None:
        """Why the connection is to be cut, or None."""
        limits, phase = self.limits, watch.progress.phase
        if phase is Phase.HEAD and now - watch.since >= limits.head_timeout_s:
            return "head_timeout"
        if phase is not Phase.BODY:
            return None
        if now - watch.moved >= limits.body_idle_timeout_s:
            return "body_timeout"
        taken = now - watch.since
        if taken >= limits.body_idle_timeout_s and watch.progress.read < taken * (
            limits.body_min_rate
        ):
            return "body_too_slow"
        return None


def _timeout(progress: Progress) -> SupervisorError | None:
    """The 408 for a connection cut in ``progress``; none for one that sent nothing of its
    request (an idle connection is closed, as a kept-alive one is)."""
    if progress.phase is Phase.HEAD and progress.read == 0:
        return None
    what = "headers" if progress.phase is Phase.HEAD else "body"
    return RequestTimeout(f"The request's {what} arrived too slowly; the connection is closed")


def closing_answer(
    path: str, error: SupervisorError, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """``error`` as a whole HTTP answer in ``path``'s surface format, closing the connection."""
    response = error_response(path, error)
    lines = [STATUS_LINE[response.status_code]]
    for name, value in (*default_headers, *response.raw_headers, (b"connection", b"close")):
        lines += (name, b": ", value, b"\r\n")
    return b"".join([*lines, b"\r\n", bytes(response.body)])
