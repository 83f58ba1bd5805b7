"""Prometheus metrics (``GET /metrics``): one registry per app, never the global one.

Requests are observed by ``http/observer.py``'s ``RequestObserver``, for both ways in; model
states, queues, in-flight requests and each running child's placement are read from the model
manager at scrape time, and the peers' health from their listing; lifecycle counters arrive
as ``LifecycleEvents``; and tokens are counted from llama-server's ``usage`` or ``timings`` by
``TokenMeter``s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from supervisor.children.spec import Role
from supervisor.lifecycle.model import ManagedModel
from supervisor.lifecycle.state import ModelState
from supervisor.placement.cores import cpu_list
from supervisor.telemetry.activity import ActivityLog, RequestRecord
from supervisor.telemetry.activity_text import TextMeter
from supervisor.telemetry.performance import PerformanceTable
from supervisor.telemetry.tokens import TokenMeter

PREFIX = "llama_supervisor_"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
# LLM work runs from milliseconds (a model list) to minutes (a long generation, a cold load).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Telemetry:
    """The app's metrics and their registry. Also the lifecycle's ``LifecycleEvents``, and
    what feeds each model's ``performance`` (the token meters see every answer's timings).
    Its ``activity`` is the log of finished requests (``activity.py``)."""

    def __init__(self, activity: ActivityLog | None = None) -> None:
        self.activity = activity if activity is not None else ActivityLog()
        self.performance = PerformanceTable()
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        self._models: Callable[[], Iterable[ManagedModel]] = list
        registry.register(_ModelsCollector(lambda: self._models()))
        self._peers: Callable[[], Iterable[dict[str, Any]]] = list
        registry.register(_PeersCollector(lambda: self._peers()))
        self.requests = Counter(
            PREFIX + "requests",
            "HTTP requests answered, by route template, method, model and status",
            ["route", "method", "model", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            PREFIX + "request_duration_seconds",
            "From the request to the end of its response (streams included)",
            ["route", "method", "model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.first_token = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Streamed responses: from the request to the first non-empty body chunk",
            ["route", "model"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tokens_in = Counter(
            PREFIX + "tokens_in",
            "Prompt tokens (cached ones included), from llama-server's usage or timings",
            ["model"],
            registry=registry,
        )
        self.tokens_out = Counter(
            PREFIX + "tokens_out", "Generated tokens", ["model"], registry=registry
        )
        self.loads = Counter(
            PREFIX + "model_loads",
            "Children started for a model (loads, restarts, swaps), by outcome",
            ["model", "role", "outcome"],
            registry=registry,
        )
        self.load_duration = Histogram(
            PREFIX + "model_load_duration_seconds",
            "From the start of a child until it answered /health",
            ["model", "role"],
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.restarts = Counter(
            PREFIX + "model_restarts",
            "Restart attempts of children that died or stopped answering",
            ["model", "role"],
            registry=registry,
        )
        self.evictions = Counter(
            PREFIX + "model_evictions",
            "Idle models unloaded to make room for another",
            ["model"],
            registry=registry,
        )
        self.swaps = Counter(
            PREFIX + "model_swaps",
            "Finished swaps, by mode (blue-green, stop-start, load)",
            ["model", "role", "mode"],
            registry=registry,
        )
        self.connections_cut = Counter(
            PREFIX + "connections_cut",
            "Client connections refused or closed before their request was read whole, by "
            "reason: head_timeout, body_timeout, body_too_slow, head_too_large, "
            "too_many_connections, pending_body_bytes",
            ["reason"],
            registry=registry,
        )
        self.unloads = Counter(
            PREFIX + "model_unloads",
            "Children stopped on purpose (unload, eviction, idle TTL, removal)",
            ["model", "role"],
            registry=registry,
        )

        # Labelled series by their labels: .labels() costs more than the update itself.
        self._request_series: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}
        self._token_series: dict[str, tuple[Counter, Counter]] = {}

    def connection_cut(self, reason: str) -> None:
        self.connections_cut.labels(reason).inc()

    def watch(self, models: Callable[[], Iterable[ManagedModel]]) -> None:
        """Read the managed models (states, queues, in flight) from ``models`` when scraped."""
        self._models = models

    def watch_peers(self, listing: Callable[[], Iterable[dict[str, Any]]]) -> None:
        """Read the peers' health from ``listing`` (``Peers.listing``) when scraped."""
        self._peers = listing

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- requests and tokens -----------------------------------------------------------------
    def observe_request(
        self,
        route: str,
        method: str,
        model: str,
        status: int,
        seconds: float,
        first_token: float | None,
    ) -> None:
        key = (route, method, model, status)
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = (
                self.requests.labels(route, method, model, str(status)),
                self.latency.labels(route, method, model),
            )
        count, latency = series
        count.inc()
        latency.observe(seconds)
        if first_token is not None and model:  # generations only, not log follows
            self.first_token.labels(route, model).observe(first_token)

    def meter(self, model: str, record: RequestRecord | None = None) -> TokenMeter:
        """A meter for one answer of ``model``: it counts that answer's tokens, and its
        generation's speed, once. Given the request's ``record`` (the ASGI way's), the
        request's activity entry shows what it counted."""
        kind = TextMeter if self.activity.keep_text else TokenMeter
        meter = kind(partial(self._count_tokens, model), partial(self._timed, model))
        if record is not None:
            record.meter = meter
        return meter

    def count_answer(self, model: str, answer: object, record: RequestRecord | None = None) -> None:
        """Count the tokens (and generation speed) of a parsed, finished answer."""
        meter = self.meter(model, record)
        meter.event(answer)
        meter.close()

    def _timed(self, model: str, tokens: int, millis: float) -> None:
        self.performance.add(model, tokens, millis / 1000)

    def _count_tokens(self, model: str, tokens_in: int, tokens_out: int) -> None:
        series = self._token_series.get(model)
        if series is None:
            series = self._token_series[model] = (
                self.tokens_in.labels(model),
                self.tokens_out.labels(model),
            )
        series[0].inc(tokens_in)
        series[1].inc(tokens_out)

    # -- LifecycleEvents -----------------------------------------------------------------------
    def load_finished(self, model: str, role: Role, seconds: float, ok: bool) -> None:
        self.loads.labels(model, role.value, "ok" if ok else "failed").inc()
        if ok:
            self.load_duration.labels(model, role.value).observe(seconds)

    def restarted(self, model: str, role: Role) -> None:
        self.restarts.labels(model, role.value).inc()

    def evicted(self, model: str) -> None:
        self.evictions.labels(model).inc()

    def swapped(self, model: str, role: Role, mode: str, seconds: float) -> None:
        self.swaps.labels(model, role.value, mode).inc()

    def unloaded(self, model: str, role: Role) -> None:
        self.unloads.labels(model, role.value).inc()


