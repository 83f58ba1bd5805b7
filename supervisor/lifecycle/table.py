"""The table of models: one ManagedModel per (model, role), made on first use, and the
operations that concern every child a model runs (load, unload, swap) or the child that
serves a role (acquire).

Reading the table never adds to it: only a load, a request or a swap makes a model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from supervisor.children.child import Backend, Lease
from supervisor.children.spec import LoadParams, Role, serving_role
from supervisor.config import ModelSettings
from supervisor.lifecycle.model import ManagedModel, SwapReport
from supervisor.lifecycle.state import ModelState
from supervisor.models.registry import ModelEntry

ModelMaker = Callable[[ModelEntry, Role], ManagedModel]


class ModelTable:
    def __init__(self, make: ModelMaker) -> None:
        self._make = make
        self._models: dict[tuple[str, Role], ManagedModel] = {}

    # -- reading ---------------------------------------------------------------------------
    def get(self, entry: ModelEntry, role: Role = Role.CHAT) -> ManagedModel | None:
        return self._models.get((entry.id, role))

    def models(self) -> list[ManagedModel]:
        return list(self._models.values())

    def items(self) -> list[tuple[tuple[str, Role], ManagedModel]]:
        """Each model with its key: (model id, role)."""
        return list(self._models.items())

    def loaded(self) -> list[ManagedModel]:
        return [m for m in self._models.values() if m.backend is not None]

    def roles_of(self, entry: ModelEntry) -> list[ManagedModel]:
        """The model's children that exist, chat first."""
        return [m for role in Role if (m := self._models.get((entry.id, role))) is not None]

    def state_of(self, entry: ModelEntry, role: Role) -> ModelState:
        """The state of the child that serves ``role`` for the model (a dedicated reranker's
        main child serves its reranks)."""
        model = self.get(entry, serving_role(entry, role))
        return model.state if model is not None else ModelState.UNLOADED

    # -- changing ---------------------------------------------------------------------------
    def model(self, entry: ModelEntry, role: Role = Role.CHAT) -> ManagedModel:
        """The model in ``role``, made (unloaded) if the table has none yet."""
        key = (entry.id, role)
        model = self._models.get(key)
        if model is None:
            model = self._make(entry, role)
            model.pinned = role is Role.CHAT and own_settings(entry).pinned
            self._models[key] = model
        return model

    def remove(self, key: tuple[str, Role]) -> None:
        self._models.pop(key, None)

    async def acquire(self, entry: ModelEntry, role: Role, *, autoload: bool) -> Lease[Backend]:
        return await self.model(entry, serving_role(entry, role)).acquire(autoload=autoload)

    def try_acquire(self, entry: ModelEntry, role: Role = Role.CHAT) -> Lease[Backend] | None:
        """A slot at once, or None where ``acquire`` would have to wait, load or refuse."""
        model = self.get(entry, serving_role(entry, role))
        return model.try_acquire() if model is not None else None

    async def load(self, entry: ModelEntry, params: LoadParams | None = None) -> Backend:
        """Make the model ready (its chat child: the one a dedicated reranker runs), with
        ``params`` if given; its other running children (embedding, rerank) are swapped to
        ``params`` too, so that no child is left on the old parameters."""
        backend = await self.model(entry).load(params)
        if params is not None:
            for other in self._others(entry):
                if other.serving() is not None:
                    await other.load(params)
        return backend

    async def unload(self, entry: ModelEntry) -> bool:
        results = [await m.unload() for m in self.roles_of(entry)]
        return any(results)

    async def swap(
        self, entry: ModelEntry, new: ModelEntry, params: LoadParams | None
    ) -> SwapReport:
        """Swap the chat child to ``new``; the model's other children (embedding, rerank), if
        running, follow."""
        report = await self.model(entry).swap(new, params)
        for other in self._others(entry):
            if other.backend is not None:
                await other.swap(new, params)
        return report

    def _others(self, entry: ModelEntry) -> Iterator[ManagedModel]:
        """The model's children besides the chat one, each looked up when its turn comes."""
        for role in Role:
            other = self.get(entry, role)
            if role is not Role.CHAT and other is not None:
                yield other

    async def close(self) -> None:
        await asyncio.gather(*(m.close() for m in self._models.values()), return_exceptions=True)


def own_settings(entry: ModelEntry) -> ModelSettings:
    """The model's own settings (defaults where the configuration names none)."""
    return entry.overrides or ModelSettings(file=entry.file_name)


def changed(old: ModelEntry, new: ModelEntry) -> bool:
    """A different file (path, size or time) or different launch settings."""

    def key(e: ModelEntry) -> tuple[object, ...]:
        return (e.path, e.size, e.modified, e.overrides, e.mmproj, e.mmproj_size)

    return key(old) != key(new)
