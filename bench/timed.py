"""Closed-loop users for a fixed time rather than a fixed count, and what one measured window
of such a run counts (a pure function over the recorded requests, so it is tested with
literals).

The users run without a pause from the warm-up into the measured window, so the window is a
slice of steady load, and everything is counted by when it *ended*: a stream completed inside
the window counts (with its whole latency), however early it began; a failure inside the
window counts. When the window ends the requests still running are cancelled and counted
nowhere but as ``in_flight_at_end``: in steady state what a window gains at its start (requests
begun before it) it gives up at its end, for every setup alike. Failures outside the window
(the priming requests, the warm-up) are counted apart.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .loadgen import Outcome, make_client, send
from .stats import percentile

CHAT = "chat"
EMBEDDINGS = "embeddings"
IN_FLIGHT = "in flight at the end"
DELIBERATE = ("http 429", "http 503")  # refusals that tell the client when to come back
FAILURE_PAUSE_S = 0.5  # a user's pause after a failure that gave no Retry-After


@dataclass(frozen=True)
class Lane:
    """``users`` simulated users sending ``body`` to ``base_url + path``, one after another."""

    kind: str  # CHAT (streamed) or EMBEDDINGS
    label: str  # which model (or child) the lane's requests are for
    base_url: str
    path: str
    body: dict[str, Any]
    users: int


@dataclass(frozen=True)
class Done:
    """One request, its times in seconds from the start of the run."""

    kind: str
    label: str
    started: float
    ended: float
    tokens: int = 0
    ttft: float | None = None
    failure: str | None = None  # None: answered in full
    deliberate: bool = False  # a 429/503 with Retry-After
    retried: bool = False


def failure_of(outcome: Outcome) -> tuple[str | None, bool]:
    """What went wrong with a request, as a key for the error counts, and whether it was a
    deliberate refusal (429 or 503 with a Retry-After header)."""
    if outcome.error in DELIBERATE:
        if outcome.retry_after is not None:
            return f"{outcome.error} with Retry-After", True
        return f"{outcome.error} without Retry-After", False
    if outcome.error is not None:
        return outcome.error, False
    if outcome.disconnect is not None:
        return f"disconnect: {outcome.disconnect}", False
    return None, False


def retry_seconds(value: str | None) -> float:
    """A Retry-After header's delay (seconds; an HTTP date is not expected here)."""
    try:
        return max(0.0, float(value)) if value is not None else FAILURE_PAUSE_S
    except ValueError:
        return FAILURE_PAUSE_S


@dataclass
class TimedRun:
    done: list[Done]
    window_start: float
    window_end: float


async def run_timed(lanes: Sequence[Lane], warm_s: float, window_s: float) -> TimedRun:
    """Every lane's users send requests for ``warm_s + window_s`` seconds; then what is still
    running is cancelled. After a failure a user waits: Retry-After's seconds for a deliberate
    refusal (as real clients do), else ``FAILURE_PAUSE_S``; never past the end."""
    done: list[Done] = []
    running: dict[int, tuple[Lane, float]] = {}  # user -> its lane, and when its request began
    users = [(lane, make_client(lane.base_url)) for lane in lanes for _ in range(lane.users)]
    bodies = {id(lane): json.dumps(lane.body).encode() for lane in lanes}
    origin = time.perf_counter()
    stop = warm_s + window_s

    def clock() -> float:
        return time.perf_counter() - origin

    async def user(number: int, lane: Lane, client: httpx.AsyncClient) -> None:
        stream = bool(lane.body.get("stream"))
        while (began := clock()) < stop:
            running[number] = (lane, began)
            outcome = await send(client, lane.path, bodies[id(lane)], stream)
            del running[number]
            failure, deliberate = failure_of(outcome)
            done.append(Done(lane.kind, lane.label, began, clock(), outcome.tokens,
                             outcome.ttft, failure, deliberate, outcome.retried))  # fmt: skip
            if failure is not None:
                pause = retry_seconds(outcome.retry_after if deliberate else None)
                await asyncio.sleep(max(0.0, min(pause, stop - clock())))

    tasks = [asyncio.create_task(user(n, lane, c)) for n, (lane, c) in enumerate(users)]
    try:
        finished, _ = await asyncio.wait(tasks, timeout=stop)
        for task in finished:
            task.result()  # a user that failed on its own (not a request) fails the run
        ended = clock()
        done += [Done(lane.kind, lane.label, began, ended, failure=IN_FLIGHT)
                 for lane, began in running.values()]  # fmt: skip
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(client.aclose() for _, client in users))
    return TimedRun(done, warm_s, stop)


async def prime(lanes: Sequence[Lane]) -> list[Done]:
    """One request per lane, one after another, before the run: the gateway and the router
    load a model on its first request. Counted with the warm-up (times before the run)."""
    primed: list[Done] = []
    for lane in lanes:
        async with make_client(lane.base_url) as client:
            body = json.dumps(lane.body).encode()
            outcome = await send(client, lane.path, body, bool(lane.body.get("stream")))
        failure, deliberate = failure_of(outcome)
        primed.append(Done(lane.kind, lane.label, -1.0, -1.0, failure=failure,
                           deliberate=deliberate))  # fmt: skip
    return primed


def window_row(done: Sequence[Done], start: float, end: float) -> dict[str, Any]:
    """One setup's figures over the window ``[start, end]``, by when each request ended (see
    the module's docstring). Failures before the window are counted apart."""
    span = end - start
    inside = [d for d in done if start <= d.ended <= end and d.failure != IN_FLIGHT]
    before = [d for d in done if d.ended < start and d.failure is not None]
    streams = [d for d in inside if d.kind == CHAT and d.failure is None]
    embeddings = [d for d in inside if d.kind == EMBEDDINGS and d.failure is None]
    latencies = [d.ended - d.started for d in streams]
    ttfts = [d.ttft for d in streams if d.ttft is not None]
    failed = [d for d in inside if d.failure is not None]
    return {
        "window_s": span,
        "streams": len(streams),
        "streams_per_s": _per_s(len(streams), span),
        "tokens": sum(d.tokens for d in streams),
        "embeddings": len(embeddings),
        "embeddings_per_s": _per_s(len(embeddings), span),
        "completed_per_s": _per_s(len(streams) + len(embeddings), span),
        "latency_p50_ms": _ms(percentile(latencies, 50)),
        "latency_p95_ms": _ms(percentile(latencies, 95)),
        "ttft_p50_ms": _ms(percentile(ttfts, 50)),
        "embedding_p50_ms": _ms(percentile([d.ended - d.started for d in embeddings], 50)),
        "deliberate": sum(d.deliberate for d in failed),
        "lost": sum(not d.deliberate for d in failed),
        "retries": sum(d.retried for d in inside),
        "in_flight_at_end": sum(d.failure == IN_FLIGHT for d in done),
        "oldest_in_flight_s": max(
            (d.ended - d.started for d in done if d.failure == IN_FLIGHT), default=None
        ),
        "warmup_deliberate": sum(d.deliberate for d in before),
        "warmup_lost": sum(not d.deliberate for d in before),
        "errors": dict(Counter(str(d.failure) for d in failed)),
        "warmup_errors": dict(Counter(str(d.failure) for d in before)),
        "completed_by_label": {
            label: sum(d.label == label for d in streams + embeddings)
            for label in sorted({d.label for d in done})
        },
    }


def _per_s(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0
