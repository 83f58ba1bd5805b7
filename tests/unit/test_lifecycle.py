"""The lifecycle with scripted fake children: queueing, loads, drains, swaps, crashes,
eviction, idle unloads and liveness, all without a real llama-server. Loops and backoffs run
on a fake clock: the tests move time instead of sleeping."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import httpx
import pytest
import respx
from fake_clock import FakeClock
from fakes import FAKE_HOST, FakeFactory, FakeProcess, Script, make_entry

from supervisor.children.child import ChildStarter
from supervisor.children.spec import LoadParams, Role
from supervisor.clock import Clock
from supervisor.config import ModelSettings, Settings
from supervisor.errors import InsufficientMemory, ModelLoadError, QueueFull, QueueTimeout
from supervisor.lifecycle.context import LifecycleContext
from supervisor.lifecycle.manager import ModelManager
from supervisor.lifecycle.state import ModelState
from supervisor.lifecycle.status import RSS_TTL_S, StatusReader
from supervisor.lifecycle.table import ModelTable
from supervisor.models.memory import MemoryProbe

pytestmark = pytest.mark.anyio
GiB = 1024**3


def probe(available: int = 16 * GiB) -> MemoryProbe:
    memory = SimpleNamespace(total=24 * GiB, available=available)
    return MemoryProbe(reserve_bytes=0, virtual_memory=lambda: memory, gpu_reader=list)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def manager(
    client: httpx.AsyncClient,
    factory: FakeFactory,
    memory: MemoryProbe | None = None,
    clock: Clock | None = None,
    **overrides: object,
) -> ModelManager:
    # Placement (which may restart a child when another starts) has its own tests:
    # test_placement_lifecycle.py.
    defaults: dict[str, object] = {
        "parallel": 1, "stop_grace_s": 1.0, "drain_timeout_s": 5.0, "place_children": False,
    }  # fmt: skip
    settings = Settings(llama_server=Path(sys.executable), **(defaults | overrides))  # type: ignore[arg-type]
    starter = ChildStarter(client, factory)
    return ModelManager(settings, starter, memory or probe(), client, clock=clock)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_requests_share_one_load(client: httpx.AsyncClient) -> None:
    factory = FakeFactory([Script(ready_delay=0.05)])
    models = manager(client, factory, parallel=4)
    leases = await asyncio.gather(*(models.acquire(make_entry()) for _ in range(4)))
    assert len(factory.made) == 1
    assert {lease.backend.process.pid for lease in leases} == {factory.made[0].pid}
    assert models.status(make_entry()).in_flight == 4


async def test_queue_is_fifo_bounded_and_refuses_overflow(client: httpx.AsyncClient) -> None:
    models = manager(client, FakeFactory(), queue_max=2)
    first = await models.acquire(make_entry())
    second = asyncio.create_task(models.acquire(make_entry()))
    third = asyncio.create_task(models.acquire(make_entry()))
    await settle()
    assert models.status(make_entry()).queued == 2
    with pytest.raises(QueueFull) as refused:
        await models.acquire(make_entry())
    assert refused.value.status_code == 429 and refused.value.retry_after
    first.release()
    lease = await asyncio.wait_for(second, 1)
    assert not third.done()
    lease.release()
    (await asyncio.wait_for(third, 1)).release()


async def test_queue_wait_is_bounded(client: httpx.AsyncClient) -> None:
    models = manager(client, FakeFactory(), queue_timeout_s=0.05)
    held = await models.acquire(make_entry())
    with pytest.raises(QueueTimeout) as timed_out:
        await models.acquire(make_entry())
    assert timed_out.value.status_code == 503
    assert models.status(make_entry()).queued == 0
    held.release()


async def test_a_client_that_gives_up_leaves_the_queue(client: httpx.AsyncClient) -> None:
    models = manager(client, FakeFactory())
    held = await models.acquire(make_entry())
    waiting = asyncio.create_task(models.acquire(make_entry()))
    await settle()
    waiting.cancel()
    await settle()
    assert models.status(make_entry()).queued == 0
    held.release()
    assert models.status(make_entry()).in_flight == 0


async def test_a_failed_load_fails_every_waiter_once_then_retries(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory([Script(fail_with=["error loading model"], ready_delay=0.02)])
    models = manager(client, factory)
    results = await asyncio.gather(
        *(models.acquire(make_entry()) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ModelLoadError) for r in results)
    assert len(factory.made) == 1
    status = models.status(make_entry())
    assert status.state is ModelState.FAILED
    assert status.last_error and "error loading model" in status.last_error
    lease = await models.acquire(make_entry())
    assert lease.backend.process is factory.made[1]


async def test_unload_drains_in_flight_requests_first(client: httpx.AsyncClient) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    lease = await models.acquire(make_entry())
    unloading = asyncio.create_task(models.unload(make_entry()))
    await settle()
    assert models.status(make_entry()).state is ModelState.DRAINING
    assert factory.made[0].alive
    lease.release()
    assert await asyncio.wait_for(unloading, 1)
    assert models.status(make_entry()).state is ModelState.UNLOADED
    assert not factory.made[0].alive


async def test_a_request_during_unload_waits_and_gets_a_new_child(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    lease = await models.acquire(make_entry())
    unloading = asyncio.create_task(models.unload(make_entry()))
    await settle()
    arriving = asyncio.create_task(models.acquire(make_entry()))
    await settle()
    assert not arriving.done()
    lease.release()
    await unloading
    new = await asyncio.wait_for(arriving, 1)
    assert new.backend.process is factory.made[1]


async def test_blue_green_swap_serves_old_requests_on_old_and_new_on_new(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory, parallel=2)
    old_lease = await models.acquire(make_entry())
    v2 = dataclasses.replace(make_entry(), path=Path("/models/v2/tiny.Q4_1.gguf"))
    report = await models.swap(make_entry(), v2, None)
    assert report.mode == "blue-green"
    new_lease = await models.acquire(make_entry())
    assert new_lease.backend.process is factory.made[1]
    assert "/models/v2/tiny.Q4_1.gguf" in factory.made[1].argv
    await settle()
    assert factory.made[0].alive  # still finishing the old request
    old_lease.release()
    await settle()
    assert not factory.made[0].alive
    assert models.status(make_entry()).path == v2.path


async def test_a_failed_swap_leaves_the_old_version_serving(client: httpx.AsyncClient) -> None:
    factory = FakeFactory([Script(), Script(fail_with=["invalid magic"])])
    models = manager(client, factory)
    await models.model(make_entry()).load()
    v2 = dataclasses.replace(make_entry(), path=Path("/models/v2.gguf"))
    with pytest.raises(ModelLoadError):
        await models.swap(make_entry(), v2, None)
    status = models.status(make_entry())
    assert status.state is ModelState.READY
    assert status.path == make_entry().path
    lease = await models.acquire(make_entry())
    assert lease.backend.process is factory.made[0]


async def test_swap_falls_back_to_stop_start_when_both_do_not_fit(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    big = dataclasses.replace(make_entry(), size=150 * 1024**2)  # about 220 MB with its cache

    def ram() -> SimpleNamespace:  # 350 MB, less what loaded children use
        used = sum(m.entry.size for m in models.loaded())
        return SimpleNamespace(total=350 * 1024**2, available=350 * 1024**2 - used)

    models = manager(client, factory, MemoryProbe(0, virtual_memory=ram, gpu_reader=list))
    lease = await models.acquire(big)
    model = models.model(big)
    v2 = dataclasses.replace(big, path=Path("/models/v2.gguf"))
    swapping = asyncio.create_task(models.swap(big, v2, None))
    await settle()
    assert model.state is ModelState.DRAINING
    queued = asyncio.create_task(models.acquire(big))
    lease.release()
    report = await asyncio.wait_for(swapping, 1)
    assert report.mode == "stop-start"
    assert (await asyncio.wait_for(queued, 1)).backend.process is factory.made[1]


async def test_load_with_other_parameters_swaps_to_them(client: httpx.AsyncClient) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    model = models.model(make_entry())
    await model.load(LoadParams(n_ctx=512))
    await model.load(LoadParams(n_ctx=512))
    assert len(factory.made) == 1
    await model.load(LoadParams(n_ctx=1024))
    assert len(factory.made) == 2
    assert "1024" in factory.made[1].argv


async def test_a_crashed_child_is_reloaded_on_the_next_request(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    (await models.acquire(make_entry())).release()
    factory.made[0].die(-9)
    await settle()
    status = models.status(make_entry())
    assert (status.state, status.exit_code) == (ModelState.FAILED, -9)
    assert len(factory.made) == 1  # not pinned: no restart by itself
    lease = await models.acquire(make_entry())
    assert lease.backend.process is factory.made[1]


async def test_a_pinned_model_comes_back_by_itself(client: httpx.AsyncClient) -> None:
    factory, clock = FakeFactory(), FakeClock()
    pinned = make_entry(overrides=ModelSettings(file="tiny.Q4_1.gguf", pinned=True))
    models = manager(client, factory, clock=clock)
    models.start([pinned])
    await clock.run_until(lambda: models.status(pinned).state is ModelState.READY)
    factory.made[0].die(-9)
    await clock.run_until(
        lambda: len(factory.made) == 2 and models.status(pinned).state is ModelState.READY
    )
    status = models.status(pinned)
    assert status.state is ModelState.READY and status.restart_count == 1
    await models.close()


async def test_lru_eviction_respects_the_loaded_model_limit(client: httpx.AsyncClient) -> None:
    factory = FakeFactory()
    models = manager(client, factory, max_loaded_models=1)
    a, b = make_entry(stem="a"), make_entry(stem="b")
    (await models.acquire(a)).release()
    (await models.acquire(b)).release()
    assert models.status(a).state is ModelState.UNLOADED
    assert models.status(b).state is ModelState.READY
    busy = await models.acquire(b)
    with pytest.raises(InsufficientMemory) as refused:
        await models.acquire(a)  # b is busy: never evicted
    assert refused.value.status_code == 503 and refused.value.retry_after
    assert "busy or pinned" in refused.value.message
    busy.release()
    (await models.acquire(a)).release()
    assert models.status(b).state is ModelState.UNLOADED


async def test_a_model_that_cannot_fit_is_refused_with_the_figures(
    client: httpx.AsyncClient,
) -> None:
    models = manager(client, FakeFactory(), probe(available=1024))
    with pytest.raises(InsufficientMemory) as refused:
        await models.acquire(make_entry())
    assert "needs about" in refused.value.message and "1KB RAM free" in refused.value.message


async def test_idle_models_unload_after_their_ttl_but_not_while_busy(
    client: httpx.AsyncClient,
) -> None:
    clock = FakeClock()
    models = manager(client, FakeFactory(), clock=clock, idle_ttl_s=5.0)
    with respx.mock(base_url=f"http://{FAKE_HOST}") as child:
        child.get("/health").respond(200)  # the liveness loop runs too
        models.start([])
        busy = await models.acquire(make_entry())
        await clock.advance(60.0)
        assert models.status(make_entry()).state is ModelState.READY
        busy.release()
        await clock.advance(4.0)
        assert models.status(make_entry()).state is ModelState.READY  # idle, within its TTL
        await clock.run_until(lambda: models.status(make_entry()).state is ModelState.UNLOADED)
    assert clock.now - 1064.0 <= 5.0 + 1.0  # the TTL, and at most one tick of the loop
    await models.close()


async def test_a_child_that_stops_answering_is_killed_and_restarted(
    client: httpx.AsyncClient,
) -> None:
    factory, clock = FakeFactory(), FakeClock()
    models = manager(client, factory, clock=clock, health_interval_s=5.0, health_failures=2)
    with respx.mock(base_url=f"http://{FAKE_HOST}") as child:
        child.get("/health").mock(side_effect=httpx.ReadTimeout("hung"))
        await models.model(make_entry()).load()
        models.start([])
        await clock.advance(5.0)
        assert factory.made[0].alive  # one missed check is not enough
        await clock.run_until(
            lambda: len(factory.made) == 2 and models.status(make_entry()).state is ModelState.READY
        )
    assert clock.now - 1000.0 <= 10.0  # the second missed check
    assert not factory.made[0].alive
    assert models.status(make_entry()).restart_count == 1
    await models.close()


async def test_embedding_children_are_separate_and_unload_together(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    (await models.acquire(make_entry(), Role.CHAT)).release()
    (await models.acquire(make_entry(), Role.EMBEDDING)).release()
    assert "--embeddings" in factory.made[1].argv
    assert models.status(make_entry()).embedding_state is ModelState.READY
    await models.unload(make_entry())
    assert not any(p.alive for p in factory.made)


async def test_a_rerank_child_starts_on_demand_beside_the_chat_child(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    (await models.acquire(make_entry(), Role.CHAT)).release()
    assert models.try_acquire(make_entry(), Role.RERANK) is None  # none started yet
    assert models.status(make_entry()).rerank_state is ModelState.UNLOADED
    (await models.acquire(make_entry(), Role.RERANK)).release()
    rerank = factory.made[1]
    assert rerank.name == "tiny.Q4_1#rerank" and factory.made[0].name == "tiny.Q4_1"
    assert "--reranking" in rerank.argv and "--embeddings" not in rerank.argv
    status = models.status(make_entry())
    assert (status.state, status.rerank_state) == (ModelState.READY, ModelState.READY)
    assert status.embedding_state is ModelState.UNLOADED
    lease = models.try_acquire(make_entry(), Role.RERANK)
    assert lease is not None and lease.backend.process is rerank
    lease.release()


async def test_a_dedicated_reranker_serves_reranks_on_its_one_child(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    reranker = make_entry(overrides=ModelSettings(file="tiny.Q4_1.gguf", reranker=True))
    lease = await models.acquire(reranker, Role.RERANK)
    assert len(factory.made) == 1 and "--reranking" in factory.made[0].argv
    assert factory.made[0].name == "tiny.Q4_1"
    lease.release()
    again = models.try_acquire(reranker, Role.RERANK)
    assert again is not None and again.backend.process is factory.made[0]
    again.release()
    status = models.status(reranker)
    assert (status.state, status.rerank_state) == (ModelState.READY, ModelState.READY)
    await models.unload(reranker)
    assert models.status(reranker).rerank_state is ModelState.UNLOADED


async def test_swap_moves_every_running_child_and_unload_stops_them_all(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    for role in (Role.CHAT, Role.EMBEDDING, Role.RERANK):
        (await models.acquire(make_entry(), role)).release()
    v2 = dataclasses.replace(make_entry(), path=Path("/models/v2/tiny.Q4_1.gguf"))
    await models.swap(make_entry(), v2, None)
    await settle()
    assert len(factory.made) == 6
    old, new = factory.made[:3], factory.made[3:]
    assert not any(p.alive for p in old)
    assert all(p.alive and "/models/v2/tiny.Q4_1.gguf" in p.argv for p in new)
    assert "--reranking" in new[2].argv and "--embeddings" in new[1].argv
    lease = await models.acquire(make_entry(), Role.RERANK)
    assert lease.backend.process is new[2]
    lease.release()
    assert await models.unload(make_entry())
    assert not any(p.alive for p in factory.made)
    status = models.status(make_entry())
    assert (status.embedding_state, status.rerank_state) == (ModelState.UNLOADED,) * 2


async def test_a_running_rerank_child_alone_is_not_started_again_by_a_swap(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    (await models.acquire(make_entry(), Role.CHAT)).release()
    v2 = dataclasses.replace(make_entry(), path=Path("/models/v2.gguf"))
    await models.swap(make_entry(), v2, None)
    assert [p.name for p in factory.made] == ["tiny.Q4_1", "tiny.Q4_1"]  # no rerank child


async def test_a_new_projector_swaps_the_model_and_counts_in_its_memory(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    (await models.acquire(make_entry())).release()
    vision = dataclasses.replace(
        make_entry(), mmproj=Path("/models/mmproj-tiny.gguf"), mmproj_size=GiB
    )
    report = await models.apply(models.settings, [vision])
    assert report["swapped"] == ["tiny.Q4_1"]
    assert "/models/mmproj-tiny.gguf" in factory.made[1].argv
    plain = models.estimate(make_entry(), LoadParams())
    assert models.estimate(vision, LoadParams()).total == plain.total + GiB


async def test_a_pinned_model_that_cannot_come_back_is_retried_with_backoff_then_left(
    client: httpx.AsyncClient,
) -> None:
    factory, clock = FakeFactory(), FakeClock()
    pinned = make_entry(overrides=ModelSettings(file="tiny.Q4_1.gguf", pinned=True))
    models = manager(client, factory, clock=clock, restart_max_attempts=3)
    models.start([pinned])
    await clock.run_until(lambda: models.status(pinned).state is ModelState.READY)
    factory.scripts = [Script(fail_with=["out of memory"]) for _ in range(3)]
    factory.made[0].die(-9)
    await clock.advance(0)
    assert len(factory.made) == 2  # the first attempt at once
    await clock.advance(0.4)
    assert len(factory.made) == 2  # backing off
    await clock.advance(0.1)
    assert len(factory.made) == 3  # 0.5 s after the first attempt
    await clock.advance(1.0)
    assert len(factory.made) == 4  # then 1 s
    await clock.advance(600.0)
    assert len(factory.made) == 4  # given up after restart_max_attempts
    status = models.status(pinned)
    assert (status.state, status.restart_count) == (ModelState.FAILED, 3)
    await models.close()


async def test_the_status_of_a_model_never_used_creates_nothing(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    pinned = make_entry(overrides=ModelSettings(file="tiny.Q4_1.gguf", pinned=True))
    status = models.status(pinned)
    assert models.models() == [] and factory.made == []
    assert (status.id, status.path, status.state) == (pinned.id, pinned.path, ModelState.UNLOADED)
    assert status.pinned and status.params == LoadParams() and status.pid is None
    assert status.memory_estimate == models.estimate(pinned, LoadParams()).total
    assert (status.embedding_state, status.rerank_state) == (ModelState.UNLOADED,) * 2


async def test_the_status_of_an_embedding_only_model_shows_that_child(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    (await models.acquire(make_entry(), Role.EMBEDDING)).release()
    status = models.status(make_entry())
    assert (status.state, status.embedding_state) == (ModelState.UNLOADED, ModelState.READY)
    assert status.pids == {"embedding": factory.made[0].pid}
    assert [m.role for m in models.models()] == [Role.EMBEDDING]


def ctx_size(process: FakeProcess) -> str | None:
    argv = process.argv
    return argv[argv.index("--ctx-size") + 1] if "--ctx-size" in argv else None


async def test_a_load_with_other_parameters_swaps_every_running_child_to_them(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    await models.load(make_entry(), LoadParams(n_ctx=512))
    (await models.acquire(make_entry(), Role.EMBEDDING)).release()
    await models.load(make_entry())  # no parameters: whatever runs stays
    await models.load(make_entry(), LoadParams(n_ctx=1024))
    await settle()
    shown = [(p.name, ctx_size(p), p.alive) for p in factory.made]
    assert shown == [
        ("tiny.Q4_1", "512", False),
        ("tiny.Q4_1#embedding", None, False),
        ("tiny.Q4_1", "1024", True),
        ("tiny.Q4_1#embedding", "1024", True),
    ]
    await models.load(make_entry(), LoadParams(n_ctx=1024))
    assert len(factory.made) == 4  # already on them


async def test_a_childs_memory_is_read_once_per_interval() -> None:
    clock, reads = FakeClock(), []

    def read_rss(pid: int) -> int:
        reads.append(pid)
        return 1000 * len(reads)

    context = cast(LifecycleContext, SimpleNamespace(clock=clock))
    status = StatusReader(context, cast(ModelTable, None), read_rss)  # only the clock is read
    assert [status.rss(7), status.rss(7), status.rss(8)] == [1000, 1000, 2000]
    await clock.advance(RSS_TTL_S)
    assert status.rss(7) == 3000 and reads == [7, 8, 7]
