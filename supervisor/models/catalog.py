"""The models the gateway serves now: the registry in force (a reload puts a rescanned one
in its place), the peers' models, and which model a request means (``pick``, ``serve``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from supervisor.config import Settings
from supervisor.errors import ModelNotFound, ModelUnavailable
from supervisor.models.registry import ModelEntry, Registry, version_entry
from supervisor.peers.model import PeerModel

# A model a request may use: a local file, run by a child of ours, or another server's.
Served = ModelEntry | PeerModel


class PeerLookup(Protocol):
    """The peers' models by name (``peers.directory.Peers``)."""

    def find(self, name: str) -> PeerModel | None: ...


class Catalog:
    """The registry and the settings it was scanned with. ``loaded`` names the models with a
    running child: a request that names no model goes to the only one, if nothing else
    decides."""

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        loaded: Callable[[], Iterable[str]],
        peers: PeerLookup | None = None,
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._loaded = loaded
        self._peers = peers

    def replace(self, registry: Registry, settings: Settings) -> None:
        """Serve from a rescanned ``registry`` of new ``settings`` (a reload)."""
        self._registry, self._settings = registry, settings

    def entries(self) -> list[ModelEntry]:
        return self._registry.entries()

    def resolve(self, name: str) -> ModelEntry:
        """The model ``name`` refers to; ``ModelNotFound`` for an unknown name."""
        return self._registry.resolve(name)

    def pick(self, name: str | None) -> ModelEntry:
        """The model a request names; without a name, the configured default, else the only
        loaded model (guide/API.md: never a silent fallback for an unknown name)."""
        if name is not None:
            return self._registry.resolve(name)
        if self._settings.default_model:
            return self._registry.resolve(self._settings.default_model)
        loaded = set(self._loaded())
        if len(loaded) == 1:
            return self._registry.resolve(next(iter(loaded)))
        raise ModelUnavailable(
            "No model named in the request and no default model configured"
            if not loaded
            else "No model named in the request and several models are loaded"
        )

    def serve(self, name: str | None) -> Served:
        """The model an inference request names, as ``pick`` finds it, else a peer's model of
        that name (``"<peer>/<id>"``, or a bare id no local model has): a local model wins."""
        try:
            return self.pick(name)
        except ModelNotFound:
            wanted = name if name is not None else self._settings.default_model
            found = self._peers.find(wanted) if self._peers is not None and wanted else None
            if found is None:
                raise
            return found

    def version(self, current: ModelEntry, path: str) -> ModelEntry:
        """``current`` served from the file at ``path`` in a models directory (a hot swap)."""
        return version_entry(self._settings, current, path)
