"""The workloads, each run against every target in the same round (the order rotating from
round to round), recorded raw: one row per target per round. ``summary.py`` turns the rows
into medians, ratios and verdicts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .loadgen import (
    Workload,
    WorkloadResult,
    merged,
    run_interleaved,
    run_together,
    run_workload,
)
from .meter import ProcessMeter
from .stats import latency_summary, percentile
from .targets import Target

CHAT = "/v1/chat/completions"
PROMPT = [{"role": "user", "content": "Hi"}]
Row = dict[str, float | int | None]
Rounds = list[dict[str, Row]]
CPU_FIELDS = ("cpu_s", "requests", "tokens", "events")


@dataclass(frozen=True)
class Plan:
    """How much of each workload a run sends; (concurrency, requests) pairs per round."""

    rounds: int
    small: tuple[tuple[int, int], ...]
    stream: tuple[tuple[int, int], ...]
    stream_tokens: int
    stream_slices: int  # each target's streams per round, in this many turns
    shared: tuple[tuple[int, int], ...]  # streams per side at once against one child
    error_requests: int
    cold_repeats: int
    relay_latency_requests: int
    relay_requests: int
    relay_streams: int
    relay_events: int


FULL = Plan(
    rounds=3,
    small=((1, 500), (16, 480)),
    stream=((1, 12), (4, 24), (16, 48)),
    stream_tokens=64,
    stream_slices=3,
    shared=((1, 8), (4, 8), (16, 16)),
    error_requests=10_000,
    cold_repeats=3,
    relay_latency_requests=600,
    relay_requests=2000,
    relay_streams=300,
    relay_events=64,
)
QUICK = Plan(
    rounds=2,
    small=((1, 60), (16, 160)),
    stream=((1, 2), (4, 8), (16, 16)),
    stream_tokens=32,
    stream_slices=1,
    shared=((1, 2), (4, 4), (16, 16)),
    error_requests=500,
    cold_repeats=1,
    relay_latency_requests=200,
    relay_requests=500,
    relay_streams=80,
    relay_events=64,
)


def chat_body(model: str, max_tokens: int, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": PROMPT, "max_tokens": max_tokens}
    if stream:
        body |= {"stream": True, "ignore_eos": True}  # every stream runs to max_tokens
    return body


@dataclass
class Tally:
    """Every measured request of one target, whatever the workload."""

    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    disconnects: Counter[str] = field(default_factory=Counter)
    retries: int = 0

    def absorb(self, result: WorkloadResult) -> None:
        self.requests += result.requests
        self.errors.update(result.errors)
        self.disconnects.update(result.disconnects)
        self.retries += result.retries

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "disconnects": dict(self.disconnects),
            "retries": self.retries,
        }


def latency_row(result: WorkloadResult) -> Row:
    return {**latency_summary(result.latencies), "rps": _rate(result.requests, result.wall_s)}


def stream_row(result: WorkloadResult) -> Row:
    ttft = latency_summary(result.ttfts)
    gap_p99 = percentile(result.gaps, 99)
    return {
        "tokens_per_s": _rate(result.tokens, result.wall_s),
        "ttft_p50_ms": ttft["p50_ms"],
        "ttft_p99_ms": ttft["p99_ms"],
        "gap_p99_ms": None if gap_p99 is None else gap_p99 * 1000,
        "tokens": result.tokens,
    }


def relay_stream_row(result: WorkloadResult) -> Row:
    return {
        "rps": _rate(result.requests, result.wall_s),
        "events_per_s": _rate(result.events, result.wall_s),
        "events": result.events,
    }


def _rate(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None


@dataclass(frozen=True)
class SharedChild:
    """A gateway and its llama-server child, both within the load generator's reach."""

    gateway: Target
    child_url: str


