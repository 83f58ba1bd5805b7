"""A child's output pipe, read in batches.

llama-server prints several lines for every request, each in a write of its own, just before
it answers. Read line by line, each write woke the gateway's event loop, which cost a relayed
request about 0.4 ms of CPU and delayed the answer behind it. Here, once the pipe turns
readable, reading waits ``BATCH_S`` and then takes whatever has accumulated in one go.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

LOG = logging.getLogger(__name__)
BATCH_S = 0.05
READ_SIZE = 65536
READS_PER_BATCH = 16  # then the loop gets a turn: a flood of output cannot starve it
MAX_LINE = 65536  # a longer line is passed on in pieces


class LineSplitter:
    """Bytes in, whole lines out: decoded, trailing space stripped, empty ones dropped. An
    unfinished line waits for the rest, up to ``MAX_LINE`` bytes."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[str]:
        *whole, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > MAX_LINE:
            whole.append(self._partial)
            self._partial = b""
        return _decoded(whole)

    def finish(self) -> list[str]:
        """What is left when the pipe closes."""
        rest, self._partial = self._partial, b""
        return _decoded([rest])


def _decoded(lines: list[bytes]) -> list[str]:
    return [text for raw in lines if (text := raw.decode("utf-8", "replace").rstrip())]


class PipeReader:
    """Reads the pipe ``fd`` (which it owns and closes) on the running loop, handing each line
    to ``on_line``; ``finished`` completes at end of file or ``close``."""

    def __init__(self, fd: int, on_line: Callable[[str], None], batch_s: float = BATCH_S) -> None:
        self._fd = fd
        self._on_line = on_line
        self._batch_s = batch_s
        self._lines = LineSplitter()
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self.finished: asyncio.Future[None] = self._loop.create_future()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)

    def close(self) -> None:
        """Stop reading (lines not yet read are dropped)."""
        if self.finished.done():
            return
        if self._timer is not None:
            self._timer.cancel()
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self.finished.set_result(None)

    def _readable(self) -> None:
        self._loop.remove_reader(self._fd)
        self._timer = self._loop.call_later(self._batch_s, self._drain)

    def _drain(self) -> None:
        self._timer = None
        for _ in range(READS_PER_BATCH):
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self._emit(self._lines.finish())
                self.close()
                return
            self._emit(self._lines.feed(data))
        self._loop.add_reader(self._fd, self._readable)

    def _emit(self, lines: list[str]) -> None:
        for line in lines:
            try:
                self._on_line(line)
            except Exception:  # a bad sink must not stop the reading: the child would block
                LOG.exception("output line handler failed")
