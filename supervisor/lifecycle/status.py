"""Status snapshots for the model routes: read from the table without adding to it (a model
never used shows as a fresh, unloaded one), with each child's measured memory (RSS) read at
most once per ``RSS_TTL_S``, since listing models is polled and walking a process tree is
not free."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from supervisor.children.spec import LoadParams, Role
from supervisor.lifecycle.context import LifecycleContext
from supervisor.lifecycle.model import ManagedModel
from supervisor.lifecycle.state import ModelState, ModelStatus
from supervisor.lifecycle.table import ModelTable, own_settings
from supervisor.models.memory import process_tree_rss
from supervisor.models.registry import ModelEntry

RSS_TTL_S = 2.0  # how long a child's measured RSS is shown before it is read again


class StatusReader:
    def __init__(
        self,
        context: LifecycleContext,
        table: ModelTable,
        read_rss: Callable[[int], int | None] = process_tree_rss,
    ) -> None:
        self._context = context
        self._table = table
        self._read_rss = read_rss
        self._rss: dict[int, tuple[float, int | None]] = {}  # pid -> (when read, bytes)

    def status(self, entry: ModelEntry) -> ModelStatus:
        chat = self._table.get(entry)
        if chat is None:
            params = LoadParams()
            shown = ModelStatus(
                id=entry.id,
                path=entry.path,
                state=ModelState.UNLOADED,
                pinned=own_settings(entry).pinned,
                params=params,
                memory_estimate=self._context.placer.estimate(entry, params).total,
            )
        else:
            shown = self._of(chat)
        children = [(m.role.value, b) for m in self._table.roles_of(entry) if (b := m.serving())]
        return replace(
            shown,
            embedding_state=self._table.state_of(entry, Role.EMBEDDING),
            rerank_state=self._table.state_of(entry, Role.RERANK),
            placements={role: b.placement for role, b in children},
            pids={role: pid for role, b in children if (pid := b.process.pid)},
        )

    def _of(self, chat: ManagedModel) -> ModelStatus:
        backend = chat.backend
        pid = backend.process.pid if backend else None
        return ModelStatus(
            id=chat.entry.id,
            path=chat.entry.path,
            state=chat.state,
            pinned=chat.pinned,
            pid=pid,
            port=backend.port if backend else None,
            params=chat.params,
            memory_estimate=self._context.placer.estimate(chat.entry, chat.params).total,
            rss=self.rss(pid) if pid else None,
            loaded_at=backend.loaded_at if backend else None,
            load_seconds=backend.load_seconds if backend else None,
            last_error=chat.last_error,
            exit_code=chat.exit_code,
            restart_count=chat.restart_count,
            in_flight=backend.in_flight if backend else 0,
            queued=chat.queued,
        )

    def rss(self, pid: int) -> int | None:
        """The process tree's RSS, as read within the last ``RSS_TTL_S``."""
        now = self._context.clock.monotonic()
        cached = self._rss.get(pid)
        if cached is not None and now - cached[0] < RSS_TTL_S:
            return cached[1]
        value = self._read_rss(pid)
        # Readings past their time go: pids of stopped children are never asked again.
        self._rss = {p: r for p, r in self._rss.items() if now - r[0] < RSS_TTL_S}
        self._rss[pid] = (now, value)
        return value
