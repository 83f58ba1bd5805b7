"""The metrics history (telemetry/history.py, GET /api/v2/metrics/history): samples taken on a
fake clock from the activity log's totals, a fake host and fake models."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from fake_clock import FakeClock
from fakes import FakeFactory
from fastapi.testclient import TestClient
from served import MakeSettings

from supervisor.app import create_app
from supervisor.children.spec import Role
from supervisor.lifecycle.model import ManagedModel
from supervisor.lifecycle.state import ModelState
from supervisor.models.memory import GpuInfo, MemoryProbe
from supervisor.telemetry.activity import ActivityLog
from supervisor.telemetry.history import MetricsHistory, model_loads, percentile
from supervisor.telemetry.host import HostReader
from supervisor.telemetry.tokens import TokenMeter

GiB = 1024**3
GPU = GpuInfo(index=0, name="H100", total=80 * GiB, used=20 * GiB, free=60 * GiB, utilization=42)


class FakeCpu:
    """CPU times that grow by a set share of busy time per reading."""

    def __init__(self, busy_share: float) -> None:
        self.busy_share = busy_share
        self.busy = 0.0
        self.idle = 0.0

    def __call__(self) -> Any:
        self.busy += 10 * self.busy_share
        self.idle += 10 * (1 - self.busy_share)
        return _Times(self.busy, self.idle)


class _Times(tuple[float, float]):
    def __new__(cls, busy: float, idle: float) -> _Times:
        return super().__new__(cls, (busy, idle))

    @property
    def idle(self) -> float:
        return self[1]


def host_reader(busy_share: float = 0.25, gpus: list[GpuInfo] | None = None) -> HostReader:
    memory = SimpleNamespace(total=64 * GiB, available=48 * GiB)
    probe = MemoryProbe(virtual_memory=lambda: memory, gpu_reader=lambda: list(gpus or []))
    return HostReader(probe, cpu_times=FakeCpu(busy_share), virtual_memory=lambda: memory)


def fake_model(model_id: str, role: Role, state: ModelState, in_flight: int, queued: int) -> Any:
    backend = SimpleNamespace(in_flight=in_flight) if state is ModelState.READY else None
    return SimpleNamespace(
        entry=SimpleNamespace(id=model_id), role=role, state=state, backend=backend, queued=queued
    )


def finish(log: ActivityLog, first_token: float | None = None, tokens: bytes = b"") -> None:
    meter = TokenMeter(lambda i, o: None)
    if tokens:
        meter.body(tokens)
    log.record("POST", "/v1/chat/completions", "m", 200, 0.5, first_token, True, meter)


def usage(prompt: int, completion: int) -> bytes:
    return b'{"usage": {"prompt_tokens": %d, "completion_tokens": %d}}' % (prompt, completion)


def test_rates_are_over_the_time_between_two_samples() -> None:
    log, clock = ActivityLog(), FakeClock()
    history = MetricsHistory(log, list, host_reader(), clock=clock, wall=lambda: 1234.5)
    host = host_reader()
    clock.now += 2
    for first_token in (0.1, 0.2, 0.3, 0.4):
        finish(log, first_token, usage(10, 5))
    finish(log)  # no tokens and no stream

    sample = history.sample(host.read())
    assert (sample.requests_per_s, sample.prompt_tokens_per_s, sample.tokens_per_s) == (2.5, 20, 10)
    assert (sample.ttft_p50_ms, sample.ttft_p95_ms) == (200.0, 400.0)

    clock.now += 4
    finish(log, None, usage(4, 8))
    quiet = history.sample(host.read()).as_json()
    assert quiet["requests_per_s"] == 0.25 and quiet["tokens_per_s"] == 2.0
    assert quiet["ttft_p50_ms"] is None  # no stream since the last sample
    assert quiet["time"] == 1234.5
    assert [s.requests_per_s for s in history.samples()] == [2.5, 0.25]


def test_a_sample_has_the_host_and_each_models_load() -> None:
    models = [
        fake_model("a", Role.CHAT, ModelState.READY, 2, 3),
        fake_model("a", Role.EMBEDDING, ModelState.READY, 1, 0),
        fake_model("b", Role.CHAT, ModelState.UNLOADED, 0, 0),
    ]
    history = MetricsHistory(ActivityLog(), lambda: models, host_reader(), clock=FakeClock())
    host = host_reader(busy_share=0.25, gpus=[GPU])
    host.read()  # the first reading starts the CPU's count

    sample = history.sample(host.read()).as_json()

    assert sample["cpu_percent"] == 25.0
    assert (sample["memory_used_bytes"], sample["memory_total_bytes"]) == (16 * GiB, 64 * GiB)
    assert sample["gpus"] == [
        {"index": 0, "name": "H100", "utilization_percent": 42,
         "memory_used_bytes": 20 * GiB, "memory_total_bytes": 80 * GiB},
    ]  # fmt: skip
    assert sample["models"] == {
        "a": {"state": "ready", "in_flight": 3, "queued": 3},
        "b": {"state": "unloaded", "in_flight": 0, "queued": 0},
    }


def test_the_chat_roles_state_is_the_models() -> None:
    models: Iterable[ManagedModel] = [
        cast(ManagedModel, fake_model("a", Role.EMBEDDING, ModelState.LOADING, 0, 0)),
        cast(ManagedModel, fake_model("a", Role.CHAT, ModelState.READY, 0, 1)),
    ]
    assert model_loads(models)["a"].state == "ready"


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95)) == (50.0, 95.0)


@pytest.mark.anyio
async def test_the_loop_samples_every_interval_and_keeps_the_window() -> None:
    log, clock = ActivityLog(), FakeClock()
    history = MetricsHistory(log, list, host_reader(), clock=clock, interval=2.0, window=10.0)
    history.start()
    try:
        finish(log)
        await clock.run_until(lambda: len(history.samples()) >= 1, step=1.0)
        first = history.samples()[0]
        assert first.requests_per_s > 0
        await clock.run_until(lambda: all(s is not first for s in history.samples()), step=1.0)
        assert len(history.samples()) == 5  # 10 s of 2 s samples: the first left the window
        assert history.samples()[-1].requests_per_s == 0
    finally:
        await history.stop()
    assert history.samples()  # what was sampled stays readable


class FailingHost:
    """A host whose readings fail ``failures`` times, then are ``reader``'s."""

    def __init__(self, reader: HostReader, failures: int) -> None:
        self._reader, self.failures = reader, failures

    def read(self) -> Any:
        if self.failures:
            self.failures -= 1
            raise OSError("no /proc")
        return self._reader.read()


