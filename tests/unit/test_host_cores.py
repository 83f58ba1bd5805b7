"""Which cores the gateway may give its children: affinity, cgroup quota, topology, override,
read from a fake /proc and /sys."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.errors import ConfigError
from supervisor.placement.cores import CoreReader, cpu_list


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def smt_machine(root: Path, cores: int = 4) -> None:
    """``cores`` physical cores with two hyperthreads each: CPU n and n + cores share a core."""
    for cpu in range(2 * cores):
        topology = f"sys/devices/system/cpu/cpu{cpu}/topology"
        write(root, f"{topology}/physical_package_id", "0\n")
        write(root, f"{topology}/core_id", f"{cpu % cores}\n")


def reader(root: Path, allowed: set[int]) -> CoreReader:
    return CoreReader(root, affinity=lambda: allowed, pinnable=True)


def test_one_logical_cpu_per_physical_core(tmp_path: Path) -> None:
    smt_machine(tmp_path)
    cores = reader(tmp_path, set(range(8))).host_cores()
    assert cores.cpus == (0, 1, 2, 3) and cores.pinnable
    assert "affinity 0-7" in cores.source


def test_the_affinity_mask_limits_the_cores(tmp_path: Path) -> None:
    smt_machine(tmp_path)
    assert reader(tmp_path, {2, 3, 6}).host_cores().cpus == (2, 3)  # 6 is 2's sibling


def test_unreadable_topology_counts_every_allowed_cpu(tmp_path: Path) -> None:
    assert reader(tmp_path, {0, 1, 2}).host_cores().cpus == (0, 1, 2)


def test_a_cgroup_v2_quota_limits_the_count(tmp_path: Path) -> None:
    smt_machine(tmp_path)
    write(tmp_path, "proc/self/cgroup", "0::/system.slice/llama.service\n")
    write(tmp_path, "sys/fs/cgroup/system.slice/llama.service/cpu.max", "250000 100000\n")
    write(tmp_path, "sys/fs/cgroup/system.slice/cpu.max", "max 100000\n")
    cores = reader(tmp_path, set(range(8))).host_cores()
    assert cores.cpus == (0, 1)  # 2.5 CPUs: two threads' worth
    assert "cgroup quota 2.5" in cores.source


def test_a_parent_cgroups_quota_counts_too(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/a/b\n")
    write(tmp_path, "sys/fs/cgroup/a/cpu.max", "100000 100000\n")
    assert reader(tmp_path, {0, 1, 2, 3}).host_cores().cpus == (0,)


def test_a_container_sees_its_own_cgroup_at_the_mount_root(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/docker/abc\n")  # the host's path, not ours
    write(tmp_path, "sys/fs/cgroup/cpu.max", "150000 100000\n")
    assert reader(tmp_path, {0, 1, 2, 3}).host_cores().cpus == (0,)


def test_a_cgroup_v1_quota(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "4:cpu,cpuacct:/lxc\n3:memory:/lxc\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/lxc/cpu.cfs_quota_us", "300000\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/lxc/cpu.cfs_period_us", "100000\n")
    assert reader(tmp_path, set(range(8))).host_cores().cpus == (0, 1, 2)


def test_no_quota(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "4:cpu,cpuacct:/\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert reader(tmp_path, {0, 1}).cgroup_quota() is None


def test_cpu_cores_as_a_count_takes_the_first_usable_cores(tmp_path: Path) -> None:
    smt_machine(tmp_path)
    assert reader(tmp_path, set(range(8))).host_cores(3).cpus == (0, 1, 2)


def test_cpu_cores_as_a_list_is_taken_as_given_hyperthreads_included(tmp_path: Path) -> None:
    smt_machine(tmp_path)
    cores = reader(tmp_path, set(range(8))).host_cores([4, 0, 5])
    assert cores.cpus == (0, 4, 5) and cores.source == "cpu_cores"


def test_cpu_cores_outside_the_affinity_mask_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[7\]"):
        reader(tmp_path, {0, 1}).host_cores([1, 7])


def test_this_machine_has_at_least_one_core() -> None:
    assert CoreReader().host_cores().count >= 1


def test_cpu_list_reads_like_the_kernels() -> None:
    assert cpu_list((0, 1, 2, 3, 6, 8, 9)) == "0-3,6,8-9"
    assert cpu_list(()) == ""
