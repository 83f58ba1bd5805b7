"""The ``Pulls`` service on its own, over an injected transport whose body stalls after its
first bytes: shutting down stops a pull but keeps its partial file (pulling again resumes);
a cancel deletes it; a draining gateway ends a pull's stream at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
from fake_clock import settle
from served import gateway_settings

from supervisor.models.catalog import Catalog
from supervisor.models.pulls.request import PullRequest
from supervisor.models.pulls.service import Pulls
from supervisor.models.pulls.transfer import PullTools
from supervisor.models.registry import ModelEntry, Registry
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
        assert (await pull.wait()).data["error"]["type"] == "cancelled"  # type: ignore[index]

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
