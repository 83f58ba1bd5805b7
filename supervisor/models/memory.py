"""How much memory a model will need, and how much the machine has free.

The estimate is deliberately simple and errs high: it is meant to decide whether a load fits
before starting a child, not to predict llama.cpp's allocator to the byte. Probing reads RAM
through psutil and, where NVIDIA GPUs and their driver exist, each GPU's VRAM through NVML
(``pynvml``, from the ``nvidia-ml-py`` package). Apple Silicon's GPU shares RAM: there the
budget says ``unified`` and offloaded layers count as RAM.
"""

from __future__ import annotations

import importlib
import logging
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs in the dev deps

from supervisor.models.gguf import GGUFInfo
from supervisor.models.registry import ModelEntry

logger = logging.getLogger(__name__)

MiB = 1024**2
GiB = 1024**3
# llama-server's own fallback when neither --ctx-size nor the model gives a context length.
DEFAULT_CTX = 4096
# Runtime, thread pools, tokenizer and a compute graph's fixed part: measured at about 35 MiB
# beyond weights and KV cache for SmolLM2-135M, so 64 MiB leaves headroom.
OVERHEAD_BASE = 64 * MiB
# Compute buffers grow with the context; one f32 per (position, embedding value) bounds what
# flash-attention builds reserve and stays simple without the vocabulary size.
OVERHEAD_PER_CTX_EMBD = 4
# Per slot: logits output (n_vocab f32, 0.2-1 MiB) and the server's own slot state.
OVERHEAD_PER_SLOT = 1 * MiB


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int  # bytes: the GGUF file size (weights are mmapped and end up resident whole)
    kv_cache: int  # bytes: 2 (K and V) * block_count * ctx_total * n_embd_kv * bytes_per_element
    overhead: int  # bytes: compute buffers and runtime (see estimate_memory)

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead


def context_total(entry: ModelEntry, ctx_size: int | None, parallel: int) -> int:
    """The KV cache's size in tokens, across all slots, as llama-server allocates it.

    An explicit --ctx-size N is the total, split between the slots (N/parallel each, or all N
    shared with --kv-unified). Unset or 0 differs: llama-server then gives *each* slot the
    model's trained context, so the total is context_length * parallel (measured: SmolLM2 with
    --parallel 4 and no --ctx-size allocates 32768 positions, 720 MiB of KV cache)."""
    if ctx_size is not None and ctx_size > 0:
        return ctx_size
    return (entry.info.context_length or DEFAULT_CTX) * max(1, parallel)


def estimate_memory(
    entry: ModelEntry, ctx_size: int | None, parallel: int, kv_bytes: float = 2.0
) -> MemoryEstimate:
    """Estimate what a llama-server child for ``entry`` will need, in bytes.

    ``kv_bytes`` is the size of one KV element: 2.0 for f16 (llama.cpp's default), 4.0 for f32
    (the load parameter f16_kv=false). ``parallel`` only matters for the overhead and when
    ``ctx_size`` is unset (see ``context_total``).

    overhead = 64 MiB + 4 bytes * ctx_total * embedding_length + 1 MiB * parallel
    """
    info = entry.info
    ctx_total = context_total(entry, ctx_size, parallel)
    embedding = info.embedding_length
    kv_cache = 0
    if info.block_count and embedding:
        elements = 2 * info.block_count * ctx_total * _kv_width(embedding, info)
        kv_cache = int(elements * kv_bytes)
    overhead = OVERHEAD_BASE + OVERHEAD_PER_SLOT * max(1, parallel)
    if embedding:
        overhead += OVERHEAD_PER_CTX_EMBD * ctx_total * embedding
    return MemoryEstimate(weights=entry.size, kv_cache=kv_cache, overhead=overhead)


def _kv_width(embedding: int, info: GGUFInfo) -> int:
    """Values per position per layer in K (and in V): grouped-query attention keeps only
    head_count_kv of head_count heads. Without both counts assume full width, which can only
    overestimate."""
    heads, kv_heads = info.head_count, info.head_count_kv
    if heads and kv_heads and 0 < kv_heads <= heads:
        return embedding * kv_heads // heads
    return embedding


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    total: int  # bytes
    used: int
    free: int
    uuid: str = ""  # "GPU-…": names the same GPU to NVML and to CUDA_VISIBLE_DEVICES
    utilization: float | None = None  # percent busy over NVML's last sample period


