"""Which CPU cores the gateway may give its children.

Three things limit them, and the gateway honours all three:

- its own affinity mask (``taskset``, systemd ``AllowedCPUs=``, a container's cpuset);
- its cgroup's CPU quota (``docker --cpus``, systemd ``CPUQuota=``): a quota of 2.5 CPUs is
  two cores' worth of threads, since a third thread would be throttled;
- the topology: one logical CPU per physical core by default, as llama.cpp's own default
  thread count does, because two threads on the hyperthreads of one core run no faster.

``cpu_cores`` in the settings overrides the result: a count (the first N usable cores) or a list
of CPU ids (taken as given, hyperthreads included, within the affinity mask).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from supervisor.errors import ConfigError

AffinityReader = Callable[[], set[int]]


@dataclass(frozen=True)
class HostCores:
    cpus: tuple[int, ...]  # logical CPU ids children may run on, one per core they may use
    pinnable: bool  # whether the system lets the gateway pin children (Linux: yes)
    source: str  # how they were found, for the log and the status route

    @property
    def count(self) -> int:
        return len(self.cpus)


def _system_affinity() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


class CoreReader:
    """Reads the affinity mask, the cgroup quota and the CPU topology; ``root`` and
    ``affinity`` are parameters so that tests describe any machine."""

    def __init__(
        self,
        root: Path = Path("/"),
        affinity: AffinityReader = _system_affinity,
        pinnable: bool | None = None,
    ) -> None:
        self._root = root
        self._affinity = affinity
        self._pinnable = hasattr(os, "sched_setaffinity") if pinnable is None else pinnable

    def host_cores(self, cpu_cores: int | list[int] | None = None) -> HostCores:
        allowed = sorted(self._affinity())
        if isinstance(cpu_cores, list):
            outside = sorted(set(cpu_cores) - set(allowed))
            if outside:
                raise ConfigError(
                    f"cpu_cores names CPUs {outside} outside the gateway's affinity {allowed}"
                )
            return HostCores(tuple(sorted(set(cpu_cores))), self._pinnable, "cpu_cores")
        cores = self.physical(allowed)
        source = f"affinity {cpu_list(allowed)}, {len(cores)} physical"
        quota = self.cgroup_quota()
        if quota is not None and quota < len(cores):
            cores = cores[: max(1, math.floor(quota))]
            source += f", cgroup quota {quota:g} CPUs"
        if cpu_cores is not None:
            cores = cores[: max(1, cpu_cores)]
            source += f", cpu_cores {cpu_cores}"
        return HostCores(tuple(cores), self._pinnable, source)

    def physical(self, cpus: list[int]) -> list[int]:
        """The first logical CPU of each physical core among ``cpus``; all of them where the
        topology cannot be read (macOS, some containers)."""
        seen: set[tuple[str, str]] = set()
        chosen: list[int] = []
        for cpu in cpus:
            topology = self._root / f"sys/devices/system/cpu/cpu{cpu}/topology"
            try:
                package = (topology / "physical_package_id").read_text().strip()
                core = (topology / "core_id").read_text().strip()
            except OSError:
                return cpus
            if (package, core) not in seen:
                seen.add((package, core))
                chosen.append(cpu)
        return chosen

    def cgroup_quota(self) -> float | None:
        """The CPU quota of the gateway's cgroup (and its parents, the tightest), in CPUs;
        None when unlimited or unreadable. cgroup v2 (``cpu.max``) and v1 (``cfs_quota_us``)."""
        try:
            lines = (self._root / "proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
        quotas: list[float] = []
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                quotas += self._walk(self._root / "sys/fs/cgroup", path, _v2_quota)
            elif "cpu" in controllers.split(","):
                for mount in (controllers, "cpu", "cpu,cpuacct"):
                    base = self._root / "sys/fs/cgroup" / mount
                    if base.is_dir():
                        quotas += self._walk(base, path, _v1_quota)
                        break
        return min(quotas, default=None)

    @staticmethod
    def _walk(base: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
        """The quota of the cgroup at ``path`` under ``base`` and of each parent; inside a
        container the path may not exist under its own mount, whose root is then its own."""
        parts = [part for part in path.strip("/").split("/") if part]
        found: list[float] = []
        for depth in range(len(parts), -1, -1):
            quota = read(base.joinpath(*parts[:depth]))
            if quota is not None:
                found.append(quota)
        return found


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def cpu_list(cpus: list[int] | tuple[int, ...]) -> str:
    """CPU ids as the kernel writes lists: "0-3,6"."""
    spans: list[str] = []
    for cpu in sorted(cpus):
        if spans and cpu == int(spans[-1].split("-")[-1]) + 1:
            spans[-1] = f"{spans[-1].split('-')[0]}-{cpu}"
        else:
            spans.append(str(cpu))
    return ",".join(spans)
