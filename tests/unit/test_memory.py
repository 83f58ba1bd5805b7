from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from supervisor.models.gguf import GGUFInfo, read_gguf_info
from supervisor.models.memory import (
    GpuInfo,
    MemoryBudget,
    MemoryEstimate,
    MemoryProbe,
    estimate_memory,
    format_bytes,
    process_tree_rss,
    read_nvidia_gpus,
)
from supervisor.models.registry import ModelEntry

MakeGGUF = Callable[..., Path]
MiB = 1024**2
BASE = 64 * MiB  # the overhead's fixed part


def entry_for(path: Path) -> ModelEntry:
    return ModelEntry(
        id=path.stem,
        path=path,
        file_name=path.name,
        stem=path.stem,
        alias=None,
        size=path.stat().st_size,
        modified=0.0,
        info=read_gguf_info(path),
    )


@pytest.fixture
def gqa_entry(make_gguf: MakeGGUF) -> ModelEntry:
    # 8 query heads sharing 2 K/V heads: K and V are each 64 * 2 / 8 = 16 values wide.
    path = make_gguf("gqa.gguf", ctx=2048, embedding=64, blocks=2, head_count=8, head_count_kv=2)
    return entry_for(path)


def test_estimate_with_explicit_ctx(gqa_entry: ModelEntry) -> None:
    estimate = estimate_memory(gqa_entry, ctx_size=1024, parallel=1)

    assert estimate.weights == gqa_entry.path.stat().st_size
    assert estimate.kv_cache == 2 * 2 * 1024 * 16 * 2  # K+V * blocks * ctx * width * f16
    assert estimate.overhead == BASE + 4 * 1024 * 64 + 1 * MiB
    assert estimate.total == estimate.weights + estimate.kv_cache + estimate.overhead


def test_explicit_ctx_is_shared_by_slots(gqa_entry: ModelEntry) -> None:
    one = estimate_memory(gqa_entry, ctx_size=1024, parallel=1)
    four = estimate_memory(gqa_entry, ctx_size=1024, parallel=4)

    assert four.kv_cache == one.kv_cache == 131072
    assert four.overhead - one.overhead == 3 * MiB


def test_unset_ctx_gives_every_slot_the_model_context(gqa_entry: ModelEntry) -> None:
    # llama-server with no --ctx-size (or 0) allocates context_length per slot.
    for ctx_size in (None, 0):
        estimate = estimate_memory(gqa_entry, ctx_size=ctx_size, parallel=4)
        assert estimate.kv_cache == 2 * 2 * (2048 * 4) * 16 * 2
        assert estimate.overhead == BASE + 4 * (2048 * 4) * 64 + 4 * MiB


def test_f32_kv_doubles_the_cache(gqa_entry: ModelEntry) -> None:
    f16 = estimate_memory(gqa_entry, ctx_size=1024, parallel=1)
    f32 = estimate_memory(gqa_entry, ctx_size=1024, parallel=1, kv_bytes=4.0)

    assert f32.kv_cache == 2 * f16.kv_cache == 262144
    assert (f32.weights, f32.overhead) == (f16.weights, f16.overhead)


def test_missing_head_counts_assume_full_width(make_gguf: MakeGGUF) -> None:
    entry = entry_for(make_gguf("mha.gguf", ctx=2048, embedding=64, blocks=2))

    estimate = estimate_memory(entry, ctx_size=1024, parallel=1)

    assert estimate.kv_cache == 2 * 2 * 1024 * 64 * 2


def test_unknown_context_length_falls_back_to_4096(gqa_entry: ModelEntry) -> None:
    entry = replace(gqa_entry, info=replace(gqa_entry.info, context_length=None))

    estimate = estimate_memory(entry, ctx_size=None, parallel=1)

    assert estimate.kv_cache == 2 * 2 * 4096 * 16 * 2


def test_missing_shape_means_no_kv_cache(gqa_entry: ModelEntry) -> None:
    info = replace(gqa_entry.info, block_count=None, embedding_length=None)
    entry = replace(gqa_entry, info=info)

    estimate = estimate_memory(entry, ctx_size=1024, parallel=2)

    assert estimate == MemoryEstimate(weights=entry.size, kv_cache=0, overhead=BASE + 2 * MiB)


def test_smollm2_shaped_estimate(gqa_entry: ModelEntry) -> None:
    # The shape of SmolLM2-135M-Instruct.Q4_1: measured RSS with these settings is ~321 MB.
    info = GGUFInfo(
        architecture="llama",
        name="SmolLM2",
        context_length=8192,
        embedding_length=576,
        block_count=30,
        file_type="Q4_1",
        pooling_type=None,
        has_chat_template=True,
        parameter_count=134515008,
        head_count=9,
        head_count_kv=3,
    )
    entry = replace(gqa_entry, size=98_362_432, info=info)

    estimate = estimate_memory(entry, ctx_size=8192, parallel=4)

    assert estimate == MemoryEstimate(98_362_432, 188_743_680, 90_177_536)
    assert estimate.total == 377_283_648


