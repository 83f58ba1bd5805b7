"""The metrics history (``GET /api/v2/metrics/history``, the console's charts): a sample every
``INTERVAL_S`` seconds kept for ``WINDOW_S``, of the gateway's own figures.

Rates (requests, tokens) are differences of the activity log's running totals over the time
between two samples, and first-token percentiles are over the times seen in between: the
requests themselves pay nothing for the history beyond the totals. The host's figures are read
in a worker thread (NVML can take milliseconds), the models' states from the manager's table.
The loop runs on an injectable clock (``supervisor/clock.py``), so tests step it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from supervisor.children.spec import Role
from supervisor.clock import Clock, SystemClock
from supervisor.lifecycle.model import ManagedModel
from supervisor.loops import stop_loop
from supervisor.telemetry.activity import ActivityLog
from supervisor.telemetry.host import HostFigures, HostReader

LOG = logging.getLogger(__name__)
INTERVAL_S = 2.0
WINDOW_S = 600


@dataclass(frozen=True)
class ModelLoad:
    state: str
    in_flight: int
    queued: int


@dataclass(frozen=True)
class Sample:
    time: float  # epoch seconds
    requests_per_s: float
    tokens_per_s: float  # completion tokens
    prompt_tokens_per_s: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    host: HostFigures
    models: dict[str, ModelLoad]

    def as_json(self) -> dict[str, Any]:
        host = self.host
        return {
            "time": round(self.time, 3),
            "requests_per_s": self.requests_per_s,
            "tokens_per_s": self.tokens_per_s,
            "prompt_tokens_per_s": self.prompt_tokens_per_s,
            "ttft_p50_ms": self.ttft_p50_ms,
            "ttft_p95_ms": self.ttft_p95_ms,
            "cpu_percent": host.cpu_percent,
            "memory_used_bytes": host.memory_used,
            "memory_total_bytes": host.memory_total,
            "gpus": [
                {
                    "index": gpu.index,
                    "name": gpu.name,
                    "utilization_percent": gpu.utilization,
                    "memory_used_bytes": gpu.used,
                    "memory_total_bytes": gpu.total,
                }
                for gpu in host.gpus
            ],
            "models": {
                model_id: {"state": m.state, "in_flight": m.in_flight, "queued": m.queued}
                for model_id, m in self.models.items()
            },
        }


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def model_loads(models: Iterable[ManagedModel]) -> dict[str, ModelLoad]:
    """Each model's state (its chat child's, else its first role's), and its requests in
    flight and queued over all its roles."""
    loads: dict[str, ModelLoad] = {}
    for model in models:
        backend = model.backend
        own = ModelLoad(model.state.value, backend.in_flight if backend else 0, model.queued)
        seen = loads.get(model.entry.id)
        if seen is not None:
            state = own.state if model.role is Role.CHAT else seen.state
            own = ModelLoad(state, seen.in_flight + own.in_flight, seen.queued + own.queued)
        loads[model.entry.id] = own
    return loads


class MetricsHistory:
    """Samples the activity log's totals, the host and the models every ``interval`` seconds
    on ``clock``, keeping ``window`` seconds of them. ``wall`` stamps each sample."""

    def __init__(
        self,
        activity: ActivityLog,
        models: Callable[[], Iterable[ManagedModel]],
        host: HostReader,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        interval: float = INTERVAL_S,
        window: float = WINDOW_S,
    ) -> None:
        self.interval = interval
        self.window = window
        self._activity = activity
        self._models = models
        self._host = host
        self._clock = clock or SystemClock()
        self._wall = wall
        self._samples: deque[Sample] = deque(maxlen=max(1, round(window / interval)))
        self._last = self._totals()
        self._task: asyncio.Task[None] | None = None

    def samples(self) -> list[Sample]:
        """The samples kept, oldest first."""
        return list(self._samples)

    def start(self) -> None:
        """Start sampling (in the app's lifespan)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Stop sampling. Never raises (the services' close goes on to stop the children
        after it): a sampler that had failed is logged."""
        task, self._task = self._task, None
        await stop_loop(task, "metrics history: the sampler", LOG)

    async def run(self) -> None:
        """Sample until cancelled: a reading or a sample that fails is logged and the next
        one taken (the first included, which only starts the CPU's count)."""
        try:
            await asyncio.to_thread(self._host.read)
        except Exception:
            LOG.exception("metrics history: the first reading failed")
        while True:
            await self._clock.sleep(self.interval)
            try:
                self.sample(await asyncio.to_thread(self._host.read))
            except Exception:  # the history must outlive one bad reading
                LOG.exception("metrics history: sampling failed")

    def sample(self, host: HostFigures) -> Sample:
        """Take one sample: rates since the previous one, with ``host``'s figures."""
        now, requests, prompt, completion = totals = self._totals()
        then, requests_then, prompt_then, completion_then = self._last
        self._last = totals
        elapsed = now - then
        first_tokens = self._activity.totals.take_first_tokens()
        p50, p95 = percentile(first_tokens, 0.5), percentile(first_tokens, 0.95)

        def rate(count: int) -> float:
            return round(count / elapsed, 3) if elapsed > 0 else 0.0

        sample = Sample(
            time=self._wall(),
            requests_per_s=rate(requests - requests_then),
            tokens_per_s=rate(completion - completion_then),
            prompt_tokens_per_s=rate(prompt - prompt_then),
            ttft_p50_ms=round(p50 * 1000, 2) if p50 is not None else None,
            ttft_p95_ms=round(p95 * 1000, 2) if p95 is not None else None,
            host=host,
            models=model_loads(self._models()),
        )
        self._samples.append(sample)
        return sample

    def _totals(self) -> tuple[float, int, int, int]:
        totals = self._activity.totals
        return (
            self._clock.monotonic(),
            totals.requests,
            totals.prompt_tokens,
            totals.completion_tokens,
        )