@dataclass(frozen=True)
class MemoryBudget:
    ram_total: int
    ram_available: int  # psutil's available minus the probe's reserve, floored at 0
    gpus: tuple[GpuInfo, ...]  # empty when there is no NVIDIA GPU (or no driver)
    unified: bool = False  # the GPU shares RAM (Apple Silicon): offloading counts as RAM

    @property
    def vram_free(self) -> int | None:
        if not self.gpus:
            return None
        return sum(gpu.free for gpu in self.gpus)


def apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


class MemoryProbe:
    """Reads free RAM (psutil) and, where NVIDIA GPUs exist, each one's free VRAM (NVML).
    Everything it touches is a constructor parameter so tests need no real machine state."""

    def __init__(
        self,
        reserve_bytes: int = 512 * MiB,
        virtual_memory: Callable[[], Any] = psutil.virtual_memory,
        gpu_reader: Callable[[], list[GpuInfo]] | None = None,
        unified: bool | None = None,
    ) -> None:
        self._reserve = max(0, reserve_bytes)
        self._virtual_memory = virtual_memory
        self._gpu_reader = gpu_reader if gpu_reader is not None else read_nvidia_gpus
        self._unified = apple_silicon() if unified is None else unified

    def budget(self) -> MemoryBudget:
        memory = self._virtual_memory()
        return MemoryBudget(
            ram_total=int(memory.total),
            ram_available=max(0, int(memory.available) - self._reserve),
            gpus=tuple(self.gpus()),
            unified=self._unified,
        )

    def gpus(self) -> list[GpuInfo]:
        """The GPUs and their memory; [] when there are none or they cannot be read."""
        try:
            return list(self._gpu_reader())
        except Exception:  # a budget without GPUs beats a failed load decision
            logger.warning("reading GPU memory failed; assuming no GPUs", exc_info=True)
            return []


def read_nvidia_gpus() -> list[GpuInfo]:
    """Every NVIDIA GPU's memory through NVML; [] without a driver or a GPU."""
    try:
        # A dependency (nvidia-ml-py), imported when first needed: it has no type stubs, and
        # the gateway's start-up need not pay for it on machines without a GPU.
        pynvml: Any = importlib.import_module("pynvml")
    except ImportError:  # an install that left it out: no GPUs then, as before
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        return [_read_gpu(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError:
        logger.warning("reading GPU memory through NVML failed", exc_info=True)
        return []
    finally:
        pynvml.nvmlShutdown()


def _read_gpu(pynvml: Any, index: int) -> GpuInfo:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    name = pynvml.nvmlDeviceGetName(handle)
    # Older nvidia-ml-py releases return bytes, newer ones str.
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    uuid = pynvml.nvmlDeviceGetUUID(handle)
    if isinstance(uuid, bytes):
        uuid = uuid.decode("ascii", "replace")
    try:
        utilization: float | None = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except pynvml.NVMLError:  # some GPUs (and vGPUs) do not report it
        utilization = None
    return GpuInfo(
        index=index,
        name=str(name),
        total=int(memory.total),
        used=int(memory.used),
        free=int(memory.free),
        uuid=str(uuid),
        utilization=utilization,
    )


def process_tree_rss(pid: int) -> int | None:
    """Resident memory of ``pid`` plus all its descendants, or None if it is gone (or not
    ours to read). A child that exits while being summed is skipped."""
    try:
        process = psutil.Process(pid)
        total = int(process.memory_info().rss)
        children = process.children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        try:
            total += int(child.memory_info().rss)
        except psutil.Error:
            continue
    return total


def format_bytes(n: int) -> str:
    """A short human size with binary units printed the familiar way: 1 GB = 1024**3 bytes,
    1 MB = 1024**2, 1 KB = 1024 (as llama.cpp's MiB logs, without the "i"). GB and MB get one
    decimal, KB and B none: "4.5GB", "93.8MB", "512KB", "12B"."""
    sign = "-" if n < 0 else ""
    size = abs(n)
    if size >= GiB:
        return f"{sign}{size / GiB:.1f}GB"
    if size >= MiB:
        return f"{sign}{size / MiB:.1f}MB"
    if size >= 1024:
        return f"{sign}{size / 1024:.0f}KB"
    return f"{sign}{size}B"