def fake_memory(total: int, available: int) -> Callable[[], Any]:
    return lambda: SimpleNamespace(total=total, available=available)


GPU0 = GpuInfo(index=0, name="A", total=8000, used=3000, free=5000)
GPU1 = GpuInfo(index=1, name="B", total=4000, used=1000, free=3000)


def test_probe_subtracts_the_reserve() -> None:
    probe = MemoryProbe(reserve_bytes=100, virtual_memory=fake_memory(1000, 700), gpu_reader=list)

    assert probe.budget() == MemoryBudget(ram_total=1000, ram_available=600, gpus=())


def test_probe_floors_available_at_zero() -> None:
    probe = MemoryProbe(reserve_bytes=500, virtual_memory=fake_memory(1000, 300), gpu_reader=list)

    assert probe.budget().ram_available == 0


def test_probe_default_reserve_is_512_mib() -> None:
    probe = MemoryProbe(virtual_memory=fake_memory(4096 * MiB, 1024 * MiB), gpu_reader=list)

    assert probe.budget().ram_available == 512 * MiB


def test_vram_free_sums_gpus() -> None:
    probe = MemoryProbe(virtual_memory=fake_memory(1, 1), gpu_reader=lambda: [GPU0, GPU1])

    budget = probe.budget()

    assert budget.gpus == (GPU0, GPU1)
    assert budget.vram_free == 8000


def test_vram_free_is_none_without_gpus() -> None:
    assert MemoryBudget(ram_total=1, ram_available=1, gpus=()).vram_free is None


def test_probe_gpus_never_raise() -> None:
    def broken() -> list[GpuInfo]:
        raise RuntimeError("driver gone")

    assert MemoryProbe(virtual_memory=fake_memory(1, 1), gpu_reader=broken).gpus() == []


def test_probe_reads_real_ram() -> None:
    budget = MemoryProbe(reserve_bytes=0, gpu_reader=list).budget()

    assert budget.ram_total > 0
    assert 0 < budget.ram_available <= budget.ram_total


def test_read_nvidia_gpus_without_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail

    assert read_nvidia_gpus() == []


class FakeNVMLError(Exception):
    pass


def fake_pynvml(calls: list[str], fail_init: bool = False) -> SimpleNamespace:
    def init() -> None:
        calls.append("init")
        if fail_init:
            raise FakeNVMLError("no driver")

    memory = SimpleNamespace(total=80 * 1024**3, used=1024**3, free=79 * 1024**3)

    def utilization(handle: int) -> SimpleNamespace:
        if handle == 1:
            raise FakeNVMLError("not supported")
        return SimpleNamespace(gpu=37, memory=5)

    return SimpleNamespace(
        NVMLError=FakeNVMLError,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda index: index,
        nvmlDeviceGetName=lambda handle: b"H100" if handle == 0 else "H200",
        nvmlDeviceGetMemoryInfo=lambda handle: memory,
        nvmlDeviceGetUUID=lambda handle: b"GPU-aaaa" if handle == 0 else "GPU-bbbb",
        nvmlDeviceGetUtilizationRates=utilization,
    )


def test_read_nvidia_gpus_with_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(calls))

    gpus = read_nvidia_gpus()

    assert [(gpu.index, gpu.name, gpu.free, gpu.uuid, gpu.utilization) for gpu in gpus] == [
        (0, "H100", 79 * 1024**3, "GPU-aaaa", 37.0),  # older releases answer bytes
        (1, "H200", 79 * 1024**3, "GPU-bbbb", None),  # one that does not report it
    ]
    assert calls == ["init", "shutdown"]


def test_read_nvidia_gpus_when_init_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(calls, fail_init=True))

    assert read_nvidia_gpus() == []
    assert calls == ["init"]  # nothing to shut down


def test_process_tree_rss_of_this_process() -> None:
    rss = process_tree_rss(os.getpid())

    assert rss is not None
    assert rss > 0


def test_process_tree_rss_counts_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        alone = process_tree_rss(child.pid)
        tree = process_tree_rss(os.getpid())
        assert alone is not None
        assert tree is not None
        assert tree > alone > 0
    finally:
        child.kill()
        child.wait()


def test_process_tree_rss_of_a_dead_pid_is_none() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped, so the pid no longer exists

    assert process_tree_rss(child.pid) is None


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, "0B"),
        (12, "12B"),
        (1023, "1023B"),
        (1024, "1KB"),
        (512 * 1024, "512KB"),
        (MiB, "1.0MB"),
        (98_362_432, "93.8MB"),
        (1024**3, "1.0GB"),
        (int(4.5 * 1024**3), "4.5GB"),
        (-2048, "-2KB"),
    ],
)
def test_format_bytes(size: int, expected: str) -> None:
    assert format_bytes(size) == expected
