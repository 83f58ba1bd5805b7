"""Cold load (request → first token for an unloaded model) and hot swap, timed from the
client's side."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx

from .loadgen import make_client, send
from .scenarios import CHAT, chat_body
from .targets import LlamaSettings, Target, start_direct

ADMIN_TIMEOUT_S = 300.0
UNLOAD_WAIT_S = 60.0


class LifecycleError(RuntimeError):
    """An unload, load or swap did not do what the benchmark needs."""


async def first_token_s(target: Target) -> float:
    """Send one streamed request; seconds from sending it to its first token."""
    content = json.dumps(chat_body(target.model, 4, stream=True)).encode()
    async with make_client(target.base_url) as client:
        outcome = await send(client, CHAT, content, stream=True)
    if outcome.ttft is None:
        raise LifecycleError(f"{target.name}: no token ({outcome.error or outcome.disconnect})")
    return outcome.ttft


async def gateway_cold_load(target: Target) -> float:
    async with _admin() as admin:
        response = await admin.post(f"{target.base_url}/api/v2/models/{target.model}/unload")
        _check(response, "unload")
    return await first_token_s(target)


async def router_cold_load(target: Target) -> float:
    """llama-server's router unloads with ``POST /models/unload`` (asynchronously: wait for
    ``GET /models`` to say ``unloaded``); the next request loads the model again."""
    async with _admin() as admin:
        response = await admin.post(
            f"{target.base_url}/models/unload", json={"model": target.model}
        )
        _check(response, "unload")
        deadline = time.monotonic() + UNLOAD_WAIT_S
        while await _router_state(admin, target) != "unloaded":
            if time.monotonic() > deadline:
                raise LifecycleError("router: the model did not unload")
            await asyncio.sleep(0.02)
    return await first_token_s(target)


async def _router_state(admin: httpx.AsyncClient, target: Target) -> str | None:
    listing = (await admin.get(f"{target.base_url}/models")).json()
    for model in listing.get("data", []):
        if model.get("id") == target.model:
            return str(model.get("status", {}).get("value"))
    return None


async def direct_cold_start(settings: LlamaSettings, workdir: Path, attempt: int) -> float:
    """A fresh llama-server: process start → ready → first token. The baseline the other
    cold loads are compared with."""
    started = time.perf_counter()
    target = await asyncio.to_thread(start_direct, settings, workdir, f"direct-cold-{attempt}")
    try:
        ready = time.perf_counter()
        return ready - started + await first_token_s(target)
    finally:
        await asyncio.to_thread(target.stop)


async def gateway_swap(target: Target, path: str) -> dict[str, Any]:
    """``POST /api/v2/models/{id}/swap``: the gateway's own ``swap_seconds`` and the wall
    time the client waited for the answer."""
    async with _admin() as admin:
        started = time.perf_counter()
        response = await admin.post(
            f"{target.base_url}/api/v2/models/{target.model}/swap", json={"path": path}
        )
        waited = time.perf_counter() - started
    _check(response, "swap")
    report = response.json()
    return {
        "swap_seconds": report.get("swap_seconds"),
        "client_s": waited,
        "mode": report.get("mode"),
    }


def _admin() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=ADMIN_TIMEOUT_S, trust_env=False)


def _check(response: httpx.Response, what: str) -> None:
    if not response.is_success:
        raise LifecycleError(f"{what} answered {response.status_code}: {response.text[:300]}")
