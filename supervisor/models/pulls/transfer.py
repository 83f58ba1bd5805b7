"""One download into a ``.part`` file: redirects followed by hand (each hop's address checked
again), resumed with ``Range`` when the part is there already (206 appends, 200 starts
over), a connection cut mid-body retried a few times from where it stopped. The sha256 is
computed as bytes are written (a resumed part is hashed first), so the file is read once.

Refused early, before the bytes are wasted: a file larger than ``pull_max_bytes`` or than
the free disk (by its Content-Length), and a body that does not start with the GGUF magic.
A failure after the retries leaves the part where it is, so that the same pull resumes
later; ``service.py`` deletes it when the file itself is wrong."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx

from supervisor.clock import Clock, SystemClock
from supervisor.errors import PullFailed, SupervisorError
from supervisor.models.gguf import GGUF_MAGIC
from supervisor.models.pulls.source import Resolver, check_host, resolve_host, shown_url

RETRIES = 3  # more tries after a cut connection, each resuming where the last stopped
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
TIMEOUT = httpx.Timeout(60.0, connect=15.0)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT})

Report = Callable[[int, int | None], None]  # (bytes so far, total or None)


def disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


def open_part(path: Path, append: bool) -> BinaryIO:
    return path.open("ab" if append else "wb")


@dataclass(frozen=True)
class PullTools:
    """What a pull reaches the world through: swapped by tests for faults (a transport, a
    resolver, a full disk, a write that fails) and fake time."""

    transport: httpx.AsyncBaseTransport | None = None
    resolver: Resolver = resolve_host
    disk_free: Callable[[Path], int] = disk_free
    open_part: Callable[[Path, bool], BinaryIO] = open_part
    clock: Clock = field(default_factory=SystemClock)
    retry_wait_s: float = 1.0  # doubled after each failed try


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str


@dataclass(frozen=True)
class Target:
    url: str  # as fetched (credentials and all)
    part: Path
    max_bytes: int
    allow_private: bool


class Download:
    """One download of ``target.url`` into ``target.part`` (``run``)."""

    def __init__(self, target: Target, report: Report, tools: PullTools) -> None:
        self._target = target
        self._report = report
        self._tools = tools
        self._hasher = hashlib.sha256()
        self._size = 0
        self._total: int | None = None
        self._head = b""  # the file's first bytes, until the magic is checked

    async def run(self) -> Fetched:
        await asyncio.to_thread(self._hash_existing)
        wait = self._tools.retry_wait_s
        async with httpx.AsyncClient(transport=self._tools.transport, timeout=TIMEOUT) as client:
            for attempt in range(RETRIES + 1):
                try:
                    await self._attempt(client)
                    return Fetched(self._size, self._hasher.hexdigest())
                except httpx.TransportError as exc:  # refused, cut, timed out
                    if attempt == RETRIES:
                        raise PullFailed(
                            "download_failed",
                            f"{_reason(exc)} after {RETRIES + 1} tries; the partial file is kept "
                            "and pulling the same URL again resumes it",
                        ) from exc
                await self._tools.clock.sleep(wait)
                wait *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _hash_existing(self) -> None:
        """Hash the part a former pull left, to resume after it."""
        try:
            handle = self._target.part.open("rb")
        except FileNotFoundError:
            return
        with handle:
            while chunk := handle.read(1 << 20):
                self._take(chunk)

    def _take(self, chunk: bytes) -> None:
        self._hasher.update(chunk)
        self._size += len(chunk)
        if len(self._head) < len(GGUF_MAGIC):
            self._head += chunk[: len(GGUF_MAGIC) - len(self._head)]
            if len(self._head) == len(GGUF_MAGIC) and self._head != GGUF_MAGIC:
                raise PullFailed("not_gguf", "the file is not a GGUF model (bad magic)")

    def _start_over(self) -> None:
        self._hasher, self._size, self._head = hashlib.sha256(), 0, b""

    async def _attempt(self, client: httpx.AsyncClient) -> None:
        response = await self._open(client)
        try:
            self._total = self._accept(response)
            self._check_room(self._total)
            self._report(self._size, self._total)
            await self._receive(response, append=self._size > 0)
        finally:
            await response.aclose()

    async def _open(self, client: httpx.AsyncClient) -> httpx.Response:
        """The file's response, redirects followed; an unsatisfiable range (the part is
        as long as the file, or longer) starts over."""
        url = self._target.url
        for _ in range(MAX_REDIRECTS + 1):
            await self._check_hop(url)
            headers = {"Accept-Encoding": "identity"}
            if self._size:
                headers["Range"] = f"bytes={self._size}-"
            response = await client.send(client.build_request("GET", url, headers=headers),
                                          stream=True)  # fmt: skip
            if response.status_code == 416 and self._size:
                await response.aclose()
                self._start_over()
                continue
            if response.status_code not in REDIRECTS:
                return response
            location = response.headers.get("location")
            await response.aclose()
            if not location:
                raise PullFailed("download_failed", "a redirect without a Location")
            url = str(httpx.URL(url).join(location))
        raise PullFailed("download_failed", f"more than {MAX_REDIRECTS} redirects")

    async def _check_hop(self, url: str) -> None:
        try:
            await check_host(url, self._tools.resolver, self._target.allow_private)
        except SupervisorError as exc:
            raise PullFailed("download_failed", f"{shown_url(url)}: {exc.message}") from exc

    def _accept(self, response: httpx.Response) -> int | None:
        """The whole file's size, if known; whether the body appends to the part is decided
        here: a 206 from where the part ends appends, anything else starts over."""
        status = response.status_code
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
            if match and int(match.group(1)) == self._size:
                return int(match.group(2)) if match.group(2) != "*" else None
            raise PullFailed("download_failed", "the server sent a range that was not asked")
        if status != 200:
            raise PullFailed("download_failed", f"the server answered {status}")
        self._start_over()
        length = response.headers.get("content-length", "")
        return int(length) if length.isdigit() else None

    def _check_room(self, total: int | None) -> None:
        if total is None:
            return
        if total > self._target.max_bytes:
            raise PullFailed("too_large", _too_large(total, self._target.max_bytes))
        needed, free = total - self._size, self._tools.disk_free(self._target.part.parent)
        if needed > free:
            raise PullFailed("disk_full", f"{needed} bytes to fetch, {free} free on the disk")

    async def _receive(self, response: httpx.Response, append: bool) -> None:
        try:
            with self._tools.open_part(self._target.part, append) as handle:
                async for chunk in response.aiter_raw():
                    self._take(chunk)
                    if self._size > self._target.max_bytes:
                        limit = self._target.max_bytes
                        raise PullFailed("too_large", _too_large(self._size, limit))
                    await asyncio.to_thread(handle.write, chunk)
                    self._report(self._size, self._total)
        except OSError as exc:
            if exc.errno in DISK_ERRORS:
                raise PullFailed("disk_full", "the disk is full") from exc
            raise PullFailed("download_failed", f"cannot write: {exc.strerror}") from exc


def _too_large(size: int, limit: int) -> str:
    return f"the file has {size} bytes or more, over pull_max_bytes ({limit})"


def _reason(exc: httpx.TransportError) -> str:
    """A transport error in words, without its URL (which may carry credentials)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
