"""RPC workers in the lifecycle, with fake children and a fake probe: workers are checked
before a load (a down one is the load's error, nothing evicted, no child started), placement
counts what they have free, and a worker is never asked to serve two children."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fakes import FakeFactory, FakeProcess, make_entry

from supervisor.children.child import ChildStarter
from supervisor.children.spec import LoadParams
from supervisor.config import ModelSettings, Settings
from supervisor.errors import InsufficientMemory, ModelLoadError
from supervisor.lifecycle.manager import ModelManager
from supervisor.lifecycle.state import ModelState
from supervisor.models.memory import GiB, MemoryProbe
from supervisor.models.registry import ModelEntry
from supervisor.placement.cores import CoreReader
from supervisor.rpc.address import WorkerAddress
from supervisor.rpc.probe import DeviceMemory, ProbeFailed, WorkerReport
from supervisor.rpc.workers import WorkerChecks

pytestmark = pytest.mark.anyio
WORKER = "10.0.0.2:50052"


class FakeWorkers:
    """What each worker answers a probe: its free bytes, or None for a refused connection."""

    def __init__(self, free: dict[str, int | None]) -> None:
        self.free = free
        self.probed: list[str] = []

    async def __call__(
        self, address: WorkerAddress, timeout: float, allow_public: bool
    ) -> WorkerReport:
        self.probed.append(str(address))
        free = self.free.get(str(address))
        if free is None:
            raise ProbeFailed("connection refused")
        return WorkerReport(str(address), (7, 0, 0), (DeviceMemory(0, free, free),), 0.5)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def manager(
    client: httpx.AsyncClient,
    factory: FakeFactory,
    workers: FakeWorkers,
    ram: int = 16 * GiB,
    **settings: object,
) -> ModelManager:
    memory = SimpleNamespace(total=24 * GiB, available=ram)
    probe = MemoryProbe(reserve_bytes=0, virtual_memory=lambda: memory, gpu_reader=lambda: [],
                        unified=False)  # fmt: skip
    config = Settings(llama_server=Path(sys.executable), place_children=False, **settings)  # type: ignore[arg-type]
    cores = CoreReader(Path("/nonexistent"), affinity=lambda: {0, 1}, pinnable=False)
    return ModelManager(
        config, ChildStarter(client, factory), probe, client, cores=cores,
        workers=WorkerChecks(workers),
    )  # fmt: skip


def entry(name: str, **own: object) -> ModelEntry:
    return make_entry(overrides=ModelSettings(file=name, alias=name, **own), stem=name)  # type: ignore[arg-type]


def flag(process: FakeProcess, name: str) -> str | None:
    argv = process.argv
    return argv[argv.index(name) + 1] if name in argv else None


async def test_a_down_worker_fails_the_load_by_name_before_anything_is_evicted(
    client: httpx.AsyncClient,
) -> None:
    factory, workers = FakeFactory(), FakeWorkers({WORKER: None})
    models = manager(client, factory, workers, max_loaded_models=1)
    (await models.acquire(entry("local"))).release()
    split = entry("split", rpc=[WORKER], n_gpu_layers=99)
    with pytest.raises(ModelLoadError) as caught:
        await models.acquire(split)
    assert caught.value.status_code == 503
    assert f"RPC worker {WORKER} is unavailable: connection refused" in caught.value.message
    assert [p.name for p in factory.made] == ["local"]  # no child tried, nothing evicted
    assert models.status(entry("local")).state is ModelState.READY
    assert models.status(split).state is ModelState.FAILED
    # Back again: the model loads, with its workers and layers as configured.
    workers.free[WORKER] = 8 * GiB
    (await models.acquire(split)).release()
    child = factory.made[-1]
    assert flag(child, "--rpc") == WORKER and flag(child, "--n-gpu-layers") == "99"


async def test_placement_counts_what_the_workers_have_free(client: httpx.AsyncClient) -> None:
    factory = FakeFactory()
    workers = FakeWorkers({WORKER: 0})
    models = manager(client, factory, workers, ram=0)
    need = models.estimate(entry("split"), LoadParams()).total
    split = entry("split", rpc=[WORKER])
    with pytest.raises(InsufficientMemory, match="RAM\\+RPC free"):
        await models.acquire(split)
    workers.free[WORKER] = need  # just enough on the worker, none here
    (await models.acquire(split)).release()
    assert models.status(split).state is ModelState.READY
    fit = models.placer.memory_fit(split, LoadParams())
    assert (fit.need, fit.free, fit.where) == (need, need, "RAM+RPC")
    # A model without workers is placed on local memory alone, as before.
    assert models.placer.memory_fit(entry("local"), LoadParams()).where == "RAM"


async def test_workers_count_for_nothing_when_no_layer_is_offloaded(
    client: httpx.AsyncClient,
) -> None:
    """n_gpu_layers = 0 keeps every layer here: the workers' memory does not make it fit."""
    factory, workers = FakeFactory(), FakeWorkers({WORKER: 64 * GiB})
    models = manager(client, factory, workers, ram=0)
    (await models.acquire(entry("split", rpc=[WORKER]))).release()  # the worker is probed
    local = entry("local", rpc=[WORKER], n_gpu_layers=0)
    assert models.placer.memory_fit(local, LoadParams()).where == "RAM"
    await models.unload(entry("split", rpc=[WORKER]))
    with pytest.raises(InsufficientMemory, match="RAM free"):
        await models.acquire(local)


