"""Making room for a model about to start: least-recently-used idle models are unloaded until
it fits the memory budget and the count of loaded models; never a busy or pinned one."""

from __future__ import annotations

import logging

from supervisor.children.spec import LoadParams
from supervisor.errors import InsufficientMemory
from supervisor.lifecycle.events import LifecycleEvents
from supervisor.lifecycle.model import ManagedModel
from supervisor.lifecycle.placer import Placer
from supervisor.lifecycle.state import ModelState
from supervisor.lifecycle.table import ModelTable, changed
from supervisor.models.memory import format_bytes
from supervisor.models.registry import ModelEntry

LOG = logging.getLogger(__name__)


def fits_beside(placer: Placer, model: ManagedModel, entry: ModelEntry, params: LoadParams) -> bool:
    """Whether a second child for ``entry`` fits beside the model's current one. Children
    of the same file share its mmapped weights in RAM (one copy in the page cache)."""
    same_file = model.serving() is not None and not changed(model.entry, entry)
    return placer.memory_fit(entry, params, shares_weights=same_file).fits


async def make_room(
    table: ModelTable,
    placer: Placer,
    limit: int | None,
    events: LifecycleEvents,
    model: ManagedModel,
    entry: ModelEntry,
    params: LoadParams,
) -> None:
    """Evict until ``entry`` (for ``model``) fits beside at most ``limit - 1`` other loaded
    models, or raise ``InsufficientMemory`` with the figures when nothing more may go."""
    while True:
        others = [m for m in table.loaded() if m.entry.id != model.entry.id]
        fit = placer.memory_fit(entry, params)
        too_many = limit is not None and len({m.entry.id for m in others}) >= limit
        if fit.fits and not too_many:
            return
        victim = least_recently_used(others)
        if victim is None:
            reason = (
                f"{len(others)} models loaded (max {limit})"
                if too_many
                else f"{format_bytes(fit.free)} {fit.where} free"
            )
            raise InsufficientMemory(
                f"Model '{model.entry.id}' needs about {format_bytes(fit.need)}; {reason}, "
                "and every loaded model is busy or pinned"
            )
        LOG.info("evicting '%s' (least recently used) to load '%s'", victim.name, model.name)
        events.evicted(victim.entry.id)
        await table.unload(victim.entry)


def least_recently_used(models: list[ManagedModel]) -> ManagedModel | None:
    """The idle, unpinned model used longest ago, if any."""
    idle = [
        m
        for m in models
        if m.backend is not None
        and m.state is ModelState.READY
        and not m.pinned
        and m.backend.in_flight == 0
        and m.queued == 0
    ]
    return min(idle, key=lambda m: m.backend.last_used if m.backend else 0.0, default=None)
