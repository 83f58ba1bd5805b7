"""Stopping a background loop's task (the peers' checks, the metrics history's sampler): the
services' close goes on after it, so it never raises."""

from __future__ import annotations

import asyncio
import logging


async def stop_loop(task: asyncio.Task[None] | None, what: str, log: logging.Logger) -> None:
    """Cancel ``task`` and wait for it to end; had it failed, log why, as ``what``."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        log.error("%s had failed", what, exc_info=task.exception())
