"""The app served by a real uvicorn on a socket, as ``llama-supervisor serve`` serves it: with
the gateway's HTTP protocol (``server.http_protocol``), so relayed POSTs take the relay lane
(supervisor/relay/lane.py), which no ASGI test client reaches."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fakes import FakeFactory
from fastapi import FastAPI
from fastapi.testclient import TestClient

from supervisor.app import create_app
from supervisor.config import Settings
from supervisor.http.server import http_protocol

START_TIMEOUT_S = 10.0
MakeSettings = Callable[..., Settings]  # the unit tier's make_settings fixture
Serve = Callable[..., AbstractContextManager[httpx.Client]]  # and its serve fixture


@contextmanager
def served(app: FastAPI, settings: Settings, **config_args: Any) -> Iterator[str]:
    """Serve ``app`` (its lifespan included) on 127.0.0.1 from a thread; its base URL.
    ``config_args``: more of uvicorn's settings (``timeout_keep_alive``)."""
    config = uvicorn.Config(
        app,
        port=0,
        log_config=None,
        http=http_protocol(app, settings),
        ws="none",
        lifespan="on",
        **config_args,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def client_of(app: FastAPI, settings: Settings, way: str) -> Iterator[httpx.Client]:
    """An HTTP client of ``app``: in-process over ASGI (``way="asgi"``), or over a socket
    through the relay lane (``way="lane"``)."""
    if way == "asgi":
        with TestClient(app) as test_client:
            yield test_client
        return
    with served(app, settings) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def gateway_settings(root: Path, **overrides: Any) -> Settings:
    """Settings of a test gateway: models in ``root/models``, data in ``root/data``, and a
    program that exists for its children (a fake factory makes them); ``overrides`` replace
    or add fields."""
    common: dict[str, Any] = {
        "models_dirs": [root / "models"],
        "llama_server": Path(sys.executable),
        "data_dir": root / "data",
    }
    return Settings(**(common | overrides))


@contextmanager
def gateway_client(
    way: str, root: Path, factory: FakeFactory, **overrides: Any
) -> Iterator[httpx.Client]:
    """``client_of`` a gateway of ``gateway_settings(root, **overrides)``, its children made
    by ``factory`` (a fake child's)."""
    settings = gateway_settings(root, **overrides)
    app = create_app(settings, factory=factory)
    with client_of(app, settings, way) as client:
        yield client
