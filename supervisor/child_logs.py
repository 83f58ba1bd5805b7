"""What each model's llama-server children printed: a ring buffer per model (kept across
restarts and swaps), and live followers for ``GET /api/v2/models/{id}/logs/stream``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .dialects.api_v2 import iso

FOLLOWER_BACKLOG = 1000  # lines a slow follower may fall behind before it misses some
LineSink = Callable[[int | None, str], None]


@dataclass(frozen=True)
class LogLine:
    time: float
    role: str
    pid: int | None
    line: str

    def as_json(self) -> dict[str, Any]:
        return {"time": iso(self.time), "role": self.role, "pid": self.pid, "line": self.line}


class ChildLog:
    """One model's lines, newest last."""

    def __init__(self, size: int, clock: Callable[[], float] = time.time) -> None:
        self._lines: deque[LogLine] = deque(maxlen=size)
        self._followers: set[asyncio.Queue[LogLine]] = set()
        self._clock = clock

    def append(self, role: str, pid: int | None, line: str) -> None:
        entry = LogLine(self._clock(), role, pid, line)
        self._lines.append(entry)
        for queue in self._followers:
            with contextlib.suppress(asyncio.QueueFull):  # a stalled follower misses lines
                queue.put_nowait(entry)

    def tail(self, count: int) -> list[LogLine]:
        if count <= 0:
            return []
        return list(self._lines)[-count:]

    @contextlib.contextmanager
    def follow(self) -> Iterator[asyncio.Queue[LogLine]]:
        queue: asyncio.Queue[LogLine] = asyncio.Queue(maxsize=FOLLOWER_BACKLOG)
        self._followers.add(queue)
        try:
            yield queue
        finally:
            self._followers.discard(queue)


class ChildLogs:
    """Every model's ChildLog, made on first use."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._logs: dict[str, ChildLog] = {}

    def of(self, model_id: str) -> ChildLog:
        log = self._logs.get(model_id)
        if log is None:
            log = self._logs[model_id] = ChildLog(self.size)
        return log

    def sink(self, model_id: str, role: str) -> LineSink:
        log = self.of(model_id)
        return lambda pid, line: log.append(role, pid, line)