@pytest.mark.anyio
async def test_readings_that_fail_the_first_among_them_do_not_stop_the_sampling() -> None:
    clock = FakeClock()
    host = FailingHost(host_reader(), failures=2)
    history = MetricsHistory(ActivityLog(), list, cast(HostReader, host), clock=clock)
    history.start()
    try:
        await clock.run_until(lambda: len(history.samples()) >= 2, step=1.0)
    finally:
        await history.stop()
    assert host.failures == 0


@pytest.mark.anyio
async def test_stop_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """The services' close calls stop() before stopping the children: it must go on."""
    history = MetricsHistory(ActivityLog(), list, host_reader(), clock=FakeClock())

    async def broken() -> None:
        raise RuntimeError("a bug in the sampler")

    monkeypatch.setattr(history, "run", broken)
    history.start()
    await asyncio.sleep(0)
    await history.stop()


def test_the_route_serves_the_history_and_metrics_still_answer(
    make_settings: MakeSettings,
) -> None:
    with TestClient(create_app(make_settings(), factory=FakeFactory())) as client:
        history = client.get("/api/v2/metrics/history")
        assert history.status_code == 200
        body = history.json()
        assert (body["interval_s"], body["window_s"]) == (2.0, 600)
        assert isinstance(body["samples"], list)
        metrics = client.get("/api/v2/metrics")
        assert metrics.status_code == 200 and "cpu" in metrics.json()
