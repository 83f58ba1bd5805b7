"""Placement with fake children: what each child is started with, how the plan follows the
running children (drain-first replacement, live moves), and GPU choice."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import httpx
import pytest
from fake_clock import FakeClock
from fakes import FakeFactory, FakeProcess, Script, make_entry

from supervisor.children.child import ChildStarter
from supervisor.children.spec import LoadParams, Role
from supervisor.clock import Clock
from supervisor.config import ModelSettings, Settings
from supervisor.errors import ModelLoadError
from supervisor.lifecycle.manager import ModelManager
from supervisor.lifecycle.model import ManagedModel
from supervisor.lifecycle.placer import REPLACE_BACKOFF_S
from supervisor.lifecycle.state import ModelState
from supervisor.lifecycle.watch import PLACEMENT_CHECK_S
from supervisor.models.memory import GiB, GpuInfo, MemoryProbe
from supervisor.models.registry import ModelEntry
from supervisor.placement.cores import CoreReader
from supervisor.placement.plan import Placement

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def probe(available: int = 16 * GiB, gpus: list[GpuInfo] | None = None) -> MemoryProbe:
    memory = SimpleNamespace(total=24 * GiB, available=available)
    return MemoryProbe(
        reserve_bytes=0, virtual_memory=lambda: memory, gpu_reader=lambda: gpus or [],
        unified=False,
    )  # fmt: skip


def manager(
    client: httpx.AsyncClient,
    factory: FakeFactory,
    cpus: int = 4,
    memory: MemoryProbe | None = None,
    clock: Clock | None = None,
    **overrides: object,
) -> ModelManager:
    defaults: dict[str, object] = {
        "parallel": 2, "stop_grace_s": 1.0, "drain_timeout_s": 5.0,
    }  # fmt: skip
    settings = Settings(llama_server=Path(sys.executable), **(defaults | overrides))  # type: ignore[arg-type]
    cores = CoreReader(Path("/nonexistent"), affinity=lambda: set(range(cpus)), pinnable=True)
    starter = ChildStarter(client, factory)
    return ModelManager(settings, starter, memory or probe(), client, cores=cores, clock=clock)


def entry(name: str, **own: object) -> ModelEntry:
    return make_entry(overrides=ModelSettings(file=name, alias=name, **own), stem=name)  # type: ignore[arg-type]


def flag(process: FakeProcess, name: str) -> str | None:
    argv = process.argv
    return argv[argv.index(name) + 1] if name in argv else None


def placed(process: FakeProcess) -> tuple[str | None, tuple[int, ...]]:
    return flag(process, "--threads"), process.command.cpus


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_model_alone_gets_every_core(client: httpx.AsyncClient) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    (await models.acquire(entry("a"))).release()
    assert placed(factory.made[0]) == ("4", (0, 1, 2, 3))
    assert flag(factory.made[0], "--threads-batch") == "4"
    assert flag(factory.made[0], "--poll") is None  # its cores are its own: llama.cpp's default


async def test_a_second_model_starts_once_the_first_has_made_way(
    client: httpx.AsyncClient,
) -> None:
    """The first model's child is drained (its request ends on its own cores), stopped and
    started again with half the cores before the second starts: no child ever runs beside
    another on cores their threads both claim."""
    factory = FakeFactory()
    models = manager(client, factory)
    a_lease = await models.acquire(entry("a"))
    b_acquire = asyncio.create_task(models.acquire(entry("b")))
    await settle()
    assert models.status(entry("a")).state is ModelState.DRAINING
    assert not b_acquire.done() and len(factory.made) == 1
    a_waits = asyncio.create_task(models.acquire(entry("a")))  # new requests wait meanwhile
    await settle()
    assert not a_waits.done()
    a_lease.release()  # the request in flight ends whole
    b_lease = await asyncio.wait_for(b_acquire, 1)
    old_a, new_a, b = factory.made
    assert not old_a.alive
    assert placed(new_a) == ("2", (0, 1)) and placed(b) == ("2", (2, 3))
    assert (await asyncio.wait_for(a_waits, 1)).backend.process is new_a
    assert models.status(entry("a")).placements["chat"].threads == 2
    await models.follow_plan()
    assert len(factory.made) == 3  # settled: nothing more to do
    b_lease.release()


async def test_the_last_model_gets_every_core_back(client: httpx.AsyncClient) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    (await models.acquire(entry("a"))).release()
    (await models.acquire(entry("b"))).release()
    assert placed(factory.made[-1]) == ("2", (2, 3))
    await models.unload(entry("b"))
    await models.follow_plan()
    assert placed(factory.made[-1]) == ("4", (0, 1, 2, 3))
    assert factory.made[-1].name == "a"


async def test_the_placement_loop_follows_the_plan_on_its_tick(
    client: httpx.AsyncClient,
) -> None:
    factory, clock = FakeFactory(), FakeClock()
    models = manager(client, factory, clock=clock)
    (await models.acquire(entry("a"))).release()
    (await models.acquire(entry("b"))).release()
    models.start([])
    await clock.advance(0)  # the loop's first pass follows b's start: nothing to change
    await models.unload(entry("b"))
    made = len(factory.made)
    await clock.advance(PLACEMENT_CHECK_S / 2)
    assert len(factory.made) == made  # not before the tick
    await clock.advance(PLACEMENT_CHECK_S / 2)
    assert placed(factory.made[-1]) == ("4", (0, 1, 2, 3)) and factory.made[-1].name == "a"
    await models.close()


async def test_nothing_is_re_placed_while_a_child_is_in_a_transition(
    client: httpx.AsyncClient,
) -> None:
    """A draining child has dropped out of the plan; the others must not grow into its cores
    until it has settled (here: unloaded)."""
    factory = FakeFactory()
    models = manager(client, factory)
    (await models.acquire(entry("a"))).release()
    (await models.acquire(entry("b"))).release()
    a_lease = await models.acquire(entry("a"))
    made = len(factory.made)
    unloading = asyncio.create_task(models.unload(entry("a")))
    await settle()
    assert models.status(entry("a")).state is ModelState.DRAINING
    await models.follow_plan()
    assert len(factory.made) == made  # b keeps its half meanwhile
    a_lease.release()
    await asyncio.wait_for(unloading, 1)
    await models.follow_plan()
    assert placed(factory.made[-1]) == ("4", (0, 1, 2, 3)) and factory.made[-1].name == "b"


async def test_children_started_together_settle_on_one_plan(client: httpx.AsyncClient) -> None:
    """b's load begins while a's child is still starting on a plan without b: a's child,
    which has served nothing yet, starts again on the new plan."""
    factory = FakeFactory([Script(ready_delay=0.05)])
    models = manager(client, factory)
    a_acquire = asyncio.create_task(models.acquire(entry("a")))
    await settle()
    b_lease = await models.acquire(entry("b"))
    a_lease = await asyncio.wait_for(a_acquire, 1)
    first_a, b, second_a = factory.made
    assert placed(first_a) == ("4", (0, 1, 2, 3)) and not first_a.alive
    assert placed(b) == ("2", (2, 3)) and placed(second_a) == ("2", (0, 1))
    assert a_lease.backend.process is second_a
    a_lease.release()
    b_lease.release()


async def test_chat_and_embedding_children_of_one_model_share_the_cores(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    (await models.acquire(entry("a"))).release()
    (await models.acquire(entry("a"), Role.EMBEDDING)).release()
    chat, embedding = factory.made[1:]
    assert embedding.name == "a#embedding"
    assert placed(chat) == ("2", (0, 1))  # "a" sorts before "a#embedding"
    assert placed(embedding) == ("2", (2, 3))


async def test_threads_set_by_hand_win_and_a_move_needs_no_restart(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    a_lease = await models.acquire(entry("a", threads=1))
    assert placed(factory.made[0]) == ("1", (0, 1, 2, 3))
    b_lease = await models.acquire(entry("b"))
    assert placed(factory.made[1]) == ("3", (1, 2, 3))
    assert len(factory.made) == 2  # same thread count: no new child for a...
    assert factory.made[0].pinned == [(0,)]  # ...moved where it runs
    assert models.status(entry("a")).placements["chat"].cpus == (0,)
    a_lease.release()
    b_lease.release()


async def test_a_load_request_threads_win_too(client: httpx.AsyncClient) -> None:
    factory = FakeFactory()
    models = manager(client, factory, threads=3)
    await models.model(entry("a")).load(LoadParams(threads=2))
    assert placed(factory.made[0])[0] == "2"
    (await models.acquire(entry("b"))).release()
    assert placed(factory.made[1])[0] == "3"  # the global setting


async def test_a_replacement_that_fails_brings_the_old_child_back(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory)
    (await models.acquire(entry("a"))).release()
    factory.scripts = [Script(fail_with=["out of memory"])]  # a's replacement fails
    (await models.acquire(entry("b"))).release()
    _, failed_a, restored_a, b = factory.made
    assert placed(failed_a) == ("2", (0, 1)) and not failed_a.alive
    assert restored_a.alive and models.status(entry("a")).state is ModelState.READY
    assert b.alive and b.name == "b"
    await models.follow_plan()  # the backoff: not tried again at once
    assert len(factory.made) == 4


class Unmovable:
    """A running child off the plan whose every replacement fails."""

    name, removed, transitioning, state = "a", False, False, ModelState.READY

    def __init__(self) -> None:
        self.entry, self.params, self.tries = entry("a"), LoadParams(), 0
        self.backend = SimpleNamespace(placement=Placement(threads=1, cpus=(0,)))

    def serving(self) -> object:
        return self.backend

    async def replace_child(self) -> bool:
        self.tries += 1
        raise ModelLoadError("a", "out of memory")


async def test_a_failed_replacement_is_tried_again_only_after_a_backoff(
    client: httpx.AsyncClient,
) -> None:
    clock = FakeClock()
    placer = manager(client, FakeFactory(), clock=clock).placer
    child = Unmovable()
    models = [cast(ManagedModel, child)]
    assert not await placer.follow_plan(models)  # alone it should have 4 threads: replaced
    assert child.tries == 1
    await clock.advance(REPLACE_BACKOFF_S - 1)
    await placer.follow_plan(models)
    assert child.tries == 1  # left alone meanwhile
    await clock.advance(1)
    await placer.follow_plan(models)
    assert child.tries == 2


async def test_placement_off_leaves_children_their_defaults(client: httpx.AsyncClient) -> None:
    factory = FakeFactory()
    models = manager(client, factory, place_children=False)
    a_lease = await models.acquire(entry("a"))
    (await models.acquire(entry("b"))).release()
    await models.follow_plan()
    assert [placed(p) for p in factory.made] == [(None, ()), (None, ())]
    a_lease.release()


def gpu(index: int, free_gib: int) -> GpuInfo:
    return GpuInfo(index, "H100", 80 * GiB, (80 - free_gib) * GiB, free_gib * GiB, f"GPU-{index}")


async def test_an_offloaded_child_gets_the_gpu_with_the_most_free_memory(
    client: httpx.AsyncClient,
) -> None:
    factory = FakeFactory()
    models = manager(client, factory, memory=probe(gpus=[gpu(0, 2), gpu(1, 40)]))
    (await models.acquire(entry("a"))).release()  # n_gpu_layers unset: llama.cpp's "auto"
    command = factory.made[0].command
    assert command.env["CUDA_VISIBLE_DEVICES"] == "GPU-1"
    assert "--tensor-split" not in command.argv
    status = models.status(entry("a")).placements["chat"]
    assert status.memory is not None and status.memory.where == "VRAM"
    assert [g.index for g in status.gpus] == [1]


async def test_a_model_too_big_for_one_gpu_is_split_by_free_memory(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    factory = FakeFactory()
    models = manager(client, factory, memory=probe(gpus=[gpu(0, 1), gpu(1, 1), gpu(2, 2)]))
    big = entry("big", n_gpu_layers=-1)
    big = big.__class__(**{**big.__dict__, "size": int(2.5 * GiB)})
    (await models.acquire(big)).release()
    command = factory.made[0].command
    assert command.env["CUDA_VISIBLE_DEVICES"] == "GPU-0,GPU-2"  # most free first, then the next
    assert flag(factory.made[0], "--tensor-split") == "1024,2048"


async def test_a_cpu_only_model_on_a_gpu_host_gets_no_gpu(client: httpx.AsyncClient) -> None:
    factory = FakeFactory()
    models = manager(client, factory, memory=probe(gpus=[gpu(0, 40)]))
    (await models.acquire(entry("a", n_gpu_layers=0))).release()
    assert factory.made[0].command.env == {}
