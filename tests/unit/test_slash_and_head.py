"""Two manners of the HTTP surface (issue 21, minor items): the trailing-slash redirect points
at a relative location, never at the host a client names; and ``HEAD`` on the public health
routes answers as ``GET`` does, without a body, key or no key."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from error_format import assert_error_format
from fastapi.testclient import TestClient
from served import MakeSettings, served
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, Router

from supervisor.app import create_app
from supervisor.config import Settings
from supervisor.http.error_responses import SlashRedirect

HEALTH_ROUTES = ["/health", "/api/v2/health"]


@pytest.fixture
def settings(tmp_path: Path, make_settings: MakeSettings) -> Settings:
    """A gateway with keys: the health routes must stay public for HEAD as for GET."""
    return make_settings(models_dirs=[tmp_path], admin_keys=["admin-key"])


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    headers = {"Authorization": "Bearer admin-key"}
    with TestClient(create_app(settings), headers=headers) as test_client:
        yield test_client


# -- the trailing-slash redirect --------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "location"),
    [
        ("/v1/models/", "/v1/models"),
        ("/v1/models//", "/v1/models"),
        ("/v1/models/?a=1&b=%2F", "/v1/models?a=1&b=%2F"),
        ("/api/v2/models/x.gguf/logs/", "/api/v2/models/x.gguf/logs"),
    ],
)
def test_a_trailing_slash_redirects_to_a_relative_location(
    client: TestClient, asked: str, location: str
) -> None:
    for host in ("evil.example", "evil.example:8080", "127.0.0.1:8080"):
        reply = client.get(asked, headers={"Host": host}, follow_redirects=False)
        assert reply.status_code == 307, reply.text
        assert reply.headers["location"] == location


def test_the_redirect_is_followed_to_the_route(client: TestClient) -> None:
    reply = client.get("/v1/models/")
    assert reply.status_code == 200
    assert [r.status_code for r in reply.history] == [307]


@pytest.mark.parametrize("path", ["/nowhere/", "/nowhere", "/api/nowhere/", "/%2Fv1/models/"])
def test_a_path_that_routes_neither_way_is_still_a_404(client: TestClient, path: str) -> None:
    reply = client.get(path, follow_redirects=False)
    assert reply.status_code == 404
    assert "location" not in reply.headers
    assert_error_format(path, reply.json())


def test_a_catch_all_route_cannot_make_the_redirect_name_another_host() -> None:
    """No route of the gateway's matches a path starting with ``//``; should one ever, the
    redirect must still not read as ``//host/…`` (a URL on another host)."""

    async def info(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["name"])

    router = Router([Route("/{name:path}/info", info)], redirect_slashes=False)
    router.default = SlashRedirect(router)
    reply = TestClient(router).get("/%2Fevil.example/info/", follow_redirects=False)
    assert reply.status_code == 307
    assert reply.headers["location"] == "/%2Fevil.example/info"


# -- HEAD on the health routes ----------------------------------------------------------------


def exchange(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: the status, headers (but Date) and all that
    followed the head until the gateway closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    headers.pop("date", None)
    return int(status_line.split()[1]), headers, rest


@pytest.mark.parametrize("path", HEALTH_ROUTES)
def test_head_on_a_health_route_is_get_without_a_body_and_without_a_key(
    settings: Settings, path: str
) -> None:
    with served(create_app(settings), settings) as url:
        port = int(url.rsplit(":", 1)[1])
        get = exchange(port, "GET", path)
        head = exchange(port, "HEAD", path)
    get_status, get_headers, get_body = get
    assert get_status == 200 and get_body
    assert head == (200, get_headers, b"")
    assert get_headers["content-length"] == str(len(get_body))


@pytest.mark.parametrize("path", HEALTH_ROUTES)
def test_head_stays_out_of_the_api_document(client: TestClient, path: str) -> None:
    assert list(client.get("/openapi.json").json()["paths"][path]) == ["get"]
