"""Time as the gateway tells it: epoch seconds shown as ISO 8601, and the clock that the
lifecycle's loops, backoffs and timings read (a parameter, so tests replay time instead of
sleeping)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with seconds precision: ``2024-01-15T10:30:00Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back."""

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` on this clock."""


class SystemClock:
    """The real one."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def wait_or_sleep(clock: Clock, event: asyncio.Event, seconds: float) -> None:
    """Return when ``event`` is set or after ``seconds`` on ``clock``, whichever comes first."""
    if event.is_set():
        return
    waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(clock.sleep(seconds))]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