async def test_a_worker_in_use_by_another_models_busy_child_is_not_probed(
    client: httpx.AsyncClient,
) -> None:
    factory, workers = FakeFactory(), FakeWorkers({WORKER: 8 * GiB})
    models = manager(client, factory, workers, rpc=[WORKER])
    lease = await models.acquire(entry("first"))  # a request in flight: not evictable
    probes = len(workers.probed)
    with pytest.raises(ModelLoadError, match=f"RPC worker {WORKER} is in use by model 'first'"):
        await models.acquire(entry("second"))
    assert len(workers.probed) == probes  # refused without a connection
    assert models.status(entry("first")).state is ModelState.READY
    # A model of its own, without workers, is not held back.
    (await models.acquire(entry("alone", rpc=[]))).release()
    lease.release()
    await models.unload(entry("first"))
    (await models.acquire(entry("second"))).release()


async def test_an_idle_model_holding_the_worker_is_evicted_for_the_next(
    client: httpx.AsyncClient,
) -> None:
    """With the global rpc every model uses the same worker: asking for another model swaps
    them, as memory eviction would, instead of refusing until someone unloads by hand."""
    factory, workers = FakeFactory(), FakeWorkers({WORKER: 8 * GiB})
    models = manager(client, factory, workers, rpc=[WORKER])
    (await models.acquire(entry("first"))).release()
    (await models.acquire(entry("second"))).release()
    first, second = factory.made
    assert not first.alive and second.alive
    assert models.status(entry("first")).state is ModelState.UNLOADED
    assert models.status(entry("second")).state is ModelState.READY


async def test_a_down_worker_evicts_nothing_even_when_another_is_held(
    client: httpx.AsyncClient,
) -> None:
    down = "10.0.0.3:50052"
    factory, workers = FakeFactory(), FakeWorkers({WORKER: 8 * GiB, down: None})
    models = manager(client, factory, workers)
    (await models.acquire(entry("first", rpc=[WORKER]))).release()
    with pytest.raises(ModelLoadError, match=f"RPC worker {down} is unavailable"):
        await models.acquire(entry("second", rpc=[WORKER, down]))
    assert models.status(entry("first", rpc=[WORKER])).state is ModelState.READY


async def test_a_split_model_swaps_stop_then_start(client: httpx.AsyncClient) -> None:
    """Never blue-green: the new child could not have the worker while the old one holds it."""
    factory, workers = FakeFactory(), FakeWorkers({WORKER: 8 * GiB})
    models = manager(client, factory, workers)
    split = entry("split", rpc=[WORKER])
    (await models.acquire(split)).release()
    report = await models.swap(split, split, LoadParams(n_ctx=1024))
    assert report.mode == "stop-start"
    old, new = factory.made
    assert not old.alive and new.alive
