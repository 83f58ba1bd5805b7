"""One peer's health: its state, the latency and time of its last check, the models it
serves, and its requests in flight.

A check is ``GET {url}/v1/models`` (with the peer's key), bounded by the peer timeout. One
failed check marks the peer down (a refused connection answers at once, so there is nothing
to gain by waiting for a second); the next good one brings it back up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from supervisor.clock import Clock
from supervisor.config import PeerSettings
from supervisor.peers.model import PeerModel
from supervisor.peers.target import PeerTarget

PeerState = Literal["unknown", "up", "down"]
MAX_ERROR_CHARS = 200  # a peer's error page may be long; the listing shows its start


class CheckFailed(Exception):
    """A check's answer that is not a model list, worded for ``last_error``."""


class Peer:
    """A configured peer and what its checks found. ``models`` are the remote ids it serves:
    what its last good check listed (kept while it is down, so that its models answer 503
    rather than 404), filtered by the configured ``models``; before any good check, the
    configured ones."""

    def __init__(self, settings: PeerSettings) -> None:
        self.settings = settings
        self.state: PeerState = "unknown"
        self.latency_ms: float | None = None
        self.last_error: str | None = None
        self.checked_at: float | None = None  # epoch seconds
        self._listed: tuple[str, ...] | None = None  # the last good check's ids
        self._targets: dict[PeerModel, PeerTarget] = {}

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def base_url(self) -> str:
        return self.settings.url.rstrip("/")

    @property
    def api_key(self) -> str | None:
        key = self.settings.api_key
        return key.get_secret_value() if key is not None else None

    @property
    def up(self) -> bool:
        return self.state == "up"

    @property
    def models(self) -> list[str]:
        configured = self.settings.models
        wanted = None if configured is None else list(dict.fromkeys(configured))  # no repeats
        if self._listed is None:
            return wanted or []
        if wanted is None:
            return list(self._listed)
        return [model for model in wanted if model in self._listed]

    @property
    def in_flight(self) -> int:
        return sum(target.in_flight for target in self._targets.values())

    def target(self, model: PeerModel) -> PeerTarget:
        """The target requests for ``model`` are leased on (one per model, kept)."""
        target = self._targets.get(model)
        if target is None:
            target = self._targets[model] = PeerTarget(model, self.base_url, self.api_key)
        return target

    def listing(self) -> dict[str, Any]:
        """This peer in ``GET /v1/peers``: never its key."""
        return {
            "name": self.name,
            "url": shown_url(self.base_url),
            "state": self.state,
            "latency_ms": self.latency_ms,
            "models": self.models,
            "spillover": self.settings.spillover,
            "in_flight": self.in_flight,
            "checked_at": self.checked_at,
            "last_error": self.last_error,
        }

    async def check(
        self,
        client: httpx.AsyncClient,
        timeout: float,
        clock: Clock,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """Ask the peer for its models, within ``timeout`` seconds, and note what it said."""
        started = clock.monotonic()
        try:
            async with asyncio.timeout(timeout):
                listed = await self._ask(client, timeout)
        except (httpx.HTTPError, CheckFailed, TimeoutError) as exc:
            self.state, self.last_error = "down", describe(exc, timeout)
        else:
            self.state, self.last_error, self._listed = "up", None, listed
        self.latency_ms = round((clock.monotonic() - started) * 1000, 2)
        self.checked_at = wall()

    async def _ask(self, client: httpx.AsyncClient, timeout: float) -> tuple[str, ...]:
        key = self.api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = await client.get(f"{self.base_url}/v1/models", headers=headers, timeout=timeout)
        if response.status_code != 200:
            raise CheckFailed(f"GET /v1/models answered {response.status_code}")
        try:
            return model_ids(response.json())
        except ValueError as exc:
            raise CheckFailed(f"GET /v1/models answered no model list ({exc})") from exc


def model_ids(answer: object) -> tuple[str, ...]:
    """The ids of an OpenAI model list (``{"data": [{"id": …}, …]}``); ValueError if it is
    not one."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list):
        raise ValueError("no 'data' list")
    ids = [item.get("id") if isinstance(item, dict) else None for item in data]
    if not all(isinstance(model, str) and model for model in ids):
        raise ValueError("a model without an id")
    return tuple(dict.fromkeys(str(model) for model in ids))


def describe(exc: BaseException, timeout: float) -> str:
    """A failed check in a few words: the reason, never the key (it travels in a header,
    which httpx's messages do not repeat)."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"no answer within {timeout:g}s"
    text = str(exc) or type(exc).__name__
    return text[:MAX_ERROR_CHARS]


def shown_url(url: str) -> str:
    """``url`` without a user and password, should the configuration hold any."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
