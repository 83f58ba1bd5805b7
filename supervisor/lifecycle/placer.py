"""Where each child runs: its share of the cores and where its memory goes, decided in one
place from the live state of every child (see ``placement/plan.py`` for the policy).

A child's thread count is fixed when it starts, so a plan that changes a child's count takes
effect by replacing the child: drained first (its requests end on its own cores, new ones
wait), then started again. Never beside itself: with ggml's spinning barriers, an old child
still generating beside its successor slows both by up to ten times (measured: 128-token
streams took 26 s instead of 4). A plan that only moves a child re-pins its threads where it
runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace

from supervisor.children.argv import LaunchSpec, launch_spec, parallel_slots
from supervisor.children.child import Backend
from supervisor.children.spec import LoadParams
from supervisor.clock import Clock, SystemClock
from supervisor.config import ModelSettings, Settings
from supervisor.errors import SupervisorError
from supervisor.lifecycle.model import ManagedModel
from supervisor.lifecycle.state import ModelState
from supervisor.models.memory import MemoryBudget, MemoryEstimate, MemoryProbe, estimate_memory
from supervisor.models.registry import ModelEntry
from supervisor.placement.cores import HostCores, cpu_list
from supervisor.placement.plan import (
    ChildDemand,
    CpuShare,
    MemoryFit,
    Placement,
    fit_memory,
    offloaded_fraction,
    share_cores,
)
from supervisor.rpc.workers import WorkerChecks

LOG = logging.getLogger(__name__)
REPLACE_BACKOFF_S = 60.0  # after a failed re-placement, leave that child alone this long


class Placer:
    def __init__(
        self,
        settings: Settings,
        probe: MemoryProbe,
        cores: HostCores,
        clock: Clock | None = None,
        workers: WorkerChecks | None = None,
    ) -> None:
        self.settings = settings
        self.cores = cores
        self._probe = probe
        self._workers = workers or WorkerChecks()
        self._clock = clock or SystemClock()
        self._replace_failed: dict[str, float] = {}  # child name -> when re-placing it failed

    # -- memory ----------------------------------------------------------------------------
    def estimate(self, entry: ModelEntry, params: LoadParams) -> MemoryEstimate:
        return self._estimate(entry, launch_spec(self.settings, entry, entry.path, params=params))

    def _estimate(self, entry: ModelEntry, spec: LaunchSpec) -> MemoryEstimate:
        kv_bytes = 4.0 if spec.kv_cache_type == "f32" else 2.0
        estimate = estimate_memory(
            entry, spec.ctx_size, parallel_slots(self.settings, entry), kv_bytes
        )
        # A projector's weights are loaded whole beside the model's.
        return replace(estimate, weights=estimate.weights + entry.mmproj_size)

    def memory_fit(
        self, entry: ModelEntry, params: LoadParams, shares_weights: bool = False
    ) -> MemoryFit:
        """Where the model's memory would go now, and whether it fits there.
        ``shares_weights``: a child of this file runs already, and llama.cpp maps weights from
        the page cache, so a second one needs no second copy in RAM (unless locked in)."""
        budget = self._probe.budget()
        spec = launch_spec(self.settings, entry, entry.path, params=params)
        if spec.rpc and spec.n_gpu_layers != 0:  # 0: every layer stays here, none on them
            return self._fit_with_workers(entry, spec, budget)
        layers = spec.n_gpu_layers
        if layers is None and budget.gpus:
            layers = -1  # llama.cpp's default, "auto", offloads what fits
        fraction = offloaded_fraction(layers, entry.info.block_count)
        estimate = self._estimate(entry, spec)
        total = estimate.total
        if shares_weights and not params.use_mlock and fraction == 0:
            total -= estimate.weights
        return fit_memory(total, fraction, budget.ram_available, budget.gpus, budget.unified)

    def _fit_with_workers(
        self, entry: ModelEntry, spec: LaunchSpec, budget: MemoryBudget
    ) -> MemoryFit:
        """A model split over RPC workers fits when its estimate fits the local free memory
        (RAM, and GPUs not sharing it) and what the workers said they had free at their last
        probe, together. llama.cpp spreads the layers over every device in proportion to its
        free memory, so no GPU is chosen here (nor any --tensor-split)."""
        local = budget.ram_available
        if budget.gpus and not budget.unified:
            local += sum(gpu.free for gpu in budget.gpus)
        free = local + self._workers.free(list(spec.rpc))
        return MemoryFit(self._estimate(entry, spec).total, free, "RAM+RPC")

    # -- cores -----------------------------------------------------------------------------
    def asked_threads(self, entry: ModelEntry, params: LoadParams) -> int | None:
        """Threads set by hand, highest first: the load request, the model's entry, the
        global setting. They always win over the plan."""
        own = entry.overrides or ModelSettings(file=entry.file_name)
        for value in (params.threads, own.threads, self.settings.threads):
            if value is not None:
                return value
        return None

    @staticmethod
    def running(model: ManagedModel) -> bool:
        """Whether a child counts when the cores are shared out: starting or serving. An idle
        child keeps its share (its threads sleep; a request for it would otherwise find its
        cores taken), until it is unloaded (``idle_ttl_s``)."""
        return not model.removed and (
            model.state is ModelState.LOADING or model.serving() is not None
        )

    def shares(
        self, models: Iterable[ManagedModel], starting: ChildDemand | None = None
    ) -> dict[str, CpuShare]:
        """Each running child's share of the cores (``starting`` stands for its model's
        current child, if it has one)."""
        demands = {
            m.name: ChildDemand(m.name, self.asked_threads(m.entry, m.params))
            for m in models
            if self.running(m)
        }
        if starting is not None:
            demands[starting.name] = starting
        return share_cores(self.cores.cpus, list(demands.values()))

    def place(
        self,
        model: ManagedModel,
        entry: ModelEntry,
        params: LoadParams,
        models: Iterable[ManagedModel],
    ) -> Placement:
        """The placement for a child of ``model`` about to start for ``entry`` and ``params``
        beside ``models`` (the model's own current child, if any, is the one it replaces)."""
        memory = self.memory_fit(entry, params)
        asked = self.asked_threads(entry, params)
        if not self.settings.place_children:
            return Placement(threads=asked, memory=memory)
        share = self.shares(models, ChildDemand(model.name, asked))[model.name]
        cpus = share.cpus if self.cores.pinnable else ()
        return Placement(share.threads, cpus, share.shared, 0 if share.shared else None, memory)

    # -- following the plan ------------------------------------------------------------------
    async def make_way(
        self,
        models: Iterable[ManagedModel],
        starting: ManagedModel,
        entry: ModelEntry,
        params: LoadParams,
    ) -> None:
        """Bring the other running children in line with the plan that counts ``starting``
        (with ``entry`` and ``params``), so that it never starts on cores another child's
        threads still claim. A child in the middle of its own load, swap or unload is left to
        the placement loop."""
        if not self.settings.place_children:
            return
        models = list(models)
        asked = self.asked_threads(entry, params)
        shares = self.shares(models, ChildDemand(starting.name, asked))
        for other in models:
            if other is not starting:
                await self._follow(other, shares.get(other.name))

    async def follow_plan(self, models: list[ManagedModel]) -> bool:
        """Re-pin running children that only move; replace one whose thread count changes
        (True: call again, with the plan made afresh). Not while any child is in a load, swap,
        unload or replacement: a child being replaced drops out of the plan until it starts
        again, and the others must not grow into its cores meanwhile."""
        if not self.settings.place_children or any(m.transitioning for m in models):
            return False
        shares = self.shares(models)
        for model in models:
            if await self._follow(model, shares.get(model.name)):
                return True
        return False

    async def _follow(self, model: ManagedModel, share: CpuShare | None) -> bool:
        backend = model.serving()
        if share is None or backend is None or model.removed or model.transitioning:
            return False
        if share.threads != backend.placement.threads:
            return await self._replace(model, share)
        if share.cpus != backend.placement.cpus and self.cores.pinnable:
            self._move(model, backend, share)
        return False

    async def _replace(self, model: ManagedModel, share: CpuShare) -> bool:
        now = self._clock.monotonic()
        failed = self._replace_failed.get(model.name)
        if failed is not None and now - failed < REPLACE_BACKOFF_S:
            return False
        LOG.info("[%s] re-placing: %d threads on CPUs %s", model.name, share.threads,
                 cpu_list(share.cpus))  # fmt: skip
        try:
            return await model.replace_child()
        except SupervisorError as exc:
            self._replace_failed[model.name] = now
            LOG.warning("[%s] re-placing failed, its child serves on: %s", model.name, exc.message)
            return False

    @staticmethod
    def _move(model: ManagedModel, backend: Backend, share: CpuShare) -> None:
        if backend.process.pin(share.cpus):
            backend.placement = replace(backend.placement, cpus=share.cpus, shared=share.shared)
            LOG.info("[%s] moved to CPUs %s", model.name, cpu_list(share.cpus))
