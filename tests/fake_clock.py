"""A clock for lifecycle tests: time moves only when the test moves it, so loops, backoffs and
TTLs replay at once instead of sleeping (``supervisor.clock.Clock``)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

SETTLE_TURNS = 20  # event-loop turns that woken tasks get before time moves on


async def settle(turns: int = SETTLE_TURNS) -> None:
    """Let ready tasks run (no time passes)."""
    for _ in range(turns):
        await asyncio.sleep(0)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # sleepers due at the same time wake in order

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many tasks sleep on this clock now."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``: each sleeper wakes at its own deadline, in order, and
        runs (and may sleep again) before time moves further. Tasks ready now run first."""
        await settle()
        end = self.now + seconds
        while self._sleepers and self._sleepers[0][0] <= end:
            deadline, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, deadline)
            if not future.done():  # a cancelled sleep is just dropped
                future.set_result(None)
                await settle()
        self.now = end
        await settle()

    async def run_until(
        self, done: Callable[[], bool], step: float = 0.5, limit: float = 600.0
    ) -> None:
        """Advance by ``step`` until ``done()``; fail after ``limit`` seconds of this clock."""
        end = self.now + limit
        await settle()
        while not done():
            assert self.now < end, f"not done after {limit:g}s (fake clock)"
            await self.advance(step)
