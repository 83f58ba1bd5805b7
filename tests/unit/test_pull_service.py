"""The ``Pulls`` service on its own, over an injected transport (one whose body stalls after its
first bytes, or one that serves the whole file): shutting down stops a pull but keeps its
partial file (pulling again resumes); a cancel deletes it; a draining gateway ends a pull's
stream at once and a waiting import's answer; a rescan that fails after the file is placed
still reports done; a part that cannot be deleted still ends the pull; a name taken meanwhile
or an unexpected failure leaves no part; and the rescan's scan runs off the loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO, cast

import httpx
import pytest
from fake_clock import settle
from served import gateway_settings

from supervisor.errors import ConfigError, Conflict, ShuttingDown
from supervisor.models.catalog import Catalog
from supervisor.models.pulls.progress import PullEvent
from supervisor.models.pulls.request import ImportRequest, PullRequest
from supervisor.models.pulls.service import Pulls
from supervisor.models.pulls.transfer import PullTools, open_part
from supervisor.models.registry import ModelEntry, Registry
from supervisor.reload import Reloader
from supervisor.surfaces.openai.imports import pull_outcome
from supervisor.surfaces.pull_stream import _events

MakeGGUF = Callable[..., Path]
URL = "http://mirror.lan/m.gguf"


def stalling_pulls(tmp_path: Path, content: bytes) -> Pulls:
    """A service whose downloads send ``content``'s first 1000 bytes, then nothing."""

    async def body() -> AsyncIterator[bytes]:
        yield content[:1000]
        await asyncio.Event().wait()
        yield b""  # pragma: no cover

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body(), headers={"Content-Length": str(len(content))})

    settings = gateway_settings(tmp_path, cache_dir=tmp_path / "cache", pull_allow_private=True)
    registry = Registry(settings)
    catalog = Catalog(registry, settings, lambda: [])

    async def rescan() -> list[ModelEntry]:
        return registry.scan()

    tools = PullTools(transport=httpx.MockTransport(handler), retry_wait_s=0)
    return Pulls(lambda: settings, catalog, rescan, tools)


def parts(tmp_path: Path) -> list[int]:
    return [p.stat().st_size for p in (tmp_path / "cache" / "pulls").iterdir()]


def serving_pulls(
    tmp_path: Path,
    content: bytes,
    rescan: Callable[[], Awaitable[list[ModelEntry]]] | None = None,
    before: Callable[[], None] = lambda: None,
    **overrides: Any,
) -> Pulls:
    """A service whose downloads get ``content`` whole (``before`` runs as each is asked)."""

    async def body() -> AsyncIterator[bytes]:
        yield content  # streamed, as a real server's body is

    def handler(request: httpx.Request) -> httpx.Response:
        before()
        return httpx.Response(200, content=body(), headers={"ETag": '"v1"'})

    opener = overrides.pop("open_part", open_part)
    settings = gateway_settings(
        tmp_path, **({"cache_dir": tmp_path / "cache", "pull_allow_private": True} | overrides)
    )
    registry = Registry(settings)
    catalog = Catalog(registry, settings, lambda: [])

    async def scan() -> list[ModelEntry]:
        return registry.scan()

    tools = PullTools(transport=httpx.MockTransport(handler), retry_wait_s=0, open_part=opener)
    return Pulls(lambda: settings, catalog, rescan or scan, tools)


async def failing_rescan() -> list[ModelEntry]:
    raise ConfigError("cannot read /srv/secret/models: permission denied")


