"""The placement plan: pure functions that share the cores out among children and choose
where a child's memory goes. ``lifecycle/placer.py`` feeds them the live state.

CPU. ggml's threads meet at a spinning barrier after every operation, so a child whose
threads outnumber the cores it actually gets (because another busy child runs there too)
slows down by far more than its share: two SmolLM2 children with both cores each served 42
streams where two with one core each served 235 (issue 17). So the busy children split the
cores into disjoint groups, one thread per core, and a child alone gets them all. Only when
there are more busy children than cores do some share a core; those poll for work not at all
(``--poll 0``), so that a waiting one leaves the core to the other.

Memory. Weights, KV cache and buffers go to RAM, or with layers offloaded to NVIDIA GPUs to
the one GPU with the most free memory that holds them, else to as few GPUs as hold them
together, split in proportion to what each has free (``--tensor-split``). Apple Silicon's GPU
shares RAM, so there offloading is counted as RAM.
"""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.models.memory import GpuInfo, MiB


@dataclass(frozen=True)
class ChildDemand:
    """One child the cores are shared among."""

    name: str  # the child's name (``model`` or ``model#role``): the plan's stable order
    threads: int | None = None  # asked for in the settings or the load request: this wins


@dataclass(frozen=True)
class CpuShare:
    threads: int  # --threads and --threads-batch
    cpus: tuple[int, ...]  # logical CPUs the child is pinned to
    shared: bool  # another busy child has threads on one of these CPUs: --poll 0


def share_cores(cores: tuple[int, ...], children: list[ChildDemand]) -> dict[str, CpuShare]:
    """Each busy child's share of ``cores``: disjoint groups, as even as they can be (the
    first children by name take the spare cores). A child that set its thread count gets a
    group that size, and the cores nobody else wants besides. With more threads wanted than
    cores, each child gets the threads it asked for or one, on cores dealt round-robin, and
    children whose cores overlap are ``shared``."""
    ordered = sorted(children, key=lambda child: child.name)
    if not ordered or not cores:
        return {}
    sizes = [min(child.threads or 0, len(cores)) for child in ordered]
    automatic = [i for i, child in enumerate(ordered) if not child.threads]
    spare = len(cores) - sum(sizes)
    if spare < len(automatic):
        return _round_robin(cores, ordered)
    takers = automatic or list(range(len(ordered)))
    for rank, i in enumerate(takers):
        sizes[i] += spare // len(takers) + (1 if rank < spare % len(takers) else 0)
    shares: dict[str, CpuShare] = {}
    start = 0
    for child, size in zip(ordered, sizes, strict=True):
        group = cores[start : start + size]
        start += size
        shares[child.name] = CpuShare(child.threads or size, group, shared=False)
    return shares


def _round_robin(cores: tuple[int, ...], ordered: list[ChildDemand]) -> dict[str, CpuShare]:
    groups: dict[str, tuple[int, ...]] = {}
    position = 0
    for child in ordered:
        size = min(child.threads or 1, len(cores))
        groups[child.name] = tuple(cores[(position + i) % len(cores)] for i in range(size))
        position += size
    used: dict[int, int] = {}
    for group in groups.values():
        for cpu in group:
            used[cpu] = used.get(cpu, 0) + 1
    return {
        child.name: CpuShare(
            child.threads or 1,
            groups[child.name],
            shared=any(used[cpu] > 1 for cpu in groups[child.name]),
        )
        for child in ordered
    }


@dataclass(frozen=True)
class MemoryFit:
    """Where a child's memory goes and whether it fits there."""

    need: int  # bytes it needs where it goes (VRAM: its offloaded part)
    free: int  # bytes free there
    where: str  # "RAM" or "VRAM"
    gpus: tuple[GpuInfo, ...] = ()  # the NVIDIA GPUs chosen (empty: none)
    tensor_split: tuple[int, ...] = ()  # with several GPUs: the MiB each has free

    @property
    def fits(self) -> bool:
        return self.need <= self.free


def offloaded_fraction(n_gpu_layers: int | None, block_count: int | None) -> float:
    """How much of a model goes to the GPU for ``n_gpu_layers`` (-1: all; llama.cpp counts
    the output layer as one more beyond the model's blocks)."""
    if not n_gpu_layers:
        return 0.0
    if n_gpu_layers < 0 or not block_count or n_gpu_layers > block_count:
        return 1.0
    return n_gpu_layers / (block_count + 1)


def fit_memory(
    total: int, fraction: float, ram_free: int, gpus: tuple[GpuInfo, ...], unified: bool
) -> MemoryFit:
    """Where ``total`` bytes go with ``fraction`` of them offloaded (see module docstring).
    Without a usable NVIDIA GPU, or on unified memory, everything is RAM."""
    if fraction <= 0 or unified or not gpus:
        return MemoryFit(total, ram_free, "RAM")
    vram = int(total * fraction)
    ram = total - vram
    if ram > ram_free:  # the part left on the CPU does not fit: say so in RAM's terms
        return MemoryFit(ram, ram_free, "RAM")
    chosen = choose_gpus(vram, gpus)
    if not chosen:
        return MemoryFit(vram, max(g.free for g in gpus), "VRAM")
    split = tuple(g.free // MiB for g in chosen) if len(chosen) > 1 else ()
    return MemoryFit(vram, sum(g.free for g in chosen), "VRAM", chosen, split)


def choose_gpus(need: int, gpus: tuple[GpuInfo, ...]) -> tuple[GpuInfo, ...]:
    """The one GPU with the most free memory if it holds ``need``; else the fewest GPUs, most
    free first, that hold it together; () if all of them together cannot."""
    by_free = sorted(gpus, key=lambda gpu: (-gpu.free, gpu.index))
    chosen: list[GpuInfo] = []
    for gpu in by_free:
        chosen.append(gpu)
        if sum(g.free for g in chosen) >= need:
            return tuple(sorted(chosen, key=lambda g: g.index))
    return ()


@dataclass(frozen=True)
class Placement:
    """Everything the gateway decided about where one child runs."""

    threads: int | None = None  # None: llama.cpp's default (placement off)
    cpus: tuple[int, ...] = ()  # pinned to these logical CPUs (empty: not pinned)
    shared: bool = False  # shares a core with another busy child
    poll: int | None = None  # --poll, fixed at start: 0 when it started on a shared core
    memory: MemoryFit | None = None

    @property
    def gpus(self) -> tuple[GpuInfo, ...]:
        return self.memory.gpus if self.memory else ()

    @property
    def cuda_devices(self) -> str | None:
        """CUDA_VISIBLE_DEVICES for the child: its GPUs by UUID (which, unlike an index,
        means the same GPU to NVML and to CUDA), or by NVML index where no UUID was read."""
        if not self.gpus:
            return None
        return ",".join(gpu.uuid or str(gpu.index) for gpu in self.gpus)
