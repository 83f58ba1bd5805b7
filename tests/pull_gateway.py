"""A gateway served on a real socket for the pull and import tests (pulls stream, and are
cancelled while they stream), with the pull's tools in the test's hands; and a reader of a
pull's named server-sent events."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fakes import FakeFactory
from served import gateway_settings, served

from supervisor.app import create_app
from supervisor.models.pulls.transfer import PullTools

Event = tuple[str, dict[str, Any]]


@contextmanager
def pull_gateway(
    root: Path, tools: PullTools | None = None, **overrides: Any
) -> Iterator[httpx.Client]:
    """A client of a gateway whose models are in ``root/models`` and whose pulls keep their
    partial files in ``root/cache/pulls``. Private addresses are allowed (the file server is
    on loopback) unless ``overrides`` say otherwise; retries do not wait."""
    settings = gateway_settings(
        root, **({"cache_dir": root / "cache", "pull_allow_private": True} | overrides)
    )
    app = create_app(settings, factory=FakeFactory(), pull_tools=tools or PullTools(retry_wait_s=0))
    with served(app, settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def pull_events(lines: Iterable[str]) -> Iterator[Event]:
    """The named events among a stream's lines (``iter_lines()``), as they arrive."""
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            assert name is not None, line
            yield name, json.loads(line.removeprefix("data: "))
            name = None


def pull(
    client: httpx.Client, body: dict[str, Any], path: str = "/api/v2/models/pull"
) -> list[Event]:
    """Every event of a pull, to its end; asserts the answer is a stream."""
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(pull_events(response.iter_lines()))