def test_shutdown_stops_a_pull_and_keeps_its_part(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    content = make_gguf("m.gguf", tensor_shape=(64, 64)).read_bytes()

    async def run() -> dict[str, object]:
        pulls = stalling_pulls(tmp_path, content)
        pull = await pulls.start(PullRequest(URL, "m.gguf", None))
        while pull.bytes < 1000:
            await settle()
        await pulls.close()
        assert pulls.list() == []
        return (await pull.wait()).data

    data = asyncio.run(run())
    message = "the gateway shut down; pulling the same URL again resumes"
    assert data["error"] == {"type": "cancelled", "message": message}
    assert parts(tmp_path) == [1000]
    assert not (tmp_path / "models" / "m.gguf").exists()


def test_cancel_deletes_the_part(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    content = make_gguf("m.gguf", tensor_shape=(64, 64)).read_bytes()

    async def run() -> None:
        pulls = stalling_pulls(tmp_path, content)
        pull = await pulls.start(PullRequest(URL, "m.gguf", None))
        while pull.bytes < 1000:
            await settle()
        await pulls.cancel(pull.id)
        assert (await pull.wait()).data["error"]["type"] == "cancelled"

    asyncio.run(run())
    assert parts(tmp_path) == []


def test_a_draining_gateway_ends_the_stream(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    content = make_gguf("m.gguf", tensor_shape=(64, 64)).read_bytes()

    async def run() -> list[bytes]:
        pulls = stalling_pulls(tmp_path, content)
        pull = await pulls.start(PullRequest(URL, "m.gguf", None))
        stopping = asyncio.Event()
        read: list[bytes] = []

        async def follow() -> None:
            async for chunk in _events(pull, stopping):
                read.append(chunk)

        reader = asyncio.create_task(follow())
        while pull.bytes < 1000:
            await settle()
        await settle()
        stopping.set()
        await reader
        assert [p.id for p in pulls.list()] == [pull.id]  # the stream ended, not the pull
        await pulls.close()
        return read

    read = asyncio.run(run())
    assert read[0].startswith(b"event: progress\n")
    assert read[-1].startswith(b"event: error\n") and b"shutting down" in read[-1]


def test_a_failed_rescan_after_the_file_is_placed_still_reports_done(
    tmp_path: Path, make_gguf: MakeGGUF, caplog: pytest.LogCaptureFixture
) -> None:
    """The file is whole, validated and in place: it stays, and the pull and the import say
    done, naming the file (the next reload serves it)."""
    content = make_gguf("m.gguf", tensor_shape=(64, 64)).read_bytes()
    make_gguf("card/c.gguf")

    async def run() -> tuple[PullEvent, Any]:
        pulls = serving_pulls(tmp_path, content, failing_rescan, import_dirs=[tmp_path / "card"])
        pull = await pulls.start(PullRequest(URL, "m.gguf", None))
        ended = await pull.wait()
        return ended, await pulls.import_file(ImportRequest("c.gguf", None, None))

    ended, imported = asyncio.run(run())
    assert ended.name == "done", ended
    assert (ended.data["model"], ended.data["file"]) == ("m.gguf", "m.gguf")
    assert (imported.model, imported.file) == ("c.gguf", "c.gguf")
    assert (tmp_path / "models" / "m.gguf").read_bytes() == content
    assert (tmp_path / "models" / "c.gguf").exists()
    assert parts(tmp_path) == []
    assert "the rescan failed" in caplog.text and "/srv/secret" not in caplog.text  # redacted


def test_a_part_that_cannot_be_deleted_still_ends_the_pull(
    tmp_path: Path, make_gguf: MakeGGUF, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Followers and a waiting ``/v1/import`` hear how the pull ended, whatever the disk."""
    content = make_gguf("m.gguf", tensor_shape=(64, 64)).read_bytes()
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if path.suffix == ".part":
            raise PermissionError(13, "Permission denied")
        real_unlink(path, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)

    async def run() -> PullEvent | None:
        pulls = stalling_pulls(tmp_path, content)
        pull = await pulls.start(PullRequest(URL, "m.gguf", None))
        while pull.bytes < 1000:
            await settle()
        await pulls.cancel(pull.id)
        return pull.result

    ended = asyncio.run(run())
    assert ended is not None and ended.data["error"]["type"] == "cancelled"


def test_a_name_taken_meanwhile_leaves_no_part(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    """A file copied into the models directory by hand while the pull ran: a 409 for the
    pull, their file untouched, and the part deleted (it would never be resumed)."""
    content = make_gguf("m.gguf", tensor_shape=(64, 64)).read_bytes()

    def copy_by_hand() -> None:
        (tmp_path / "models" / "m.gguf").write_bytes(b"theirs")

    async def run() -> PullEvent:
        pulls = serving_pulls(tmp_path, content, before=copy_by_hand)
        return await (await pulls.start(PullRequest(URL, "m.gguf", None))).wait()

    ended = asyncio.run(run())
    assert ended.data["error"]["type"] == "download_failed"
    assert "already in the models directory" in ended.data["error"]["message"]
    assert (tmp_path / "models" / "m.gguf").read_bytes() == b"theirs"
    assert parts(tmp_path) == []


class BrokenPart:
    """A part file whose writes fail in a way nobody planned for."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle

    def write(self, data: bytes) -> int:
        raise ValueError("a bug")

    def __enter__(self) -> BrokenPart:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def test_an_unexpected_failure_leaves_no_part(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    content = make_gguf("m.gguf", tensor_shape=(64, 64)).read_bytes()

    def opener(path: Path, append: bool) -> BinaryIO:
        return cast(BinaryIO, BrokenPart(path.open("ab" if append else "wb")))

    async def run() -> PullEvent:
        pulls = serving_pulls(tmp_path, content, open_part=opener)
        return await (await pulls.start(PullRequest(URL, "m.gguf", None))).wait()

    ended = asyncio.run(run())
    assert ended.data["error"] == {"type": "download_failed",
                                   "message": "internal error in the gateway"}  # fmt: skip
    assert parts(tmp_path) == []


def test_after_close_pulls_and_imports_are_refused(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    content = make_gguf("m.gguf", tensor_shape=(64, 64)).read_bytes()

    async def run() -> None:
        pulls = serving_pulls(tmp_path, content)
        await pulls.close()
        with pytest.raises(ShuttingDown):
            await pulls.start(PullRequest(URL, "m.gguf", None))
        with pytest.raises(ShuttingDown):
            await pulls.import_file(ImportRequest("m.gguf", None, None))

    asyncio.run(run())


def test_a_waiting_import_answers_503_when_the_gateway_drains(
    tmp_path: Path, make_gguf: MakeGGUF
) -> None:
    content = make_gguf("m.gguf", tensor_shape=(64, 64)).read_bytes()

    async def run() -> None:
        pulls = stalling_pulls(tmp_path, content)
        pull = await pulls.start(PullRequest(URL, "m.gguf", None))
        stopping = asyncio.Event()
        waiting = asyncio.create_task(pull_outcome(pull, stopping))
        while pull.bytes < 1000:
            await settle()
        assert not waiting.done()
        stopping.set()
        with pytest.raises(ShuttingDown):
            await waiting
        await pulls.close()

    asyncio.run(run())


def test_without_a_models_directory_a_pull_is_a_409(tmp_path: Path) -> None:
    async def run() -> None:
        pulls = serving_pulls(tmp_path, b"GGUF", models_dirs=[])
        with pytest.raises(Conflict, match="no models directory configured"):
            await pulls.start(PullRequest(URL, "m.gguf", None))

    asyncio.run(run())


def test_the_rescan_scans_off_the_event_loop(
    tmp_path: Path, make_gguf: MakeGGUF, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_gguf("models/m.gguf")
    settings = gateway_settings(tmp_path)
    catalog = Catalog(Registry(settings), settings, lambda: [])
    scanned_in: list[int] = []
    real_scan = Registry.scan

    def scan(registry: Registry) -> list[ModelEntry]:
        scanned_in.append(threading.get_ident())
        return real_scan(registry)

    async def apply(settings: object, entries: object) -> dict[str, list[str]]:
        return {}

    monkeypatch.setattr(Registry, "scan", scan)
    manager = cast(Any, SimpleNamespace(apply=apply))
    reloader = Reloader(settings, cast(Any, None), lambda: settings, catalog, cast(Any, None),
                        manager)  # fmt: skip
    entries = asyncio.run(reloader.rescan())
    assert [entry.id for entry in entries] == ["m"]
    assert scanned_in and threading.get_ident() not in scanned_in
    assert [entry.id for entry in catalog.entries()] == ["m"]
