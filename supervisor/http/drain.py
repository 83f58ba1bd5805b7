"""Graceful shutdown: after SIGTERM the gateway answers new requests 503 (with Retry-After)
while the requests already in flight, streams included, get up to a grace period to finish.

The signal handler only calls ``begin()`` (on the event loop); the server's tick loop asks
``finished()`` and then runs uvicorn's own shutdown, whose lifespan stops every child.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Drain:
    def __init__(self, grace_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s = grace_s
        self._clock = clock
        self.in_flight = 0
        self._deadline: float | None = None
        self.stopping = asyncio.Event()  # set once draining starts: endless streams end then

    @property
    def draining(self) -> bool:
        return self._deadline is not None

    def begin(self) -> None:
        if self._deadline is None:
            self._deadline = self._clock() + self.grace_s
            self.stopping.set()

    def finished(self) -> bool:
        """Draining, and nothing left in flight or the grace is over."""
        if self._deadline is None:
            return False
        return self.in_flight == 0 or self._clock() >= self._deadline

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
