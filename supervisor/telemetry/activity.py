"""The activity log: the gateway's last finished requests, for ``GET /api/v2/activity``, its
SSE follow and the console's Activity view; and the running totals the metrics history
(``history.py``) samples.

Every request but a GET, HEAD or OPTIONS is recorded, over both ways in, by the request
observer (``http/observer.py``). Recording is on the relay's hot path, so it stores cheap
values (an epoch float, ints, the meter's tuples) in a bounded ring and formats them (ISO
time, JSON) only when served; followers are only woken when there are some, each with a
bounded queue (a follower that falls behind misses entries rather than growing memory).
The prompt and completion text are kept only when ``activity_text`` is on
(``activity_text.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from supervisor.followed import FollowedRing
from supervisor.telemetry.activity_text import completion_text, prompt_text
from supervisor.telemetry.tokens import TokenMeter

UNRECORDED = frozenset({"GET", "HEAD", "OPTIONS"})  # reads: the console's polling is these
FOLLOWER_BACKLOG = 256  # entries a slow follower may fall behind before it misses some
MAX_FIRST_TOKENS = 10_000  # first-token times kept between two samples of the history


@dataclass(slots=True)
class RequestRecord:
    """What the routes tell the observer about one request on the ASGI way: the model it used
    (``note_model``), its answer's token meter, and, with ``activity_text`` on, its body."""

    model: str = ""
    meter: TokenMeter | None = None
    body: bytearray | None = None


class Finished(NamedTuple):
    """One entry, as recorded: plain values, formatted only when served (``as_json``)."""

    id: int
    started: float  # epoch seconds
    method: str
    route: str
    model: str
    status: int
    stream: bool
    tokens: tuple[int, int] | None  # (prompt, completion)
    generated: tuple[int, float] | None  # (tokens, milliseconds) from llama.cpp's timings
    first_token: float | None  # seconds from the start to a stream's first chunk
    seconds: float
    prompt: str | None = None
    completion: str | None = None

    def as_json(self, with_text: bool) -> dict[str, Any]:
        tokens, generated = self.tokens, self.generated
        speed = None
        if generated is not None and generated[1] > 0:
            speed = round(generated[0] * 1000 / generated[1], 2)
        entry: dict[str, Any] = {
            "id": self.id,
            "time": _iso_millis(self.started),
            "method": self.method,
            "route": self.route,
            "model": self.model or None,
            "status": self.status,
            "stream": self.stream,
            "prompt_tokens": tokens[0] if tokens else None,
            "completion_tokens": tokens[1] if tokens else None,
            "ttft_ms": round(self.first_token * 1000, 2) if self.first_token is not None else None,
            "tokens_per_second": speed,
            "duration_ms": round(self.seconds * 1000, 2),
        }
        if with_text:
            entry["prompt"] = self.prompt
            entry["completion"] = self.completion
        return entry


def _iso_millis(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC to the millisecond: ``2024-01-15T10:30:00.123Z``."""
    whole = int(ts)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((ts - whole) * 1000):03d}Z"
    )


@dataclass(slots=True)
class Totals:
    """Running totals since start, read by the history's sampler (it takes differences), and
    the first-token times since its last sample (``take_first_tokens``)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_tokens: list[float] | None = None

    def take_first_tokens(self) -> list[float]:
        taken, self.first_tokens = self.first_tokens or [], None
        return taken


class ActivityLog:
    """The ring of the last ``size`` finished requests, and their live followers. ``wall`` is
    the epoch clock an entry's start is read from."""

    def __init__(
        self, size: int = 500, *, keep_text: bool = False, wall: Callable[[], float] = time.time
    ) -> None:
        self.keep_text = keep_text
        self.totals = Totals()
        self._ring: FollowedRing[Finished] = FollowedRing(size, FOLLOWER_BACKLOG)  # 0: none kept
        self._wall = wall
        self._next_id = 1

    def record(
        self,
        method: str,
        route: str,
        model: str,
        status: int,
        seconds: float,
        first_token: float | None,
        stream: bool,
        meter: TokenMeter | None,
        body: bytes | bytearray | None = None,
    ) -> None:
        """A request finished after ``seconds``; ``meter`` counted its answer, if any;
        ``body`` is its request body where the way in kept it (read only with text on)."""
        tokens = meter.tokens if meter is not None else None
        entry = Finished(
            self._next_id, self._wall() - seconds, method, route, model, status, stream,
            tokens, meter.generated if meter is not None else None, first_token, seconds,
        )  # fmt: skip
        if self.keep_text:
            entry = entry._replace(
                prompt=prompt_text(bytes(body) if body else None),
                completion=completion_text(meter),
            )
        self._next_id += 1
        self._ring.append(entry)
        totals = self.totals
        totals.requests += 1
        if tokens is not None:
            totals.prompt_tokens += tokens[0]
            totals.completion_tokens += tokens[1]
        if first_token is not None and model:  # generations only, as /metrics times them
            if totals.first_tokens is None:
                totals.first_tokens = [first_token]
            elif len(totals.first_tokens) < MAX_FIRST_TOKENS:
                totals.first_tokens.append(first_token)

    def recent(self, count: int) -> list[Finished]:
        """The last ``count`` entries, oldest first."""
        return self._ring.recent(count)

    def follow(self) -> contextlib.AbstractContextManager[asyncio.Queue[Finished]]:
        """A queue that gets every entry recorded from now on, while the block runs."""
        return self._ring.follow()
