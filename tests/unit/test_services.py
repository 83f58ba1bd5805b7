"""The narrow services the lifespan builds (supervisor/services.py): each on ``app.state``
under the name its route accessor reads, model picking, session locks, and a reload that
replaces the catalog's models, the request limits and the keys in force."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakes import FakeFactory
from fastapi.testclient import TestClient
from pydantic import SecretStr
from served import MakeSettings

from supervisor.app import create_app
from supervisor.config import Settings
from supervisor.errors import ModelNotFound, ModelUnavailable
from supervisor.models.catalog import Catalog
from supervisor.models.registry import Registry
from supervisor.relay.limits import Limits
from supervisor.sessions.locks import SessionLocks
from supervisor.surfaces import services

MakeGGUF = Callable[..., Path]
ACCESSORS = (
    services.catalog, services.manager, services.proxy, services.limits, services.telemetry,
    services.performance, services.sessions, services.session_locks, services.reloader,
    services.probe, services.child_logs, services.started_at,
)  # fmt: skip


def catalog(make_gguf: MakeGGUF, settings: Settings, loaded: list[str]) -> Catalog:
    for name in ("a", "b"):
        make_gguf(f"models/{name}.gguf")
    registry = Registry(settings)
    registry.scan()
    return Catalog(registry, settings, lambda: loaded)


def test_each_accessor_finds_its_service(make_gguf: MakeGGUF, make_settings: MakeSettings) -> None:
    make_gguf("models/a.gguf")
    app = create_app(make_settings(), factory=FakeFactory())
    with TestClient(app):
        request: Any = SimpleNamespace(app=app)
        for accessor in ACCESSORS:
            assert accessor(request) is not None, accessor.__name__
        assert app.state.relay_services.catalog is services.catalog(request)
        assert app.state.relay_services.limits is services.limits(request)
        assert services.performance(request) is services.telemetry(request).performance
        assert not hasattr(app.state, "gateway")  # no object that holds everything


def test_a_request_without_a_model_gets_the_default_else_the_only_loaded_one(
    make_gguf: MakeGGUF, make_settings: MakeSettings
) -> None:
    loaded: list[str] = []
    models = catalog(make_gguf, make_settings(), loaded)
    assert models.pick("b").id == "b"
    with pytest.raises(ModelNotFound):
        models.pick("c")  # never a fallback for an unknown name
    with pytest.raises(ModelUnavailable, match="no default model"):
        models.pick(None)
    loaded += ["a"]
    assert models.pick(None).id == "a"
    loaded += ["b"]
    with pytest.raises(ModelUnavailable, match="several models are loaded"):
        models.pick(None)
    assert catalog(make_gguf, make_settings(default_model="b"), loaded).pick(None).id == "b"


def test_requests_on_one_session_share_a_lock_while_it_is_in_use() -> None:
    locks = SessionLocks()

    async def run() -> None:
        held = locks.lock("s-1")
        async with held:
            assert locks.lock("s-1") is held and locks.lock("s-2") is not held
            assert held.locked() and not locks.lock("s-2").locked()

    asyncio.run(run())


def test_limits_follow_the_settings_they_are_given() -> None:
    limits = Limits(Settings(max_tokens_limit=100))
    assert limits.general.max_tokens == limits.openai.max_tokens == 100
    assert limits.general.max_stop is None and limits.openai.max_stop == 4
    assert limits.of(openai_stop=True) is limits.openai
    limits.apply(Settings(max_tokens_limit=7))
    assert limits.of(openai_stop=False).max_tokens == 7


def test_a_reload_puts_new_models_limits_and_keys_in_force(
    make_gguf: MakeGGUF, make_settings: MakeSettings
) -> None:
    make_gguf("models/a.gguf")
    current = {"settings": make_settings()}
    app = create_app(
        current["settings"], factory=FakeFactory(), load_settings=lambda: current["settings"]
    )
    with TestClient(app) as client:
        assert client.post("/v1/chat/completions", json={"model": "b"}).status_code == 404
        make_gguf("models/b.gguf")
        current["settings"] = make_settings(max_tokens_limit=5, api_keys=[SecretStr("k-12345")])
        assert client.post("/api/v2/reload").json()["added"] == ["b"]
        key = {"authorization": "Bearer k-12345"}
        assert client.get("/v1/models").status_code == 401  # the new keys hold
        too_many = {"model": "b", "max_tokens": 6}
        refused = client.post("/v1/chat/completions", json=too_many, headers=key)
        assert refused.status_code == 400 and "at most 5" in refused.text
