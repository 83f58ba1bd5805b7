"""``Pulls``: the gateway's running pulls and its imports, one service per app.

Each pull is a task of the service's, not of the request that started it: a client that goes
away leaves it running (``GET /api/v2/models/pulls`` lists it, ``DELETE`` cancels it), and any
number of followers read its events (``progress.Pull.follow``). At most one pull or import
writes a given file name at a time. A pull's partial file lives in ``<cache_dir>/pulls/``,
named from its URL and file name, so that the same pull started again resumes it; it is
deleted when the file turns out wrong (too large, not GGUF, a checksum mismatch), the pull is
cancelled, its name was taken meanwhile, or the gateway failed unexpectedly; kept after a
network failure (retried a few times first) or when the gateway shuts down (``close`` stops
the pulls still running), so that pulling again resumes it. However a pull ends, its
followers read how (``Pull.finish`` runs in a ``finally``).

A file once placed in the models directory stays: it is whole and validated, and the rescan
that serves it is a separate step. A rescan that fails then (a scan error, a model that cannot
be applied) is logged and the pull or import still reports done, its ``model`` the file's name;
the next reload serves it. Deleting a good file, perhaps many gigabytes pulled, for a fault
that is not its own would only make the operator fetch it again."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.config import Settings
from supervisor.errors import Conflict, NotFound, PullFailed, ShuttingDown, SupervisorError
from supervisor.models.catalog import Catalog
from supervisor.models.pulls import install
from supervisor.models.pulls.imports import import_source, unreadable
from supervisor.models.pulls.names import checked_name
from supervisor.models.pulls.progress import Pull, PullEvent
from supervisor.models.pulls.request import ImportRequest, PullRequest
from supervisor.models.pulls.source import check_host, shown_url
from supervisor.models.pulls.transfer import Download, Fetched, PullTools, Target, discard_part
from supervisor.models.registry import ModelEntry
from supervisor.redact import redact_paths

LOG = logging.getLogger(__name__)
Rescan = Callable[[], Awaitable[list[ModelEntry]]]


@dataclass(frozen=True)
class Brought:
    """A model brought in: the id it is served under, its file, size and sha256."""

    model: str
    file: str
    bytes: int
    sha256: str


class Pulls:
    def __init__(
        self,
        settings: Callable[[], Settings],
        catalog: Catalog,
        rescan: Rescan,
        tools: PullTools | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings  # those in force: a reload's apply to the next pull
        self._catalog = catalog
        self._rescan = rescan
        self._tools = tools or PullTools()
        self._now = now
        self._running: dict[str, tuple[Pull, asyncio.Task[None]]] = {}
        self._writing: set[str] = set()  # file names a pull or import is bringing in
        self._installing: set[str] = set()  # pull ids past the point of cancelling
        self._closing = False
        self._imports: set[asyncio.Task[Brought]] = set()
        self._stop = threading.Event()  # set on close: an import's copy stops between chunks

    def list(self) -> list[Pull]:
        return [pull for pull, _ in self._running.values()]

    async def start(self, request: PullRequest) -> Pull:
        """Start pulling: refused at once (409, 403, 400) when the file exists or is being
        brought in, or the URL's host is not allowed; 503 once the gateway shuts down; else
        the running pull."""
        if self._closing:
            raise ShuttingDown("the gateway is shutting down")
        settings = self._settings()
        self._reserve(request.file, settings)
        try:
            await check_host(request.url, self._tools.resolver, settings.pull_allow_private)
        except BaseException:
            self._writing.discard(request.file)
            raise
        pull_id = f"pull-{secrets.token_hex(6)}"
        pull = Pull(pull_id, shown_url(request.url), request.file, self._now(), self._tools.clock)
        task = asyncio.create_task(self._run(pull, request, settings), name=pull_id)
        self._running[pull_id] = (pull, task)
        return pull

    async def cancel(self, pull_id: str) -> None:
        """Stop a running pull and delete its partial file; 404 if none runs by that id,
        409 once it is being installed (it will be served in a moment)."""
        running = self._running.get(pull_id)
        if running is None:
            raise NotFound(f"no running pull {pull_id}", param="pull_id")
        if pull_id in self._installing:
            raise Conflict(f"pull {pull_id} is being installed and cannot be cancelled now")
        running[1].cancel()
        await asyncio.wait([running[1]])

    async def import_file(self, request: ImportRequest) -> Brought:
        """Copy a file from ``import_dirs`` into the first models directory, checked as a
        pulled file is; served at once. The copy is the service's task: a client that goes
        leaves it to finish, rather than a copy running on in a thread with nobody to tidy
        after it."""
        if self._closing:
            raise ShuttingDown("the gateway is shutting down")
        task = asyncio.create_task(self._import(request))
        self._imports.add(task)
        task.add_done_callback(self._imports.discard)
        return await asyncio.shield(task)

    async def _import(self, request: ImportRequest) -> Brought:
        settings = self._settings()
        source = import_source(settings.import_dirs, request.path)
        name = checked_name(request.file or Path(request.path).name,
                            "file" if request.file else "path")  # fmt: skip
        models_dir = self._reserve(name, settings)
        try:
            try:
                size = source.stat().st_size
            except OSError as exc:
                raise unreadable(exc, request.path) from exc
            free = self._tools.disk_free(models_dir)
            if size > settings.pull_max_bytes:
                raise PullFailed("too_large", f"{size} bytes, over pull_max_bytes")
            if size > free:
                raise PullFailed("disk_full", f"{size} bytes to copy, {free} free")
            hidden, fetched = await asyncio.to_thread(
                install.hidden_copy, source, models_dir, name, settings.pull_max_bytes, self._stop,
                request.path,
            )  # fmt: skip
            try:
                await asyncio.to_thread(install.validate, hidden, fetched, request.sha256)
            except BaseException:
                hidden.unlink(missing_ok=True)
                raise
            await asyncio.to_thread(install.place, hidden, models_dir / name)
        finally:
            self._writing.discard(name)
        return await self._served(models_dir / name, fetched)

    async def close(self) -> None:
        """Stop the running pulls, keeping their partial files: the same pulls resume them
        once the gateway is back."""
        self._closing = True
        self._stop.set()
        for _, task in self._running.values():
            task.cancel()
        tasks: list[asyncio.Task[Any]] = [task for _, task in self._running.values()]
        tasks += self._imports
        if tasks:
            await asyncio.wait(tasks)

    def sweep(self) -> None:
        """At start: remove the hidden copies (``install.HIDDEN_COPY``) a gateway killed
        mid-copy left in the first models directory. Names of that pattern only: nothing else
        there is touched."""
        folders = self._settings().models_dirs
        if folders:
            removed = install.sweep(folders[0].expanduser())
            if removed:
                LOG.info("removed unfinished copies from the models directory: %s", removed)

    def _reserve(self, name: str, settings: Settings) -> Path:
        """Reserve ``name`` in the first models directory (made if missing), which is
        returned; 409 if a file or a served model has the name, or it is reserved already.
        The caller frees it (``_writing.discard``) when done."""
        if name in self._writing:
            raise Conflict(f"{name} is being pulled or imported now", param="file")
        stem = name.rsplit(".", 1)[0]
        if any({name, stem} & set(entry.names) for entry in self._catalog.entries()):
            raise Conflict(f"a model named {name} is served already", param="file")
        models_dir = _models_dir(settings)
        models_dir.mkdir(parents=True, exist_ok=True)
        install.check_free(models_dir, name)
        self._writing.add(name)
        return models_dir

    async def _run(self, pull: Pull, request: PullRequest, settings: Settings) -> None:
        part = _part_path(settings, request)
        ended = _error(pull, "download_failed", "internal error in the gateway")
        try:
            ended = await self._bring(pull, request, settings, part)
        except asyncio.CancelledError:
            if self._closing:
                ended = _error(pull, "cancelled", "the gateway shut down; pulling the same URL "
                               "again resumes")  # fmt: skip
            else:
                discard_part(part)
                ended = _error(pull, "cancelled", "the pull was cancelled")
        except PullFailed as exc:
            if exc.kind != "download_failed":  # kept to resume after a network failure
                discard_part(part)
            ended = _error(pull, exc.kind, redact_paths(exc.message))
        except SupervisorError as exc:  # the name taken meanwhile (a file copied in by hand)
            discard_part(part)
            ended = _error(pull, "download_failed", redact_paths(exc.message))
        except Exception:
            LOG.exception("pull %s of %s failed", pull.id, pull.url)
            discard_part(part)
        finally:
            self._writing.discard(request.file)
            self._installing.discard(pull.id)
            self._running.pop(pull.id, None)
            pull.finish(ended)  # whatever happened above: followers and waiters must hear

    async def _bring(
        self, pull: Pull, request: PullRequest, settings: Settings, part: Path
    ) -> PullEvent:
        """Fetch, validate, move in and serve: the done event."""
        target = _models_dir(settings) / request.file
        fetched = await self._fetch(pull, request, settings, part)
        self._installing.add(pull.id)
        await asyncio.to_thread(install.move_in, part, target, self._tools.disk_free,
                                self._stop)  # fmt: skip
        discard_part(part)  # its validator (the part itself is moved)
        return _done(pull, await self._served(target, fetched))

    async def _fetch(
        self, pull: Pull, request: PullRequest, settings: Settings, part: Path
    ) -> Fetched:
        """The file, downloaded whole into ``part`` and validated."""
        part.parent.mkdir(parents=True, exist_ok=True)
        target = Target(request.url, part, settings.pull_max_bytes, settings.pull_allow_private)
        fetched = await Download(target, pull.advance, self._tools).run()
        pull.enter("verifying")
        await asyncio.to_thread(install.validate, part, fetched, request.sha256)
        pull.enter("installing")
        return fetched

    async def _served(self, path: Path, fetched: Fetched) -> Brought:
        """Rescan, so that the file is served at once; the id it is served under. The file is
        in place: a rescan that fails is logged, and the answer names the file instead."""
        try:
            entries = await self._rescan()
        except Exception as exc:
            reason = exc.message if isinstance(exc, SupervisorError) else type(exc).__name__
            LOG.error("%s is in the models directory, but the rescan failed: %s; the next "
                      "reload serves it", path.name, redact_paths(reason))  # fmt: skip
            return Brought(path.name, path.name, fetched.size, fetched.sha256)
        resolved = await asyncio.to_thread(path.resolve)
        model = next((e.id for e in entries if e.path == resolved), path.stem)
        return Brought(model, path.name, fetched.size, fetched.sha256)


def _models_dir(settings: Settings) -> Path:
    """The first models directory, where pulls and imports go; a 409 when none is set."""
    if not settings.models_dirs:
        raise Conflict("no models directory configured: set models_dirs to pull or import")
    return settings.models_dirs[0].expanduser()


def _part_path(settings: Settings, request: PullRequest) -> Path:
    """Where a pull of this URL into this file keeps its partial download."""
    key = hashlib.sha256(f"{request.url}\n{request.file}".encode()).hexdigest()[:32]
    return settings.cache_dir.expanduser() / "pulls" / f"{key}.part"


def _done(pull: Pull, brought: Brought) -> PullEvent:
    data = {"id": pull.id, "file": pull.file, "model": brought.model, "bytes": brought.bytes,
            "sha256": brought.sha256}  # fmt: skip
    return PullEvent("done", data)


def _error(pull: Pull, kind: str, message: str) -> PullEvent:
    return PullEvent("error", {"id": pull.id, "file": pull.file,
                               "error": {"type": kind, "message": message}})  # fmt: skip
