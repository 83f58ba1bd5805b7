"""One process's own CPU time and memory, not its children's (the gateway's llama-server
children are measured as llama-server, not as gateway)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psutil  # type: ignore[import-untyped]  # no stubs in the dev deps

MB = 1024 * 1024
SAMPLE_EVERY_S = 0.1


class ProcessMeter:
    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak_rss_mb = 0.0

    def cpu_seconds(self) -> float:
        """User plus system time of the process itself."""
        times = self._process.cpu_times()
        user: float = times.user
        system: float = times.system
        return user + system

    def rss_mb(self) -> float:
        rss: float = self._process.memory_info().rss / MB
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        return rss

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[None]:
        """Sample RSS every 100 ms while the body runs, so ``peak_rss_mb`` sees load peaks."""
        task = asyncio.create_task(self._sample())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.rss_mb()

    async def _sample(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self.rss_mb()
            await asyncio.sleep(SAMPLE_EVERY_S)
