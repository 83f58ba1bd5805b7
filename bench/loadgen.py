"""The async load generator: closed-loop simulated users, each with its own keep-alive
httpx client, sending one request after another and timing each.

A request's outcome is one of: ok, an error (non-2xx, an error event, a timeout, a malformed
answer) or a disconnect (the server closed the connection mid-answer, or a stream ended
without ``[DONE]``). A connection found closed *before any answer* is retried once on a fresh
connection and counted as a retry, not a failure: llama-server closes idle keep-alive
connections without saying so, and every real client (openai's included) retries that.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from .sse import EventKind, SSEScanner, classify

REQUEST_TIMEOUT_S = 300.0
# Raised before any byte of an answer arrived: the request never reached a live handler.
STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
# What a whole (non-streamed) answer holds: chat and completions, native, embeddings.
ANSWER_KEYS = (b'"choices"', b'"content"', b'"embedding"')


@dataclass
class Outcome:
    """One request, timed with ``time.perf_counter`` from just before it is sent."""

    latency: float = 0.0
    ttft: float | None = None  # to the first event carrying text (streams only)
    gaps: list[float] = field(default_factory=list)  # between text events (streams only)
    tokens: int = 0
    events: int = 0
    error: str | None = None
    disconnect: str | None = None
    retried: bool = False
    retry_after: str | None = None  # the Retry-After header of an error answer, if any


@dataclass
class WorkloadResult:
    """Every measured request of one workload against one target."""

    requests: int = 0
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    events: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    disconnects: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    probed: float = 0.0  # what the workload's probe (a process's CPU seconds) moved by

    def add(self, outcome: Outcome) -> None:
        self.requests += 1
        self.retries += outcome.retried
        if outcome.error is not None:
            self.errors[outcome.error] += 1
        elif outcome.disconnect is not None:
            self.disconnects[outcome.disconnect] += 1
        else:
            self.latencies.append(outcome.latency)
            if outcome.ttft is not None:
                self.ttfts.append(outcome.ttft)
            self.gaps.extend(outcome.gaps)
        self.tokens += outcome.tokens
        self.events += outcome.events


def merged(results: list[WorkloadResult]) -> WorkloadResult:
    """Several runs of one workload as one: counts, samples and times added up."""
    total = WorkloadResult()
    for result in results:
        total.requests += result.requests
        total.wall_s += result.wall_s
        total.latencies += result.latencies
        total.ttfts += result.ttfts
        total.gaps += result.gaps
        total.tokens += result.tokens
        total.events += result.events
        total.errors.update(result.errors)
        total.disconnects.update(result.disconnects)
        total.retries += result.retries
        total.probed += result.probed
    return total


@dataclass(frozen=True)
class Workload:
    """What the simulated users send to ``path``: ``requests`` in all, the n-th one
    ``bodies[n % len(bodies)]`` (one body, or a mix such as streamed and not). Each user
    first sends ``warmup_per_user`` of ``warmup`` (default: ``bodies``), not measured: a
    shorter generation warms the connection and the prompt cache as well."""

    path: str
    bodies: tuple[dict[str, Any], ...]
    concurrency: int
    requests: int
    warmup_per_user: int = 2
    warmup: tuple[dict[str, Any], ...] | None = None

    def encoded(self) -> list[tuple[bytes, bool]]:
        return _encode(self.bodies)

    def encoded_warmup(self) -> list[tuple[bytes, bool]]:
        return _encode(self.warmup or self.bodies)


def _encode(bodies: tuple[dict[str, Any], ...]) -> list[tuple[bytes, bool]]:
    return [(json.dumps(b).encode(), bool(b.get("stream"))) for b in bodies]


def make_client(base_url: str) -> httpx.AsyncClient:
    """One user's client: a single keep-alive connection, no proxies from the environment."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=10.0),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        trust_env=False,
    )


async def run_workload(
    base_url: str, workload: Workload, probe: Callable[[], float] | None = None
) -> WorkloadResult:
    """Warm every user's connection up (not measured), then run ``workload.requests``
    requests spread over ``workload.concurrency`` users. ``probe`` is read just before and
    just after the measured part."""
    probes = {"probe": probe} if probe else {}
    [result], probed = await run_together([base_url], [workload], probes)
    result.probed = probed.get("probe", 0.0)
    return result


async def run_together(
    base_urls: Sequence[str],
    workloads: Sequence[Workload],
    probes: Mapping[str, Callable[[], float]],
) -> tuple[list[WorkloadResult], dict[str, float]]:
    """``workloads[i]`` against ``base_urls[i]``, all at once: every user of every workload
    warms up first, then all start together. A result's ``wall_s`` runs from that common start
    to the end of its own last request; each probe is read just before the start and after
    the last request of all, and returned by name with how much it grew."""
    pairs = list(zip(base_urls, workloads, strict=True))
    clients = [[make_client(url) for _ in range(w.concurrency)] for url, w in pairs]
    try:
        await asyncio.gather(*(
            _warm_up(client, workload, workload.encoded_warmup())
            for users, workload in zip(clients, workloads, strict=True)
            for client in users
        ))  # fmt: skip
        before = {name: probe() for name, probe in probes.items()}
        started = time.perf_counter()

        async def run(users: list[httpx.AsyncClient], workload: Workload) -> WorkloadResult:
            result, sent, bodies = WorkloadResult(), [0], workload.encoded()
            await asyncio.gather(*(_user(c, workload, bodies, sent, result) for c in users))
            result.wall_s = time.perf_counter() - started
            return result

        results = await asyncio.gather(
            *(run(users, workload) for users, workload in zip(clients, workloads, strict=True))
        )
        grown = {name: probe() - before[name] for name, probe in probes.items()}
        return list(results), grown
    finally:
        await asyncio.gather(*(c.aclose() for users in clients for c in users))