class _ModelsCollector:
    """Gauges read from the model manager at scrape time, so they are never stale."""

    def __init__(self, models: Callable[[], Iterable[ManagedModel]]) -> None:
        self._models = models

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        state, queued, in_flight, loaded = families[:4]
        loaded_ids: set[str] = set()
        for model in self._models():
            labels = [model.entry.id, model.role.value]
            for value in ModelState:
                state.add_metric([*labels, value.value], 1.0 if model.state is value else 0.0)
            queued.add_metric(labels, model.queued)
            backend = model.backend
            in_flight.add_metric(labels, backend.in_flight if backend else 0)
            if backend is not None:
                loaded_ids.add(model.entry.id)
            self._add_placement(families[4:], model, labels)
        loaded.add_metric([], len(loaded_ids))
        return iter(families)

    @staticmethod
    def _add_placement(
        families: tuple[GaugeMetricFamily, ...], model: ManagedModel, labels: list[str]
    ) -> None:
        """The serving child's threads, CPUs and GPUs; a child that stopped has no series."""
        backend = model.serving()
        if backend is None:
            return
        threads, cpus, info = families
        placement = backend.placement
        if placement.threads is not None:
            threads.add_metric(labels, placement.threads)
        cpus.add_metric(labels, len(placement.cpus))
        gpus = ",".join(str(gpu.index) for gpu in placement.gpus)
        memory = placement.memory.where if placement.memory else ""
        info.add_metric([*labels, cpu_list(placement.cpus), gpus, memory], 1.0)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        def gauge(name: str, help_text: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, help_text, labels=labels)

        return (
            gauge(
                "model_state",
                "1 for each model's current lifecycle state, 0 for the others",
                ["model", "role", "state"],
            ),
            gauge("queue_depth", "Requests waiting for a free slot", ["model", "role"]),
            gauge("in_flight_requests", "Requests on the model's current child", ["model", "role"]),
            gauge("models_loaded", "Models with a running child", []),
            gauge(
                "child_threads",
                "--threads of the model's running child (absent: llama.cpp's default)",
                ["model", "role"],
            ),
            gauge(
                "child_cpus",
                "Logical CPUs the model's running child is pinned to (0: not pinned)",
                ["model", "role"],
            ),
            gauge(
                "child_placement_info",
                "1 per running child: its CPUs (as 0-3,6), NVIDIA GPU indices and where its "
                "memory goes (RAM or VRAM)",
                ["model", "role", "cpus", "gpus", "memory"],
            ),
        )


class _PeersCollector:
    """Each peer's health, as ``GET /v1/peers`` shows it at scrape time."""

    def __init__(self, listing: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self._listing = listing

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        up, latency, in_flight = families = self._families()
        for peer in self._listing():
            labels = [peer["name"]]
            up.add_metric(labels, 1.0 if peer["state"] == "up" else 0.0)
            if peer["latency_ms"] is not None:
                latency.add_metric(labels, peer["latency_ms"] / 1000)
            in_flight.add_metric(labels, peer["in_flight"])
        return iter(families)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        def gauge(name: str, help_text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, help_text, labels=["peer"])

        return (
            gauge("peer_up", "1 while the peer's last check succeeded, else 0"),
            gauge("peer_check_seconds", "How long the peer's last check took"),
            gauge("peer_in_flight_requests", "Requests relayed to the peer now"),
        )
