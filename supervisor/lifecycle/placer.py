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

from collections.abc import Iterable
from dataclasses import replace

from ..backends.argv import launch_spec, parallel_slots
from ..config import ModelSettings, Settings
from ..memory import MemoryEstimate, MemoryProbe, estimate_memory
from ..placement.cores import HostCores
from ..placement.plan import (
    ChildDemand,
    CpuShare,
    MemoryFit,
    Placement,
    fit_memory,
    offloaded_fraction,
    share_cores,
)
from ..registry import ModelEntry
from .model import ManagedModel
from .state import LoadParams, ModelState


class Placer:
    def __init__(
        self,
        settings: Settings,
        probe: MemoryProbe,
        cores: HostCores,
    ) -> None:
        self.settings = settings
        self.cores = cores
        self._probe = probe

    # -- memory ----------------------------------------------------------------------------
    def estimate(self, entry: ModelEntry, params: LoadParams) -> MemoryEstimate:
        spec = launch_spec(self.settings, entry, entry.path, params=params)
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
        layers = spec.n_gpu_layers
        if layers is None and budget.gpus:
            layers = -1  # llama.cpp's default, "auto", offloads what fits
        fraction = offloaded_fraction(layers, entry.info.block_count)
        estimate = self.estimate(entry, params)
        total = estimate.total
        if shares_weights and not params.use_mlock and fraction == 0:
            total -= estimate.weights
        return fit_memory(total, fraction, budget.ram_available, budget.gpus, budget.unified)

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
