"""What each model's llama-server children printed: a ring buffer per model (kept across
restarts and swaps), live followers for ``GET /api/v2/models/{id}/logs/stream``, and the
echo of the lines that matter in the gateway's own log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from supervisor.clock import iso
from supervisor.followed import FollowedRing
from supervisor.redact import redact_paths

FOLLOWER_BACKLOG = 1000  # lines a slow follower may fall behind before it misses some
LineSink = Callable[[int | None, str], None]
EchoPolicy = Literal["all", "warnings"]
CHILD_LOG = logging.getLogger("supervisor.child")
# llama.cpp's log prefix: an optional timestamp, then the level's letter.
_MARK = re.compile(r"(?:\d+\.\d+\.\d+\.\d+ )?([DIWE]) ")
_LEVELS = {"D": logging.DEBUG, "I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR}


def echo_level(line: str, policy: EchoPolicy) -> int | None:
    """The level at which the gateway's log repeats a child's line, or None to keep it only
    in the model's log. llama-server marks each line with its level; ``warnings`` repeats
    those it marks W or E, and unmarked output (a crash message, an older fork's lines),
    but not the several info lines it prints for every request."""
    mark = _MARK.match(line)
    if mark is None:
        return logging.INFO
    level = _LEVELS[mark.group(1)]
    return level if policy == "all" or level >= logging.WARNING else None


@dataclass(frozen=True)
class LogLine:
    time: float
    role: str
    pid: int | None
    line: str

    def as_json(self) -> dict[str, Any]:
        """As the logs routes serve it: host paths cut to their last part (``redact.py``), as
        in every answer; the gateway's own log keeps them whole."""
        line = redact_paths(self.line)
        return {"time": iso(self.time), "role": self.role, "pid": self.pid, "line": line}


class ChildLog:
    """One model's lines, newest last."""

    def __init__(self, size: int, clock: Callable[[], float] = time.time) -> None:
        self._lines: FollowedRing[LogLine] = FollowedRing(size, FOLLOWER_BACKLOG)
        self._clock = clock

    def append(self, role: str, pid: int | None, line: str) -> None:
        self._lines.append(LogLine(self._clock(), role, pid, line))

    def tail(self, count: int) -> list[LogLine]:
        return self._lines.recent(count)

    def follow(self) -> contextlib.AbstractContextManager[asyncio.Queue[LogLine]]:
        """A queue that gets every line appended from now on, while the block runs."""
        return self._lines.follow()


class ChildLogs:
    """Every model's ChildLog, made on first use; ``echo`` is what the gateway's log repeats
    (``echo_level``)."""

    def __init__(self, size: int, echo: EchoPolicy = "warnings") -> None:
        self.size = size
        self.echo: EchoPolicy = echo
        self._logs: dict[str, ChildLog] = {}

    def of(self, model_id: str) -> ChildLog:
        log = self._logs.get(model_id)
        if log is None:
            log = self._logs[model_id] = ChildLog(self.size)
        return log

    def sink(self, model_id: str, role: str) -> LineSink:
        """Where a child of ``model_id`` in ``role`` sends its lines."""
        log = self.of(model_id)
        name = model_id if role == "chat" else f"{model_id}#{role}"

        def take(pid: int | None, line: str) -> None:
            log.append(role, pid, line)
            level = echo_level(line, self.echo)
            if level is not None:
                CHILD_LOG.log(level, "[%s] %s", name, line, extra={"child": name})

        return take
