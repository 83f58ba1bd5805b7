"""Fakes for fast unit tests: a scripted child process (no llama-server is run)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from supervisor.children.argv import ChildCommand
from supervisor.children.logs import LineSink
from supervisor.config import ModelSettings
from supervisor.errors import ModelLoadError
from supervisor.models.gguf import GGUFInfo
from supervisor.models.registry import ModelEntry

FAKE_HOST = "fake-child.test"
FAKE_URL = f"http://{FAKE_HOST}"  # respx intercepts it; a FakeChild server has a real one
_pids = itertools.count(40000)


@dataclass
class Script:
    """How the next fake child behaves while loading."""

    fail_with: list[str] | None = None  # output tail of a failed load
    ready_delay: float = 0.0


class FakeProcess:
    def __init__(
        self,
        name: str,
        command: ChildCommand,
        base_url: str,
        script: Script,
        output: LineSink | None = None,
        served_at: str = FAKE_URL,
    ) -> None:
        self.name = name
        self.output = output
        self.command = command
        self.argv = command.argv
        self.pinned: list[tuple[int, ...]] = []  # each live move, in order
        # Requests go to ``served_at`` (respx's host or a FakeChild), whatever port the pool
        # picked.
        self.base_url = served_at
        self.requested_url = base_url
        self.script = script
        self._pid = next(_pids)
        self._started = False
        self._exit: asyncio.Future[int] | None = None
        self.stopped_with_grace: float | None = None

    @property
    def pid(self) -> int | None:
        return self._pid if self._started else None

    @property
    def alive(self) -> bool:
        return self._exit is not None and not self._exit.done()

    def output_tail(self) -> list[str]:
        return list(self.script.fail_with or [])

    async def start(self) -> None:
        self._started = True
        self._exit = asyncio.get_running_loop().create_future()
        self.say(f"fake llama-server {self.name} starting")

    def say(self, line: str) -> None:
        """A line of output, as a real child prints to its stdout."""
        if self.output is not None:
            self.output(self.pid, line)

    async def wait_ready(self, client: httpx.AsyncClient, timeout: float) -> None:
        await asyncio.sleep(self.script.ready_delay)
        if self.script.fail_with is not None:
            self.die(1)
            raise ModelLoadError(self.name, "llama-server exited with code 1", self.output_tail())

    async def wait_exit(self) -> int:
        assert self._exit is not None
        return await asyncio.shield(self._exit)

    def die(self, code: int) -> None:
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(code)

    async def stop(self, grace: float) -> None:
        self.stopped_with_grace = grace
        self.die(-15)

    def pin(self, cpus: tuple[int, ...]) -> bool:
        self.pinned.append(cpus)
        return True

    def kill_now(self) -> None:
        self.die(-9)


@dataclass
class FakeFactory:
    """Makes FakeProcesses; each start takes the next Script (default: loads fine). Their
    HTTP side is at ``base_url``: respx's host by default, or a FakeChild's ``url``."""

    scripts: list[Script] = field(default_factory=list)
    made: list[FakeProcess] = field(default_factory=list)
    base_url: str = FAKE_URL

    def __call__(
        self, name: str, command: ChildCommand, base_url: str, output: LineSink | None = None
    ) -> FakeProcess:
        script = self.scripts.pop(0) if self.scripts else Script()
        process = FakeProcess(name, command, base_url, script, output, self.base_url)
        self.made.append(process)
        return process


def make_entry(
    pooling_type: int | None = None,
    overrides: ModelSettings | None = None,
    stem: str = "tiny.Q4_1",
) -> ModelEntry:
    info = GGUFInfo(
        architecture="llama",
        name="tiny",
        context_length=2048,
        embedding_length=64,
        block_count=2,
        file_type="Q4_1",
        pooling_type=pooling_type,
        has_chat_template=True,
        parameter_count=32,
    )
    return ModelEntry(
        id=overrides.alias if overrides and overrides.alias else stem,
        path=Path(f"/models/{stem}.gguf"),
        file_name=f"{stem}.gguf",
        stem=stem,
        alias=overrides.alias if overrides else None,
        size=1000,
        modified=0.0,
        info=info,
        overrides=overrides,
    )
