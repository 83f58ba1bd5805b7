"""Fixtures of the unit tier: a gateway's settings, fake children for it, and a client of it over
either way a request comes in (over ASGI, or over a socket through the relay lane)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_child import FakeChild
from fakes import FakeFactory
from served import MakeSettings, Serve, client_of, gateway_settings

from supervisor.app import create_app
from supervisor.config import Settings


@pytest.fixture
def make_settings(tmp_path: Path) -> MakeSettings:
    """``make_settings(**overrides)``: a gateway's settings, its models in ``tmp_path/models``
    and its data in ``tmp_path/data`` (see ``served.gateway_settings``)."""

    def make(**overrides: Any) -> Settings:
        return gateway_settings(tmp_path, **overrides)

    return make


@pytest.fixture
def factory(fake_child: FakeChild) -> FakeFactory:
    """Fake children whose HTTP side is ``fake_child``."""
    return FakeFactory(base_url=fake_child.url)


@pytest.fixture(params=["asgi", "lane"])
def way(request: pytest.FixtureRequest) -> str:
    """Each way a request comes in: a test taking it runs once over each."""
    param: str = request.param
    return param


@pytest.fixture
def serve(way: str, make_settings: MakeSettings, factory: FakeFactory) -> Serve:
    """``serve(**overrides)``: a client of a gateway of ``make_settings(**overrides)`` with
    ``factory``'s children, over ``way``."""

    @contextmanager
    def open_client(**overrides: Any) -> Iterator[httpx.Client]:
        settings = make_settings(**overrides)
        with client_of(create_app(settings, factory=factory), settings, way) as client:
            yield client

    return open_client


@pytest.fixture
def client(serve: Serve) -> Iterator[httpx.Client]:
    """A client of ``serve()``'s gateway, over each way (a module with its own ``client``
    fixture uses that one instead)."""
    with serve() as http_client:
        yield http_client