async def run_interleaved(
    base_urls: list[str],
    workloads: list[Workload],
    probes: Sequence[Callable[[], float] | None] = (),
) -> list[WorkloadResult]:
    """One user per target (``workloads[i]`` against ``base_urls[i]``, concurrency 1), taking
    turns: the n-th request goes to every target before the next goes to any, the order
    rotating, so that a slow spell of the machine falls on every target alike and the added
    latency is measured between neighbouring requests. A result's ``wall_s`` is the sum of its
    own requests' times, and its ``probed`` the sum of ``probes[i]``'s growth over them."""
    meters = [*probes, *[None] * (len(workloads) - len(probes))]
    clients = [make_client(url) for url in base_urls]
    try:
        for client, workload in zip(clients, workloads, strict=True):
            await _warm_up(client, workload, workload.encoded_warmup())
        results = [WorkloadResult() for _ in workloads]
        bodies = [w.encoded() for w in workloads]
        turns = max(w.requests for w in workloads)
        for n in range(turns):
            shift = n % len(clients)
            for i in [*range(shift, len(clients)), *range(shift)]:
                if n >= workloads[i].requests:
                    continue
                content, stream = bodies[i][n % len(bodies[i])]
                probe = meters[i]
                before = probe() if probe else 0.0
                outcome = await send(clients[i], workloads[i].path, content, stream)
                if probe:
                    results[i].probed += probe() - before
                results[i].add(outcome)
                results[i].wall_s += outcome.latency
        return results
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


async def _warm_up(
    client: httpx.AsyncClient, workload: Workload, bodies: list[tuple[bytes, bool]]
) -> None:
    for n in range(workload.warmup_per_user):
        content, stream = bodies[n % len(bodies)]
        await send(client, workload.path, content, stream)


async def _user(
    client: httpx.AsyncClient,
    workload: Workload,
    bodies: list[tuple[bytes, bool]],
    sent: list[int],
    result: WorkloadResult,
) -> None:
    """Take the next request number until all are sent (the event loop runs one user at a
    time, so a plain counter is enough)."""
    while sent[0] < workload.requests:
        content, stream = bodies[sent[0] % len(bodies)]
        sent[0] += 1
        result.add(await send(client, workload.path, content, stream))


async def send(client: httpx.AsyncClient, path: str, content: bytes, stream: bool) -> Outcome:
    """One request, retried once when its pooled connection turns out closed before any
    answer."""
    outcome = Outcome()
    for attempt in range(2):
        outcome = Outcome(retried=attempt > 0)
        try:
            await _exchange(client, path, content, stream, outcome)
        except _NoAnswer:
            if attempt == 0:
                continue
            outcome.disconnect = "closed before any answer (twice)"
        break
    return outcome


class _NoAnswer(Exception):
    """The connection failed before the response's first byte."""


async def _exchange(
    client: httpx.AsyncClient, path: str, content: bytes, stream: bool, outcome: Outcome
) -> None:
    headers = {"content-type": "application/json"}
    started = time.perf_counter()
    answered = False
    try:
        request = client.build_request("POST", path, content=content, headers=headers)
        response = await client.send(request, stream=True)
        answered = True
        try:
            if response.status_code >= 400:
                await response.aread()
                outcome.error = f"http {response.status_code}"
                outcome.retry_after = response.headers.get("retry-after")
            elif stream:
                await _read_stream(response, started, outcome)
            else:
                body = await response.aread()
                if not any(key in body for key in ANSWER_KEYS):
                    outcome.error = "malformed answer"
        finally:
            await response.aclose()
    except httpx.TimeoutException as exc:
        outcome.error = f"timeout ({type(exc).__name__})"
    except STALE_CONNECTION as exc:
        if not answered:
            raise _NoAnswer from exc
        outcome.disconnect = _describe(exc)
    except httpx.HTTPError as exc:
        outcome.disconnect = _describe(exc) if answered else None
        outcome.error = None if answered else _describe(exc)
    outcome.latency = time.perf_counter() - started


async def _read_stream(response: httpx.Response, started: float, outcome: Outcome) -> None:
    scanner = SSEScanner()
    last_token: float | None = None
    done = False
    reported: int | None = None
    async for chunk in response.aiter_raw():
        now = time.perf_counter()
        for payload in scanner.feed(chunk):
            outcome.events += 1
            event = classify(payload)
            kind = event.kind
            reported = event.reported_tokens if event.reported_tokens is not None else reported
            if kind is EventKind.TOKEN:
                outcome.tokens += 1
                if last_token is None:
                    outcome.ttft = now - started
                else:
                    outcome.gaps.append(now - last_token)
                last_token = now
            elif kind is EventKind.ERROR:
                outcome.error = "error event"
            elif kind is EventKind.DONE:
                done = True
    if reported is not None:
        outcome.tokens = reported
    if not done and outcome.error is None:
        outcome.disconnect = "stream ended without [DONE]"


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
