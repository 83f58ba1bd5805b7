"""The placement plan as pure functions: how cores are shared out, where memory goes, and
what a child's command line and environment become."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import make_entry

from supervisor.children.argv import child_command, launch_spec
from supervisor.children.spec import Role
from supervisor.config import Settings
from supervisor.models.memory import GiB, GpuInfo, MiB
from supervisor.placement.plan import (
    ChildDemand,
    CpuShare,
    MemoryFit,
    Placement,
    choose_gpus,
    fit_memory,
    offloaded_fraction,
    share_cores,
)

FOUR = (0, 1, 2, 3)


def test_a_child_alone_takes_every_core() -> None:
    assert share_cores(FOUR, [ChildDemand("a")]) == {"a": CpuShare(4, FOUR, shared=False)}


def test_busy_children_split_the_cores_into_disjoint_groups() -> None:
    shares = share_cores((0, 1), [ChildDemand("b"), ChildDemand("a")])
    assert shares == {"a": CpuShare(1, (0,), False), "b": CpuShare(1, (1,), False)}


def test_spare_cores_go_to_the_first_children_by_name() -> None:
    shares = share_cores(FOUR, [ChildDemand("c"), ChildDemand("a"), ChildDemand("b")])
    assert [(n, s.threads, s.cpus) for n, s in sorted(shares.items())] == [
        ("a", 2, (0, 1)),
        ("b", 1, (2,)),
        ("c", 1, (3,)),
    ]


def test_threads_set_by_hand_size_their_group_and_the_rest_is_split() -> None:
    shares = share_cores(FOUR, [ChildDemand("a", threads=3), ChildDemand("b")])
    assert shares["a"] == CpuShare(3, (0, 1, 2), False)
    assert shares["b"] == CpuShare(1, (3,), False)


def test_cores_nobody_else_wants_stay_open_to_children_with_threads_set_by_hand() -> None:
    """A lone child with ``threads = 1`` is not squeezed onto one CPU: it may move among all."""
    assert share_cores((0, 1), [ChildDemand("a", threads=1)])["a"] == CpuShare(1, (0, 1), False)
    shares = share_cores(FOUR, [ChildDemand("a", threads=1), ChildDemand("b", threads=1)])
    assert shares["a"].cpus == (0, 1) and shares["b"].cpus == (2, 3)


def test_more_children_than_cores_share_some_cores_round_robin() -> None:
    shares = share_cores((0, 1), [ChildDemand("a"), ChildDemand("b"), ChildDemand("c")])
    assert shares == {
        "a": CpuShare(1, (0,), shared=True),
        "b": CpuShare(1, (1,), shared=False),
        "c": CpuShare(1, (0,), shared=True),
    }


def test_threads_set_by_hand_beyond_the_cores_overlap() -> None:
    shares = share_cores((0, 1), [ChildDemand("a", threads=2), ChildDemand("b", threads=2)])
    assert shares["a"] == CpuShare(2, (0, 1), True) and shares["b"] == CpuShare(2, (0, 1), True)


def test_nothing_to_share() -> None:
    assert share_cores(FOUR, []) == {}
    assert share_cores((), [ChildDemand("a")]) == {}


@pytest.mark.parametrize(
    ("layers", "blocks", "fraction"),
    [(None, 30, 0.0), (0, 30, 0.0), (-1, 30, 1.0), (99, 30, 1.0), (15, 29, 0.5), (10, None, 1.0)],
)
def test_offloaded_fraction(layers: int | None, blocks: int | None, fraction: float) -> None:
    assert offloaded_fraction(layers, blocks) == fraction


def gpu(index: int, free_gib: float) -> GpuInfo:
    free = int(free_gib * GiB)
    return GpuInfo(index, f"GPU {index}", 80 * GiB, 80 * GiB - free, free, f"GPU-{index}")


def test_the_gpu_with_the_most_free_memory_that_holds_the_model() -> None:
    gpus = (gpu(0, 10), gpu(1, 30), gpu(2, 20))
    assert [g.index for g in choose_gpus(15 * GiB, gpus)] == [1]


def test_a_model_no_gpu_holds_spans_the_fewest_gpus_most_free_first() -> None:
    gpus = (gpu(0, 10), gpu(1, 30), gpu(2, 20))
    assert [g.index for g in choose_gpus(45 * GiB, gpus)] == [1, 2]
    assert choose_gpus(61 * GiB, gpus) == ()


def test_fit_memory_splits_a_spanning_model_by_free_memory() -> None:
    fit = fit_memory(45 * GiB, 1.0, 16 * GiB, (gpu(0, 10), gpu(1, 30), gpu(2, 20)), False)
    assert fit.fits and fit.where == "VRAM"
    assert [g.index for g in fit.gpus] == [1, 2]
    assert fit.tensor_split == (30 * 1024, 20 * 1024)  # MiB free, in device order


def test_fit_memory_on_one_gpu_needs_no_split() -> None:
    fit = fit_memory(5 * GiB, 1.0, 16 * GiB, (gpu(0, 10), gpu(1, 8)), False)
    assert [g.index for g in fit.gpus] == [0] and fit.tensor_split == ()


def test_fit_memory_too_big_for_every_gpu_together() -> None:
    fit = fit_memory(50 * GiB, 1.0, 16 * GiB, (gpu(0, 10), gpu(1, 8)), False)
    assert not fit.fits and fit.where == "VRAM" and fit.free == 10 * GiB


def test_fit_memory_partial_offload_needs_room_in_both() -> None:
    fit = fit_memory(10 * GiB, 0.5, 4 * GiB, (gpu(0, 10),), False)
    assert fit == MemoryFit(5 * GiB, 4 * GiB, "RAM")  # the half left on the CPU does not fit
    fit = fit_memory(10 * GiB, 0.5, 6 * GiB, (gpu(0, 10),), False)
    assert fit.fits and fit.need == 5 * GiB and fit.where == "VRAM"


def test_fit_memory_without_gpus_or_on_unified_memory_is_ram() -> None:
    assert fit_memory(5 * GiB, 1.0, 8 * GiB, (), False) == MemoryFit(5 * GiB, 8 * GiB, "RAM")
    assert fit_memory(5 * GiB, 1.0, 8 * GiB, (gpu(0, 80),), True).where == "RAM"


def settings() -> Settings:
    return Settings(llama_server=Path("/bin/true"))


def test_a_placement_becomes_flags_and_environment() -> None:
    memory = MemoryFit(9 * GiB, 12 * GiB, "VRAM", (gpu(1, 8), gpu(3, 4)), (8192, 4096))
    placement = Placement(threads=2, cpus=(4, 5), shared=True, poll=0, memory=memory)
    spec = launch_spec(settings(), make_entry(), Path("/bin/llama-server"), Role.CHAT, 9000,
                       placement=placement)  # fmt: skip
    command = child_command(spec, placement)
    argv = command.argv
    assert argv[argv.index("--threads") + 1] == "2"
    assert argv[argv.index("--threads-batch") + 1] == "2"
    assert argv[argv.index("--poll") + 1] == "0"
    assert argv[argv.index("--tensor-split") + 1] == "8192,4096"
    assert command.cpus == (4, 5)
    assert command.env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "GPU-1,GPU-3"}


def test_no_placement_leaves_llama_cpp_its_defaults() -> None:
    spec = launch_spec(settings(), make_entry(), Path("/bin/llama-server"))
    command = child_command(spec, None)
    for flag in ("--threads", "--threads-batch", "--poll", "--tensor-split"):
        assert flag not in command.argv
    assert command.env == {} and command.cpus == ()


def test_a_gpu_without_a_uuid_is_named_by_its_pci_ordered_index() -> None:
    memory = MemoryFit(MiB, GiB, "VRAM", (GpuInfo(2, "old", GiB, 0, GiB),))
    assert Placement(memory=memory).cuda_devices == "2"