class Session:
    """Runs workloads against ``targets``, counting every request's outcome per target and
    the metered process's CPU time (the gateway's) where asked."""

    def __init__(self, targets: list[Target], meters: dict[str, ProcessMeter]) -> None:
        self.targets = targets
        self.meters = meters
        self.tallies: dict[str, Tally] = {t.name: Tally() for t in targets}
        # target -> workload key -> the metered process's CPU seconds, and the requests,
        # tokens and events it answered meanwhile, summed over rounds
        self.cpu: dict[str, dict[str, dict[str, float]]] = {}

    def order(self, round_index: int) -> list[Target]:
        shift = round_index % len(self.targets)
        return self.targets[shift:] + self.targets[:shift]

    async def run(
        self, target: Target, workload: Workload, cpu_key: str | None = None
    ) -> WorkloadResult:
        meter = self.meters.get(target.name)
        probe = meter.cpu_seconds if meter and cpu_key else None
        result = await run_workload(target.base_url, workload, probe)
        self._account(target, result, cpu_key if probe else None)
        return result

    async def interleaved(
        self,
        order: list[Target],
        workloads: list[Workload],
        row: Callable[[WorkloadResult], Row] = latency_row,
        cpu_key: str | None = None,
    ) -> dict[str, Row]:
        """Concurrency-1 rows, the targets taking turns (``run_interleaved``). A metered
        target's CPU is its process's over its own requests."""
        meters = [self.meters.get(t.name) if cpu_key else None for t in order]
        probes = [meter.cpu_seconds if meter else None for meter in meters]
        results = await run_interleaved([t.base_url for t in order], workloads, probes)
        rows: dict[str, Row] = {}
        for target, result, meter in zip(order, results, meters, strict=True):
            self._account(target, result, cpu_key if meter else None)
            rows[target.name] = row(result)
        return rows

    def _account(self, target: Target, result: WorkloadResult, cpu_key: str | None) -> None:
        self.tallies.setdefault(target.name, Tally()).absorb(result)
        if cpu_key:
            workloads = self.cpu.setdefault(target.name, {})
            spent = workloads.setdefault(cpu_key, dict.fromkeys(CPU_FIELDS, 0.0))
            spent["cpu_s"] += result.probed
            spent["requests"] += result.requests
            spent["tokens"] += result.tokens
            spent["events"] += result.events

    async def latency_round(self, round_index: int, plan: Plan, into: dict[str, Rounds]) -> None:
        """Concurrency 1: the targets take turns request by request (``run_interleaved``);
        higher concurrency: one target after another."""
        for concurrency, requests in plan.small:
            rows: dict[str, Row] = {}
            order = self.order(round_index)
            workloads = [
                Workload(CHAT, (chat_body(target.model, max_tokens=1),), concurrency, requests)
                for target in order
            ]
            if concurrency == 1:
                rows = await self.interleaved(order, workloads)
            else:
                for target, workload in zip(order, workloads, strict=True):
                    rows[target.name] = latency_row(await self.run(target, workload))
            into.setdefault(str(concurrency), []).append(rows)

    async def streaming_round(self, round_index: int, plan: Plan, into: dict[str, Rounds]) -> None:
        """Concurrency 1: the targets take turns stream by stream, as for latency. Higher
        concurrency: each target's streams in ``plan.stream_slices`` turns, the targets taking
        turns (the order rotating), so that a slow spell of the machine falls on all of them."""
        for concurrency, requests in plan.stream:
            if concurrency == 1:
                order = self.order(round_index)
                singles = [
                    Workload(
                        CHAT,
                        (chat_body(t.model, plan.stream_tokens, stream=True),),
                        1,
                        requests,
                        1,
                        (chat_body(t.model, 2, stream=True),),
                    )
                    for t in order
                ]
                rows = await self.interleaved(order, singles, stream_row, "stream_c1")
                into.setdefault(str(concurrency), []).append(rows)
                continue
            parts: dict[str, list[WorkloadResult]] = {t.name: [] for t in self.targets}
            for turn in range(plan.stream_slices):
                for target in self.order(round_index + turn):
                    body = chat_body(target.model, plan.stream_tokens, stream=True)
                    short = chat_body(target.model, 2, stream=True)
                    count = requests // plan.stream_slices
                    workload = Workload(CHAT, (body,), concurrency, count, 1, (short,))
                    result = await self.run(target, workload, cpu_key=f"stream_c{concurrency}")
                    parts[target.name].append(result)
            rows = {name: stream_row(merged(results)) for name, results in parts.items()}
            into.setdefault(str(concurrency), []).append(rows)

    async def shared_round(self, shared: SharedChild, plan: Plan, into: dict[str, Rounds]) -> None:
        """Streams straight to the gateway's child and through the gateway at the same time,
        ``concurrency`` users on each side: they share the model's batches and the machine's
        slow spells, so what differs between the sides is what the relay does to a stream."""
        for concurrency, requests in plan.shared:
            body = chat_body(shared.gateway.model, plan.stream_tokens, stream=True)
            short = chat_body(shared.gateway.model, 2, stream=True)
            workload = Workload(CHAT, (body,), concurrency, requests, 1, (short,))
            urls = [shared.child_url, shared.gateway.base_url]
            (direct, relayed), _ = await run_together(urls, [workload, workload], {})
            self.tallies.setdefault("direct (shared child)", Tally()).absorb(direct)
            self.tallies.setdefault("gateway (shared child)", Tally()).absorb(relayed)
            rows = {"direct": stream_row(direct), "gateway": stream_row(relayed)}
            into.setdefault(str(concurrency), []).append(rows)

    async def error_check(self, target: Target, requests: int) -> dict[str, Any]:
        """``requests`` at concurrency 16, alternately non-streamed and streamed, max_tokens 1
        (what is checked is the relay, not the model)."""
        bodies = (chat_body(target.model, 1), chat_body(target.model, 1, stream=True))
        result = await self.run(target, Workload(CHAT, bodies, 16, requests))
        return {
            "requests": result.requests,
            "errors": dict(result.errors),
            "disconnects": dict(result.disconnects),
            "retries": result.retries,
            "wall_s": result.wall_s,
            "rps": _rate(result.requests, result.wall_s),
        }

    async def relay_round(self, round_index: int, plan: Plan, into: dict[str, Rounds]) -> None:
        """The zero-cost upstream alone and behind the gateway: latency at concurrency 1 (the
        two taking turns), then requests/s and SSE events/s at concurrency 16."""
        rows = {key: _next_round(into, key) for key in ("latency_c1", "requests_c16", "stream_c16")}
        order = self.order(round_index)
        singles = [
            Workload(CHAT, (chat_body(t.model, 1),), 1, plan.relay_latency_requests) for t in order
        ]
        rows["latency_c1"].update(await self.interleaved(order, singles))
        for target in order:
            small = chat_body(target.model, 1)
            streamed = chat_body(target.model, plan.relay_events, stream=True)
            many = Workload(CHAT, (small,), 16, plan.relay_requests)
            result = await self.run(target, many, "relay_c16")
            rows["requests_c16"][target.name] = latency_row(result)
            streams = Workload(CHAT, (streamed,), 16, plan.relay_streams)
            result = await self.run(target, streams, "relay_stream_c16")
            rows["stream_c16"][target.name] = relay_stream_row(result)


def _next_round(into: dict[str, Rounds], key: str) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    into.setdefault(key, []).append(rows)
    return rows
