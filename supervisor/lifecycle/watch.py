"""The loops that watch the running children: liveness (a child that stops answering /health
is killed and restarted), idle unload (``idle_ttl_s``) and placement (children kept in line
with the plan). Each loop is one pass repeated on the clock; the passes are public, so tests
run them directly."""

from __future__ import annotations

import asyncio
import logging

import httpx

from supervisor.children.child import Backend
from supervisor.clock import wait_or_sleep
from supervisor.lifecycle.context import LifecycleContext
from supervisor.lifecycle.model import ManagedModel
from supervisor.lifecycle.table import ModelTable, own_settings

LOG = logging.getLogger(__name__)
IDLE_CHECK_S = 1.0  # how often the idle loop looks for children past their TTL
PLACEMENT_CHECK_S = 1.0  # how often the placement loop compares children with the plan


class Watch:
    def __init__(
        self, context: LifecycleContext, table: ModelTable, client: httpx.AsyncClient
    ) -> None:
        self._context = context
        self._table = table
        self._client = client
        self._health_misses: dict[Backend, int] = {}
        self._replan = asyncio.Event()

    # -- liveness ----------------------------------------------------------------------------
    async def liveness_loop(self) -> None:
        while True:
            await self._context.clock.sleep(self._context.settings.health_interval_s)
            await self.check_liveness()

    async def check_liveness(self) -> None:
        """Ask every serving child's /health once; forget the misses of children gone."""
        models = [m for m in self._table.models() if m.serving() is not None]
        await asyncio.gather(*(self._check(m) for m in models))
        serving = {m.serving() for m in models}
        self._health_misses = {b: n for b, n in self._health_misses.items() if b in serving}

    async def _check(self, model: ManagedModel) -> None:
        backend = model.serving()
        if backend is None:
            return
        settings = self._context.settings
        try:
            response = await self._client.get(
                f"{backend.base_url}/health", timeout=settings.health_timeout_s
            )
            alive = response.status_code == 200
        except httpx.HTTPError:
            alive = False
        misses = 0 if alive else self._health_misses.get(backend, 0) + 1
        self._health_misses[backend] = misses
        if misses >= settings.health_failures:
            LOG.error("[%s] pid %s stopped answering /health: killing and restarting it",
                      model.name, backend.process.pid)  # fmt: skip
            del self._health_misses[backend]
            model.kill_unresponsive(backend)

    # -- idle unload ---------------------------------------------------------------------------
    async def idle_loop(self) -> None:
        while True:
            await self._context.clock.sleep(IDLE_CHECK_S)
            await self.unload_idle()

    async def unload_idle(self) -> None:
        """Unload every unpinned model idle (no request in flight or queued) for longer than
        its TTL (its own, else the global one)."""
        now = self._context.clock.monotonic()
        for model in self._table.models():
            ttl = own_settings(model.entry).idle_ttl_s or self._context.settings.idle_ttl_s
            backend = model.serving()
            if ttl is None or backend is None or model.pinned:
                continue
            if backend.in_flight == 0 and model.queued == 0 and now - backend.last_used > ttl:
                LOG.info("[%s] idle for %.0fs: unloading", model.name, now - backend.last_used)
                await model.unload()

    # -- placement -------------------------------------------------------------------------------
    def replan(self) -> None:
        """Have the placement loop check the plan now rather than at its next tick."""
        self._replan.set()

    async def placement_loop(self) -> None:
        while True:
            await wait_or_sleep(self._context.clock, self._replan, PLACEMENT_CHECK_S)
            self._replan.clear()
            try:
                await self.follow_plan()
            except Exception:  # the loop must outlive any one child's trouble
                LOG.exception("placement check failed")

    async def follow_plan(self) -> None:
        """One step of bringing the running children in line with the plan (``Placer``); the
        loop comes back at once after a replacement."""
        if await self._context.placer.follow_plan(self._table.models()):
            self._replan.set()
