"""One download into a ``.part`` file: redirects followed by hand (each hop's address checked
again, and connected to as checked: ``source.pinned``), resumed with ``Range`` when the part is
there already (206 appends, 200 starts over), a connection cut mid-body retried a few times
from where it stopped. The sha256 is computed as bytes are written (a resumed part is hashed
first), so the file is read once.

A part is resumed only under the validator it was fetched with: the response's strong ETag,
else its Last-Modified, kept beside the part (``<part>.validator``) and sent back as
``If-Range``, so that a server whose file changed meanwhile sends it whole (200) rather than
the rest of another file; a part without a validator, or a 206 that names another, starts over.

Bytes are gathered on the event loop (the GGUF magic checked at the first ones, the size held
to ``pull_max_bytes`` as they come) and hashed and written ``FLUSH_BYTES`` at a time in a worker
thread, so the loop neither hashes nor hops to a thread per network chunk.

Refused early, before the bytes are wasted: a file larger than ``pull_max_bytes`` or than
the free disk (by its Content-Length), and a body that does not start with the GGUF magic.
A failure after the retries leaves the part where it is, so that the same pull resumes
later; ``service.py`` deletes it when the file itself is wrong."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx

from supervisor.clock import Clock, SystemClock
from supervisor.errors import PullFailed, SupervisorError
from supervisor.models.gguf import GGUF_MAGIC
from supervisor.models.pulls.source import (
    Resolver,
    check_host,
    pinned,
    proxied,
    resolve_host,
    shown_url,
)

LOG = logging.getLogger(__name__)
RETRIES = 3  # more tries after a cut connection, each resuming where the last stopped
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
TIMEOUT = httpx.Timeout(60.0, connect=15.0)
# No connection kept between requests: each hop connects to its own checked address, and a
# TLS connection made for one name is never reused for another on the same address.
LIMITS = httpx.Limits(max_keepalive_connections=0)
FLUSH_BYTES = 2 << 20  # bytes gathered before one hash-and-write in a worker thread
READ_CHUNK = 1 << 20  # a resumed part is hashed this much at a time
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT})

Report = Callable[[int, int | None], None]  # (bytes so far, total or None)


def disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


def open_part(path: Path, append: bool) -> BinaryIO:
    return path.open("ab" if append else "wb")


def validator_path(part: Path) -> Path:
    """Where the validator a part was fetched under is kept."""
    return part.with_name(part.name + ".validator")


def validator_of(response: httpx.Response) -> str | None:
    """What ``If-Range`` may send back for ``response``: its strong ETag, else its
    Last-Modified (a weak ETag cannot be used for ranges); None for neither, or for one
    not in ASCII (a header it could not send back)."""
    etag = str(response.headers.get("etag", ""))
    if etag and not etag.startswith("W/") and etag.isascii():
        return etag
    modified = str(response.headers.get("last-modified", ""))
    return modified if modified and modified.isascii() else None


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
    """One download of ``target.url`` into ``target.part`` (``run``). ``stop`` is set when
    ``run`` ends, however it ends (cancelled too): a worker thread still hashing the part
    stops at its next chunk rather than reading on for nobody."""

    def __init__(
        self,
        target: Target,
        report: Report,
        tools: PullTools,
        stop: threading.Event | None = None,
    ) -> None:
        self._target = target
        self._report = report
        self._tools = tools
        self._stop = stop or threading.Event()
        self._hasher = hashlib.sha256()
        self._size = 0
        self._total: int | None = None
        self._head = b""  # the file's first bytes, until the magic is checked
        self._validator: str | None = None  # the ETag or Last-Modified the part is from

    async def run(self) -> Fetched:
        try:
            await asyncio.to_thread(self._hash_existing)
            return await self._tries()
        finally:
            self._stop.set()

    async def _tries(self) -> Fetched:
        wait = self._tools.retry_wait_s
        transport = self._tools.transport
        async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT, limits=LIMITS) as client:
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
        """Hash the part a former pull left, to resume after it: only when the validator it
        was fetched under is beside it (else the download starts over)."""
        try:
            self._validator = validator_path(self._target.part).read_text().strip() or None
        except FileNotFoundError:
            self._validator = None
        if self._validator is None:
            return
        try:
            handle = self._target.part.open("rb")
        except FileNotFoundError:
            return
        with handle:
            while chunk := handle.read(READ_CHUNK):
                if self._stop.is_set():
                    raise PullFailed("cancelled", "the pull was stopped")
                self._check_magic(chunk)
                self._hasher.update(chunk)
                self._size += len(chunk)

    def _check_magic(self, chunk: bytes) -> None:
        if len(self._head) < len(GGUF_MAGIC):
            self._head += chunk[: len(GGUF_MAGIC) - len(self._head)]
            if len(self._head) == len(GGUF_MAGIC) and self._head != GGUF_MAGIC:
                raise PullFailed("not_gguf", "the file is not a GGUF model (bad magic)")

    def _start_over(self) -> None:
        self._hasher, self._size, self._head = hashlib.sha256(), 0, b""
        self._validator = None

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
        as long as the file, or longer) or a 206 of another version starts over."""
        url = self._target.url
        for _ in range(MAX_REDIRECTS + 1):
            addresses = await self._check_hop(url)
            if self._size and self._validator is None:
                self._start_over()  # nothing to tell that the rest is of the same file
            headers = {"Accept-Encoding": "identity"}
            if self._size and self._validator is not None:
                headers["Range"] = f"bytes={self._size}-"
                headers["If-Range"] = self._validator
            response = await self._send(client, url, headers, addresses)
            if self._size and (response.status_code == 416 or self._other_version(response)):
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

    async def _send(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        addresses: list[str] | None,
    ) -> httpx.Response:
        """``GET url`` from the first of the checked ``addresses`` that takes the connection
        (as the system's resolver orders them: IPv6 first where it is preferred); from
        ``url``'s host as it resolves when nothing was checked."""
        choices: list[str | None] = list(addresses) if addresses else [None]
        for address in choices[:-1]:
            try:
                return await client.send(self._request(client, url, headers, address), stream=True)
            except httpx.ConnectError:
                continue
        return await client.send(self._request(client, url, headers, choices[-1]), stream=True)

    @staticmethod
    def _request(
        client: httpx.AsyncClient, url: str, headers: dict[str, str], address: str | None
    ) -> httpx.Request:
        pin = pinned(url, address)
        return client.build_request("GET", pin.url, headers=headers | pin.headers,
                                    extensions=pin.extensions)  # fmt: skip

    def _other_version(self, response: httpx.Response) -> bool:
        """A 206 whose validator is not the part's: a server that ignored ``If-Range``."""
        current = validator_of(response)
        return response.status_code == 206 and current is not None and current != self._validator

    async def _check_hop(self, url: str) -> list[str] | None:
        """The addresses to connect to, checked; None to leave the name to resolve (nothing
        checked, or a proxy from the environment connects: httpx uses those only with its
        own transport)."""
        try:
            addresses = await check_host(url, self._tools.resolver, self._target.allow_private)
        except SupervisorError as exc:
            raise PullFailed("download_failed", f"{shown_url(url)}: {exc.message}") from exc
        return None if self._tools.transport is None and proxied(url) else addresses

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
        self._validator = validator_of(response)
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
        """The body into the part. Starting over, the old validator goes before the part is
        emptied and the new one is written after: a part never sits beside a validator that
        is not its own."""
        sidecar = validator_path(self._target.part)
        try:
            if not append:
                await asyncio.to_thread(sidecar.unlink, missing_ok=True)
            with self._tools.open_part(self._target.part, append) as handle:
                if not append and self._validator is not None:
                    await asyncio.to_thread(sidecar.write_text, self._validator)
                await self._write_body(response, handle)
        except OSError as exc:
            if exc.errno in DISK_ERRORS:
                raise PullFailed("disk_full", "the disk is full") from exc
            raise PullFailed("download_failed", f"cannot write: {exc.strerror}") from exc

    async def _write_body(self, response: httpx.Response, handle: BinaryIO) -> None:
        pending: list[bytes] = []
        held = 0
        try:
            async for chunk in response.aiter_raw():
                self._check_magic(chunk)
                self._size += len(chunk)
                if self._size > self._target.max_bytes:
                    raise PullFailed("too_large", _too_large(self._size, self._target.max_bytes))
                pending.append(chunk)
                held += len(chunk)
                if held >= FLUSH_BYTES:
                    batch, pending, held = pending, [], 0  # the thread's alone from here
                    await asyncio.to_thread(self._hash_and_write, handle, batch)
                self._report(self._size, self._total)
        except (httpx.TransportError, asyncio.CancelledError):
            # What came before a cut, or before the gateway shut down, is kept: the next try
            # or the next pull resumes after it.
            await asyncio.to_thread(self._hash_and_write, handle, pending)
            raise
        await asyncio.to_thread(self._hash_and_write, handle, pending)

    def _hash_and_write(self, handle: BinaryIO, chunks: list[bytes]) -> None:
        if not chunks:
            return
        data = b"".join(chunks)
        self._hasher.update(data)
        handle.write(data)


def discard_part(part: Path) -> None:
    """Delete a part and its validator. A failure to is logged, never raised: it must not
    keep a pull from reporting how it ended."""
    for path in (part, validator_path(part)):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            LOG.warning("cannot delete the partial file %s: %s", path.name, exc.strerror)


def _too_large(size: int, limit: int) -> str:
    return f"the file has {size} bytes or more, over pull_max_bytes ({limit})"


def _reason(exc: httpx.TransportError) -> str:
    """A transport error in words, without its URL (which may carry credentials)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
