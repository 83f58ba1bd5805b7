"""A configuration reload as the models see it: loaded models whose file or configuration
changed are swapped, removed ones unloaded, pins follow the new configuration. New models
need nothing here: they load on demand (or at once if pinned or preloaded: ``to_preload``)."""

from __future__ import annotations

from supervisor.children.spec import Role
from supervisor.lifecycle.table import ModelTable, changed, own_settings
from supervisor.models.registry import ModelEntry


async def adopt(table: ModelTable, entries: list[ModelEntry]) -> dict[str, list[str]]:
    """Bring the table in line with a rescanned registry; the report names the children
    swapped and unloaded (``added`` is for the caller, which knows the previous registry)."""
    by_id = {e.id: e for e in entries}
    report: dict[str, list[str]] = {"swapped": [], "unloaded": [], "added": []}
    for (model_id, role), model in table.items():
        new = by_id.get(model_id)
        if new is None:
            model.removed = True
            await model.unload()
            table.remove((model_id, role))
            report["unloaded"].append(model.name)
            continue
        model.pinned = role is Role.CHAT and own_settings(new).pinned
        if model.serving() is not None and changed(model.entry, new):
            await model.swap(new)
            report["swapped"].append(model.name)
        else:
            model.entry = new
    return report


def to_preload(table: ModelTable, entries: list[ModelEntry]) -> list[ModelEntry]:
    """The pinned and preloaded models whose chat child is not serving."""
    wanted = [e for e in entries if (own := own_settings(e)).pinned or own.preload]
    return [e for e in wanted if (m := table.get(e)) is None or m.serving() is None]
