"""The gateway's services, built once per app in its lifespan and reached by routes through
``app.state``: the registry, the pool of children, the proxy, and model picking."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .backends.argv import Role
from .backends.binary import find_llama_server
from .backends.pool import BackendPool, Lease, ProcessFactory
from .config import Settings
from .errors import ModelUnavailable
from .proxy import Proxy, make_client
from .registry import ModelEntry, Registry


@dataclass
class Gateway:
    settings: Settings
    registry: Registry
    pool: BackendPool
    proxy: Proxy
    client: httpx.AsyncClient
    started_at: float = field(default_factory=time.time)

    def pick_model(self, name: str | None) -> ModelEntry:
        """The model a request names; without a name, the configured default, else the only
        loaded model (guide/API.md: never a silent fallback for an unknown name)."""
        if name is not None:
            return self.registry.resolve(name)
        if self.settings.default_model:
            return self.registry.resolve(self.settings.default_model)
        loaded = {b.entry.id: b.entry for b in self.pool.loaded()}
        if len(loaded) == 1:
            return next(iter(loaded.values()))
        raise ModelUnavailable(
            "No model named in the request and no default model configured"
            if not loaded
            else "No model named in the request and several models are loaded"
        )

    async def lease(self, entry: ModelEntry, role: Role = Role.CHAT) -> Lease:
        return await self.pool.lease(entry, role, autoload=self.settings.autoload)

    async def close(self) -> None:
        await self.pool.close()
        await self.client.aclose()


def build_gateway(settings: Settings, factory: ProcessFactory | None = None) -> Gateway:
    registry = Registry(settings)
    registry.scan()
    client = make_client()

    def binary() -> Path:
        return find_llama_server(settings.llama_server, settings.cache_dir)

    pool = (
        BackendPool(settings, client, binary, factory)
        if factory
        else BackendPool(settings, client, binary)
    )
    return Gateway(settings, registry, pool, Proxy(client), client)
