"""The pool with scripted fake children: single-flight loads, failures, exits, stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fakes import FakeFactory, Script
from fakes import make_entry as entry

from supervisor.backends.argv import Role
from supervisor.backends.pool import BackendPool
from supervisor.config import Settings
from supervisor.errors import ModelLoadError, ModelUnavailable

pytestmark = pytest.mark.anyio


def make_pool(factory: FakeFactory) -> BackendPool:
    settings = Settings(stop_grace_s=3.0)
    return BackendPool(settings, httpx.AsyncClient(), lambda: Path("/bin/llama-server"), factory)


async def test_concurrent_requests_share_one_start() -> None:
    factory = FakeFactory([Script(ready_delay=0.05)])
    pool = make_pool(factory)
    leases = await asyncio.gather(*(pool.lease(entry(), Role.CHAT) for _ in range(5)))
    assert len(factory.made) == 1
    assert {lease.backend.process.pid for lease in leases} == {factory.made[0].pid}
    assert leases[0].backend.in_flight == 5
    for lease in leases:
        lease.release()
        lease.release()  # idempotent
    assert leases[0].backend.in_flight == 0


async def test_chat_and_embedding_children_are_separate() -> None:
    factory = FakeFactory()
    pool = make_pool(factory)
    chat = await pool.lease(entry(), Role.CHAT)
    embed = await pool.lease(entry(), Role.EMBEDDING)
    assert chat.backend is not embed.backend
    assert "--embeddings" in factory.made[1].argv
    assert "--embeddings" not in factory.made[0].argv


async def test_load_failure_carries_the_output_tail_and_next_request_retries() -> None:
    factory = FakeFactory([Script(fail_with=["gguf_init: invalid magic", "failed to load"])])
    pool = make_pool(factory)
    with pytest.raises(ModelLoadError) as caught:
        await pool.lease(entry(), Role.CHAT)
    assert caught.value.stderr_tail[-1] == "failed to load"
    assert "invalid magic" in caught.value.message
    assert pool.loaded() == []
    lease = await pool.lease(entry(), Role.CHAT)
    assert lease.backend.process is factory.made[1]


async def test_a_lost_port_race_is_retried_on_a_new_port() -> None:
    factory = FakeFactory([Script(fail_with=["couldn't bind HTTP server socket"])])
    pool = make_pool(factory)
    lease = await pool.lease(entry(), Role.CHAT)
    assert len(factory.made) == 2
    assert lease.backend.process is factory.made[1]


async def test_an_exited_child_is_forgotten_and_reloaded_on_demand() -> None:
    factory = FakeFactory()
    pool = make_pool(factory)
    first = await pool.lease(entry(), Role.CHAT)
    factory.made[0].die(-9)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert pool.loaded() == []
    second = await pool.lease(entry(), Role.CHAT)
    assert second.backend is not first.backend


async def test_autoload_off_refuses_an_unloaded_model() -> None:
    pool = make_pool(FakeFactory())
    with pytest.raises(ModelUnavailable):
        await pool.lease(entry(), Role.CHAT, autoload=False)


async def test_close_stops_every_child_with_the_grace_period() -> None:
    factory = FakeFactory()
    pool = make_pool(factory)
    await pool.lease(entry(), Role.CHAT)
    await pool.lease(entry(), Role.EMBEDDING)
    await pool.close()
    assert [p.stopped_with_grace for p in factory.made] == [3.0, 3.0]
    assert not any(p.alive for p in factory.made)
    assert pool.loaded() == []
