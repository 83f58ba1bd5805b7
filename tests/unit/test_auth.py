"""API keys: the route classes, the key check, the key file, and every route of the app refusing
a missing or wrong key in its surface's error format."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from error_format import assert_error_format, uses_anthropic
from fakes import FakeFactory
from fastapi.testclient import TestClient
from pydantic import SecretStr
from served import MakeSettings

from supervisor.app import create_app
from supervisor.config import Settings
from supervisor.errors import ConfigError, Forbidden, Unauthorized
from supervisor.http.auth import Access, KeyRing, load_keys, presented_key, required_access

MakeGGUF = Callable[..., Path]
INFERENCE, ADMIN = "sk-inference-0123", "sk-admin-4567"
ANTHROPIC_REFUSALS = {401: "authentication_error", 403: "permission_error"}


@pytest.mark.parametrize(
    ("method", "path", "access"),
    [
        ("GET", "/health", Access.PUBLIC),
        ("GET", "/api/v2/health", Access.PUBLIC),
        ("GET", "/openapi.json", Access.PUBLIC),
        ("POST", "/health", Access.INFERENCE),
        ("GET", "/", Access.INFERENCE),
        ("GET", "/metrics", Access.INFERENCE),
        ("POST", "/v1/chat/completions", Access.INFERENCE),
        ("GET", "/api/v2/models/m.gguf", Access.INFERENCE),
        ("POST", "/api/chat", Access.INFERENCE),
        ("DELETE", "/api/sessions/abc", Access.INFERENCE),
        ("POST", "/api/v2/models/m.gguf/load", Access.ADMIN),
        ("POST", "/api/v2/models/m.gguf/unload/", Access.ADMIN),
        ("POST", "/api/v2/models/m/swap", Access.ADMIN),
        ("POST", "/api/v2/reload", Access.ADMIN),
        ("GET", "/api/v2/models/m/logs", Access.ADMIN),
        ("GET", "/api/v2/models/m/logs/stream", Access.ADMIN),
        ("POST", "/api/models/m/load", Access.ADMIN),
        ("POST", "/api/models/m/unload", Access.ADMIN),
        ("POST", "/api/models/a/b/../load", Access.ADMIN),
    ],
)
def test_routes_are_classed(method: str, path: str, access: Access) -> None:
    assert required_access(method, path) is access


def test_keys_come_from_bearer_or_x_api_key() -> None:
    assert presented_key({"authorization": "Bearer abc"}) == "abc"
    assert presented_key({"authorization": "bearer  abc "}) == "abc"
    assert presented_key({"x-api-key": "xyz"}) == "xyz"
    assert presented_key({"authorization": "Basic abc"}) is None
    assert presented_key({"authorization": "Bearer "}) is None
    assert presented_key({}) is None


def test_key_ring_grants_by_kind() -> None:
    ring = KeyRing(inference=(INFERENCE.encode(),), admin=(ADMIN.encode(),))
    assert ring.access_of(INFERENCE) is Access.INFERENCE
    assert ring.access_of(ADMIN) is Access.ADMIN
    assert ring.access_of(INFERENCE + "x") is Access.PUBLIC
    assert ring.access_of(INFERENCE[:-1]) is Access.PUBLIC
    assert ring.access_of(None) is Access.PUBLIC
    bearer = {"authorization": f"Bearer {INFERENCE}"}
    ring.check("POST", "/v1/chat/completions", bearer)
    with pytest.raises(Forbidden):
        ring.check("POST", "/api/v2/reload", bearer)
    with pytest.raises(Unauthorized, match="Missing"):
        ring.check("POST", "/v1/chat/completions", {})
    with pytest.raises(Unauthorized, match="Invalid"):
        ring.check("POST", "/v1/chat/completions", {"x-api-key": "nope"})
    ring.check("GET", "/health", {})
    KeyRing().check("POST", "/api/v2/reload", {})  # no keys: open


def test_keys_load_from_settings_and_a_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# keys\nadmin  file-admin\ninference file-inf # laptop\nbare-key\n\n")
    settings = Settings(
        api_keys=[SecretStr("env-inf")], admin_keys=[SecretStr("env-admin")],
        api_keys_file=key_file,
    )  # fmt: skip
    ring = load_keys(settings)
    assert {k.decode() for k in ring.inference} == {"env-inf", "file-inf", "bare-key"}
    assert {k.decode() for k in ring.admin} == {"env-admin", "file-admin"}
    key_file.write_text("root file-admin\n")
    with pytest.raises(ConfigError, match="line 1"):
        load_keys(settings)
    with pytest.raises(ConfigError, match="cannot read"):
        load_keys(Settings(api_keys_file=tmp_path / "missing"))


@pytest.fixture
def client(make_gguf: MakeGGUF, make_settings: MakeSettings) -> Iterator[TestClient]:
    make_gguf("models/tiny.Q4_1.gguf")
    settings = make_settings(api_keys=[SecretStr(INFERENCE)], admin_keys=[SecretStr(ADMIN)])
    with TestClient(create_app(settings, factory=FakeFactory())) as test_client:
        yield test_client


def _every_route(client: TestClient) -> list[tuple[str, str]]:
    """Every documented route (the OpenAPI test checks that every route is documented)."""
    paths = client.get("/openapi.json").json()["paths"]
    found = []
    for template, operations in paths.items():
        path = template.replace("{model_id}", "tiny.Q4_1").replace("{model_name}", "tiny")
        path = path.replace("{session_id}", "s1")
        found += [(method.upper(), path) for method in operations]
    assert len(found) > 25
    return found


def _assert_refused(reply_status: int, body: dict[str, object], path: str, status: int) -> None:
    assert reply_status == status, path
    assert_error_format(path, body)
    if path.startswith("/api/") and not path.startswith("/api/v2"):
        assert isinstance(body["detail"], str), path
    elif uses_anthropic(path):  # Anthropic's shape has no code, only the status's type
        error = body["error"]
        assert isinstance(error, dict), path
        assert error["type"] == ANTHROPIC_REFUSALS[status], path
    else:
        error = body["error"]
        assert isinstance(error, dict), path
        assert error["code"] in ("invalid_api_key", "admin_key_required"), path


def test_every_protected_route_refuses_a_missing_or_wrong_key(client: TestClient) -> None:
    for method, path in _every_route(client):
        if required_access(method, path) is Access.PUBLIC:
            assert client.request(method, path).status_code == 200, path
            continue
        for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": INFERENCE[:-1]}):
            reply = client.request(method, path, headers=headers)
            _assert_refused(reply.status_code, reply.json(), path, 401)
            assert reply.headers["www-authenticate"] == "Bearer"


def test_admin_routes_refuse_inference_keys(client: TestClient) -> None:
    admin_routes = [
        (m, p) for m, p in _every_route(client) if required_access(m, p) is Access.ADMIN
    ]
    assert len(admin_routes) >= 7
    for method, path in admin_routes:
        reply = client.request(method, path, headers={"x-api-key": INFERENCE})
        _assert_refused(reply.status_code, reply.json(), path, 403)


def test_right_keys_get_through(client: TestClient) -> None:
    inference = {"authorization": f"Bearer {INFERENCE}"}
    admin = {"x-api-key": ADMIN}
    assert client.get("/v1/models", headers=inference).status_code == 200
    assert client.get("/api/models", headers=admin).status_code == 200
    assert client.post("/api/v2/models/tiny.Q4_1/load", headers=admin).status_code == 200
    logs = client.get("/api/v2/models/tiny.Q4_1/logs", headers=admin)
    assert logs.status_code == 200
    assert client.post("/api/v2/models/tiny.Q4_1/unload", headers=admin).status_code == 200
