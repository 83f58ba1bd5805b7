"""Host figures for the /api/v2 surface (/api/v2/metrics, /api/v2/health), /v1/stats and the
metrics history (``history.py``: ``HostReader``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil  # type: ignore[import-untyped]

from supervisor.clock import iso
from supervisor.models.memory import GpuInfo, MemoryProbe
from supervisor.placement.cores import HostCores

MiB = 1024 * 1024


def format_uptime(seconds: float) -> str:
    """The /api/v2 surface's uptime form: "2d 3h 45m" (days and hours only when non-zero)."""
    minutes = int(seconds // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    parts.append(f"{minutes}m")
    return " ".join(parts)


def system_metrics(probe: MemoryProbe, cores: HostCores) -> dict[str, Any]:
    """The /api/v2/metrics body, plus the ``cores`` the gateway shares out among its
    children. CPU utilisation is since the previous call (psutil's non-blocking form), so the
    first call after start-up may read 0."""
    frequency = psutil.cpu_freq()
    memory = psutil.virtual_memory()
    gpus = probe.gpus()
    gpu: dict[str, Any] = {"available": bool(gpus)}
    if gpus:
        total = sum(g.total for g in gpus)
        used = sum(g.used for g in gpus)
        gpu["name"] = gpus[0].name if len(gpus) == 1 else ", ".join(g.name for g in gpus)
        gpu["memory"] = {
            "total_mb": total // MiB,
            "used_mb": used // MiB,
            "percent": round(100 * used / total, 1) if total else 0.0,
        }
    return {
        "cpu": {
            "utilization": psutil.cpu_percent(interval=None),
            "cores": {
                "physical": psutil.cpu_count(logical=False),
                "logical": psutil.cpu_count(logical=True),
            },
            "frequency": {
                "current": round(frequency.current) if frequency else None,
                "min": round(frequency.min) if frequency else None,
                "max": round(frequency.max) if frequency else None,
            },
            "for_children": {
                "cpus": list(cores.cpus),
                "pinnable": cores.pinnable,
                "source": cores.source,
            },
        },
        "memory": {
            "total_mb": memory.total // MiB,
            "available_mb": memory.available // MiB,
            "used_mb": (memory.total - memory.available) // MiB,
            "percent": memory.percent,
        },
        "gpu": gpu,
        "timestamp": iso(time.time()),
    }


@dataclass(frozen=True)
class HostFigures:
    """One reading of the host: CPU busy since the previous reading, RAM, the GPUs."""

    cpu_percent: float
    memory_used: int  # bytes: total less available, as /api/v2/metrics counts it
    memory_total: int
    gpus: tuple[GpuInfo, ...]


class HostReader:
    """Reads ``HostFigures`` through the probe (RAM and GPUs, as loads are judged) and its
    own CPU times: psutil's ``cpu_percent`` keeps one reading for the whole process, which
    every /api/v2/metrics call would move between two of the history's samples."""

    def __init__(
        self,
        probe: MemoryProbe,
        cpu_times: Callable[[], Any] = psutil.cpu_times,
        virtual_memory: Callable[[], Any] = psutil.virtual_memory,
    ) -> None:
        self._probe = probe
        self._cpu_times = cpu_times
        self._virtual_memory = virtual_memory
        self._last: tuple[float, float] | None = None  # (busy, total) seconds

    def read(self) -> HostFigures:
        memory = self._virtual_memory()
        return HostFigures(
            cpu_percent=self._cpu_percent(),
            memory_used=int(memory.total - memory.available),
            memory_total=int(memory.total),
            gpus=tuple(self._probe.gpus()),
        )

    def _cpu_percent(self) -> float:
        """Busy share of all CPUs since the previous reading (0 at the first)."""
        times = self._cpu_times()
        total = float(sum(times))
        idle = float(times.idle + getattr(times, "iowait", 0.0))
        last, self._last = self._last, (total - idle, total)
        if last is None or total <= last[1]:
            return 0.0
        return round(100 * max(0.0, total - idle - last[0]) / (total - last[1]), 1)


def health_v2(version: str, started_at: float, last_error: str | None) -> dict[str, Any]:
    return {
        "status": "healthy",
        "version": version,
        "uptime": format_uptime(time.time() - started_at),
        "last_error": last_error,
    }
