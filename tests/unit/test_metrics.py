from __future__ import annotations

from types import SimpleNamespace

import pytest

from supervisor.models.memory import GpuInfo, MemoryProbe
from supervisor.placement.cores import HostCores
from supervisor.telemetry.host import format_uptime, health_v2, system_metrics

MiB = 1024 * 1024
CORES = HostCores((0, 2), pinnable=True, source="affinity 0-3, 2 physical")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0m"), (59, "0m"), (60, "1m"), (3600 * 3 + 45 * 60, "3h 45m"),
     (2 * 86400 + 3 * 3600 + 45 * 60 + 30, "2d 3h 45m"), (86400, "1d 0h 0m")],
)  # fmt: skip
def test_uptime_reads_like_seed_001(seconds: float, text: str) -> None:
    assert format_uptime(seconds) == text


def test_system_metrics_have_seed_001s_shape_without_a_gpu() -> None:
    body = system_metrics(MemoryProbe(gpu_reader=list), CORES)
    assert set(body) == {"cpu", "memory", "gpu", "timestamp"}
    assert set(body["cpu"]) == {"utilization", "cores", "frequency", "for_children"}
    assert body["cpu"]["cores"]["logical"] >= 1
    assert set(body["memory"]) == {"total_mb", "available_mb", "used_mb", "percent"}
    assert body["memory"]["total_mb"] >= body["memory"]["available_mb"] > 0
    assert body["gpu"] == {"available": False}
    assert body["timestamp"].endswith("Z")


def test_gpu_memory_is_reported_when_a_gpu_is_there() -> None:
    gpu = GpuInfo(index=0, name="NVIDIA H100", total=80_000 * MiB, used=20_000 * MiB,
                  free=60_000 * MiB)  # fmt: skip
    memory = SimpleNamespace(total=0, available=0)
    probe = MemoryProbe(virtual_memory=lambda: memory, gpu_reader=lambda: [gpu])
    body = system_metrics(probe, CORES)
    assert body["gpu"] == {
        "available": True,
        "name": "NVIDIA H100",
        "memory": {"total_mb": 80_000, "used_mb": 20_000, "percent": 25.0},
    }


def test_the_cores_children_share_are_shown_with_how_they_were_found() -> None:
    body = system_metrics(MemoryProbe(gpu_reader=list), CORES)
    assert body["cpu"]["for_children"] == {
        "cpus": [0, 2],
        "pinnable": True,
        "source": "affinity 0-3, 2 physical",
    }


def test_health_v2() -> None:
    body = health_v2("0.1.0", started_at=0.0, last_error=None)
    assert body["status"] == "healthy" and body["version"] == "0.1.0"
    assert body["last_error"] is None and body["uptime"].endswith("m")
