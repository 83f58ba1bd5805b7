"""Starting children: where the plan puts them (``placer.py``), started once more where the
plan changed meanwhile, and restarted with exponential backoff after one died (pinned
models, and children killed for not answering)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from supervisor.children.child import Backend, ChildStarter
from supervisor.children.spec import LoadParams
from supervisor.errors import SupervisorError
from supervisor.lifecycle.context import LifecycleContext
from supervisor.lifecycle.model import ManagedModel
from supervisor.lifecycle.table import ModelTable
from supervisor.models.registry import ModelEntry

LOG = logging.getLogger(__name__)
STALE_PLAN_RESTARTS = 2  # a child that started on a plan made stale meanwhile starts again


class ChildStarts:
    def __init__(
        self,
        context: LifecycleContext,
        starter: ChildStarter,
        table: ModelTable,
        started: Callable[[], None],
    ) -> None:
        """``started`` is told after every start, whether it worked or not (the plan counts
        one child more, or one fewer, from then on)."""
        self._context = context
        self._starter = starter
        self._table = table
        self._started = started

    async def start(self, model: ManagedModel, entry: ModelEntry, params: LoadParams) -> Backend:
        """Start a child for ``model`` where the plan puts it, after making way: running
        children whose share shrinks are replaced first, those that only move are re-pinned."""
        context, clock = self._context, self._context.clock
        settings, placer, role = context.settings, context.placer, model.role
        began = clock.monotonic()
        try:
            placement = placer.place(model, entry, params, self._table.models())
            await placer.make_way(self._table.models(), model, entry, params)
            backend = await self._starter.start(settings, entry, role, params, placement)
            for _ in range(STALE_PLAN_RESTARTS):
                # Another child started meanwhile and changed the plan: this one has served
                # nothing yet, so starting it again costs a load and no request.
                fresh = placer.place(model, entry, params, self._table.models())
                if fresh.threads == placement.threads:
                    break
                await backend.process.stop(settings.stop_grace_s)
                placement = fresh
                backend = await self._starter.start(settings, entry, role, params, fresh)
        except Exception:
            context.events.load_finished(entry.id, role, clock.monotonic() - began, ok=False)
            raise
        finally:
            self._started()
        context.events.load_finished(entry.id, role, clock.monotonic() - began, ok=True)
        return backend

    async def restart(self, model: ManagedModel) -> None:
        """Load ``model`` again, with backoff between failed attempts; give up (logged) after
        ``restart_max_attempts``."""
        context = self._context
        settings = context.settings
        retrying = AsyncRetrying(
            sleep=context.clock.sleep,
            wait=wait_exponential(multiplier=0.5, max=settings.restart_backoff_max_s),
            stop=stop_after_attempt(settings.restart_max_attempts),
            retry=retry_if_exception_type(SupervisorError),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    model.restart_count += 1
                    context.events.restarted(model.entry.id, model.role)
                    await model.load()
        except SupervisorError as exc:
            LOG.error("[%s] gave up restarting: %s", model.name, exc.message)
