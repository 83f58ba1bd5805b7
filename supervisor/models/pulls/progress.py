"""One pull as its followers see it: its figures, its state, the rate, and its events.

Progress is a snapshot, not a queue: a follower that reads slowly skips figures and never
holds memory for them; the pull's last event (done or error) is kept, so that every
follower, however late, reads how it ended."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from supervisor.clock import Clock, iso

PUBLISH_S = 0.25  # a few progress events a second, however fast the bytes come
RATE_WINDOW_S = 3.0


@dataclass(frozen=True)
class PullEvent:
    name: str  # "progress", "done" or "error"
    data: dict[str, Any]


class RateMeter:
    """Bytes per second over the last few seconds, on ``clock``. A size smaller than the last
    (a server that answered a resume with the whole file: the count starts over) starts the
    window over, so that the rate is never negative."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, size: int) -> float:
        now = self._clock.monotonic()
        if self._samples and size < self._samples[-1][1]:
            self._samples.clear()
        self._samples.append((now, size))
        while len(self._samples) > 2 and self._samples[1][0] <= now - RATE_WINDOW_S:
            self._samples.popleft()
        first_time, first_size = self._samples[0]
        return (size - first_size) / (now - first_time) if now > first_time else 0.0


class Pull:
    """A running pull's figures and state; ``follow`` reads its events."""

    def __init__(self, pull_id: str, url: str, file: str, started_at: float, clock: Clock) -> None:
        self.id, self.url, self.file, self.started_at = pull_id, url, file, started_at
        self.state = "connecting"  # then downloading, verifying, installing
        self.bytes, self.rate = 0, 0.0
        self.total: int | None = None
        self.result: PullEvent | None = None
        self._clock = clock
        self._meter = RateMeter(clock)
        self._published = float("-inf")
        self._version = 0
        self._changed = asyncio.Event()

    def advance(self, size: int, total: int | None) -> None:
        """Bytes so far (a ``transfer.Report``): published a few times a second."""
        self.bytes, self.rate = size, self._meter.update(size)
        first = self.state == "connecting" or total != self.total
        self.state, self.total = "downloading", total
        now = self._clock.monotonic()
        if first or now - self._published >= PUBLISH_S:
            self._published = now
            self._publish()

    def enter(self, state: str) -> None:
        self.state = state
        self._publish()

    def finish(self, event: PullEvent) -> None:
        self.result = event
        self._publish()

    def progress(self) -> dict[str, Any]:
        return {"id": self.id, "file": self.file, "bytes": self.bytes, "total": self.total,
                "rate": round(self.rate, 1)}  # fmt: skip

    def listing(self) -> dict[str, Any]:
        """The pull as ``GET /api/v2/models/pulls`` lists it."""
        return {**self.progress(), "url": self.url, "state": self.state,
                "started_at": iso(self.started_at)}  # fmt: skip

    async def wait(self) -> PullEvent:
        """The last event, once the pull is over."""
        while self.result is None:
            await self._changed.wait()
        return self.result

    async def follow(self, keepalive_s: float) -> AsyncGenerator[PullEvent | None, None]:
        """Progress while the pull runs, then its last event; ``None`` after ``keepalive_s``
        without news (the stream's keepalive)."""
        seen = -1
        while True:
            changed = self._changed
            if self.result is not None:
                yield self.result
                return
            if self._version != seen:
                seen = self._version
                yield PullEvent("progress", self.progress())
            try:
                await asyncio.wait_for(changed.wait(), keepalive_s)
            except TimeoutError:
                yield None

    def _publish(self) -> None:
        self._version += 1
        self._changed.set()
        self._changed = asyncio.Event()
