"""Bad input on every surface (issue 7, item 2): names and paths that try to leave the models
directories, bodies over the limit (with and without a length), malformed JSON, wrong methods
and content types. Each gets a clear 4xx in its surface's format; none reaches a file outside
the models directories or starts a child."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from error_format import assert_error_format
from fake_child import FakeChild, Reply
from fakes import FakeFactory
from fastapi.testclient import TestClient
from served import MakeSettings, served

from supervisor.app import create_app
from supervisor.config import Settings

MakeGGUF = Callable[..., Path]
LIMIT = 4096  # max_body_bytes of these tests' gateway
MODEL = "tiny.Q4_1"


@pytest.fixture
def settings(tmp_path: Path, make_gguf: MakeGGUF, make_settings: MakeSettings) -> Settings:
    """A models dir holding a model, a second version of it, and two ways out: a symlinked
    file and a symlinked directory, both leading to a valid GGUF outside."""
    make_gguf(f"models/{MODEL}.gguf")
    make_gguf("models/v2/next.gguf")
    secret = make_gguf("outside/secret.gguf")
    (tmp_path / "models" / "escape.gguf").symlink_to(secret)
    (tmp_path / "models" / "linkdir").symlink_to(tmp_path / "outside", target_is_directory=True)
    return make_settings(max_body_bytes=LIMIT)


@pytest.fixture
def client(settings: Settings, factory: FakeFactory) -> Iterator[TestClient]:
    with TestClient(create_app(settings, factory=factory)) as test_client:
        yield test_client


def hostile_names(tmp_path: Path) -> list[str]:
    secret = str(tmp_path / "outside" / "secret.gguf")
    return [
        "../outside/secret",
        "../outside/secret.gguf",
        "..",
        ".",
        secret,
        secret.removesuffix(".gguf"),
        "/etc/passwd",
        "%2e%2e%2foutside%2fsecret",  # URL-encoded, as sent (a name is never decoded)
        "%252e%252e%252foutside%252fsecret",  # double-encoded
        "..%2f..%2fetc%2fpasswd",
        "..\\outside\\secret",
        f"{MODEL}\x00",
        f"{MODEL}\x00../outside/secret",
        "escape",  # the symlink out: never registered
        "escape.gguf",
        "linkdir/secret",
        "secret",
        "secret.gguf",
        f"models/{MODEL}.gguf",
        f"./{MODEL}",
    ]


def name_routes(name: str) -> list[tuple[str, str, bytes | None]]:
    """Every route that takes a model name: (method, path, body)."""
    # A client drops "." and ".." path segments; encoded, they reach the gateway as sent.
    quoted = name.replace(".", "%2E") if name in (".", "..") else quote(name, safe="")
    named = json.dumps({"model": name, "messages": [{"role": "user", "content": "hi"}]})
    return [
        ("GET", f"/v1/models/{quoted}", None),
        ("GET", f"/api/v2/models/{quoted}", None),
        ("POST", f"/api/v2/models/{quoted}/load", None),
        ("POST", f"/api/v2/models/{quoted}/unload", None),
        ("POST", f"/api/v2/models/{quoted}/swap", json.dumps({"path": f"{MODEL}.gguf"}).encode()),
        ("GET", f"/api/v2/models/{quoted}/logs", None),
        ("GET", f"/api/v2/models/{quoted}/logs/stream", None),
        ("POST", f"/api/v2/chat/{quoted}", named.encode()),
        ("POST", f"/api/v2/chat/{quoted}/stream", named.encode()),
        ("GET", f"/api/models/{quoted}", None),
        ("POST", f"/api/models/{quoted}/load", None),
        ("POST", f"/api/models/{quoted}/unload", None),
        ("POST", "/v1/chat/completions", named.encode()),
        ("POST", "/v1/embeddings", json.dumps({"model": name, "input": "x"}).encode()),
        ("POST", "/completion", json.dumps({"model": name, "prompt": "x"}).encode()),
        ("POST", "/tokenize", json.dumps({"model": name, "content": "x"}).encode()),
        ("POST", "/api/chat", json.dumps({"model": name, "message": "hi"}).encode()),
        ("POST", "/api/generate", json.dumps({"model": name, "prompt": "x"}).encode()),
        ("POST", "/api/embeddings", json.dumps({"model": name, "input": "x"}).encode()),
    ]


def test_names_that_look_like_paths_match_no_model_on_any_route(
    client: TestClient, factory: FakeFactory, tmp_path: Path
) -> None:
    for name in hostile_names(tmp_path):
        for method, path, body in name_routes(name):
            reply = client.request(method, path, content=body)
            where = f"{method} {path} {name!r}"
            # 404 (no such model, or no route once the server decoded %2F) or 400 (a body
            # the route refuses first): never an answer, never a 5xx.
            assert reply.status_code in (400, 404), f"{where}: {reply.status_code} {reply.text}"
            assert_error_format(reply.request.url.path, reply.json())
    assert factory.made == []  # no child was started for any of them
    # The control: the same routes with the real name do reach the model.
    assert client.get(f"/api/v2/models/{MODEL}").status_code == 200
    assert client.post(f"/api/models/{MODEL}/load").status_code == 200
    assert len(factory.made) == 1


def swap_paths(tmp_path: Path) -> list[str]:
    outside = tmp_path / "outside" / "secret.gguf"
    return [
        str(outside),
        "../outside/secret.gguf",
        "v2/../../outside/secret.gguf",
        "escape.gguf",  # a symlink in a models dir that leads out
        "linkdir/secret.gguf",  # a symlinked directory that leads out
        f"{tmp_path}/models/linkdir/secret.gguf",
        f"{tmp_path}/models/../outside/secret.gguf",
        "%2e%2e%2foutside%2fsecret.gguf",
        "%252e%252e%252foutside%252fsecret.gguf",
        "..%2foutside/secret.gguf",
        "..\\outside\\secret.gguf",
        "v2/next.gguf\x00",
        "v2/next.gguf\x00/../../outside/secret.gguf",
        "/etc/passwd",
        "/dev/zero",
        "/proc/self/environ",
        "v2",  # a directory
        "v2/../" * 64 + "outside/secret.gguf",
        "x" * 3000,  # longer than a file name may be
        "",
    ]


def test_swap_paths_never_reach_a_file_outside_the_models_dirs(
    client: TestClient, factory: FakeFactory, tmp_path: Path
) -> None:
    assert client.post(f"/api/v2/models/{MODEL}/load").status_code == 200
    for path in swap_paths(tmp_path):
        reply = client.post(f"/api/v2/models/{MODEL}/swap", json={"path": path, "n_ctx": 256})
        assert reply.status_code == 400, f"{path!r}: {reply.status_code} {reply.text}"
        assert reply.json()["error"]["param"] == "path"
    assert len(factory.made) == 1  # only the load: no swap started a child
    state = client.get(f"/api/v2/models/{MODEL}").json()["state"]
    assert state["path"].endswith(f"{MODEL}.gguf")
    # The control: a file inside a models dir does swap.
    reply = client.post(f"/api/v2/models/{MODEL}/swap", json={"path": "v2/next.gguf"})
    assert reply.status_code == 200, reply.text
    assert str(tmp_path / "models" / "v2" / "next.gguf") in factory.made[-1].argv


def test_a_symlink_out_of_the_models_dirs_is_never_registered(client: TestClient) -> None:
    listed = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert listed == {MODEL, "next"}


POST_ROUTES = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/chat/completions",
    "/completion",
    "/tokenize",
    "/detokenize",
    "/embedding",
    f"/api/v2/chat/{MODEL}",
    f"/api/v2/chat/{MODEL}/stream",
    f"/api/v2/models/{MODEL}/load",
    f"/api/v2/models/{MODEL}/swap",
    "/api/v2/reload",
    "/api/chat",
    "/api/generate",
    "/api/embeddings",
    f"/api/models/{MODEL}/load",
]


BODYLESS = {"/api/v2/reload", f"/api/models/{MODEL}/load"}  # routes that take no body


def oversized() -> bytes:
    return json.dumps({"model": MODEL, "prompt": "x" * LIMIT}).encode()


def in_pieces(body: bytes, size: int = 512) -> Iterator[bytes]:
    """A body sent chunked: no Content-Length, so the gateway learns its size only by
    reading it."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("path", POST_ROUTES)
def test_bodies_over_the_limit_get_413_with_or_without_a_length(
    client: TestClient, factory: FakeFactory, path: str
) -> None:
    announced = client.post(path, content=oversized())
    assert announced.status_code == 413, announced.text
    assert_error_format(path, announced.json())
    assert announced.headers["connection"] == "close"
    if path in BODYLESS:
        return  # a chunked body that no one reads is never buffered, nor counted
    chunked = client.post(path, content=in_pieces(oversized()))
    assert chunked.status_code == 413, chunked.text
    assert_error_format(path, chunked.json())
    assert factory.made == []


def test_bodies_within_the_limit_pass_whole_with_or_without_a_length(
    client: TestClient, fake_child: FakeChild
) -> None:
    fake_child.answer("POST", "/completion", Reply(json={"content": "ok"}))
    body = json.dumps({"model": MODEL, "prompt": "x" * (LIMIT - 100)}).encode()
    assert len(body) <= LIMIT
    assert client.post("/completion", content=body).status_code == 200
    assert client.post("/completion", content=in_pieces(body)).status_code == 200
    assert [r.body for r in fake_child.received("POST", "/completion")] == [body, body]


def test_the_limit_applies_to_get_routes_too(client: TestClient) -> None:
    reply = client.request("GET", "/v1/models", content=oversized())
    assert reply.status_code == 413
    assert_error_format("/v1/models", reply.json())


def test_a_huge_announced_body_is_refused_over_a_real_socket_without_reading_it(
    settings: Settings, factory: FakeFactory
) -> None:
    """Through uvicorn: a client announcing 100 GB gets its 413 at once and the connection
    closes, while the gateway has read none of it."""
    app = create_app(settings, factory=factory)
    with served(app, settings) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000000000\r\n\r\n{"
            )
            answer = b""
            while chunk := sock.recv(65536):  # ends when the gateway closes the connection
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 "), head
        assert json.loads(body)["error"]["code"] == "request_too_large"


MALFORMED = [
    b"{not json",
    b'{"model": "tiny.Q4_1",}',
    b"\xff\xfe{}",
    b"[1, 2]",
    b'"a string"',
    b"null",
    b"[" * 3000,  # deeper than json.loads recurses
    b'{"a":' * 800,
]


@pytest.mark.parametrize("path", [p for p in POST_ROUTES if p not in BODYLESS])
def test_malformed_json_gets_400_in_the_surface_format(client: TestClient, path: str) -> None:
    for body in MALFORMED:
        reply = client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert reply.status_code == 400, f"{body[:20]!r}: {reply.status_code} {reply.text}"
        assert_error_format(path, reply.json())


def test_wrong_methods_get_405_in_the_surface_format(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    tried = 0
    for template, operations in paths.items():
        path = template.replace("{model_id}", MODEL).replace("{model_name}", MODEL)
        path = path.replace("{session_id}", "s1")
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            if method.lower() in operations or (method == "GET" and path == "/metrics"):
                continue
            reply = client.request(method, path)
            assert reply.status_code == 405, f"{method} {path}: {reply.status_code}"
            assert_error_format(path, reply.json())
            assert "allow" in reply.headers
            tried += 1
    assert tried > 60


MULTIPART = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\ntiny.Q4_1\r\n--b--\r\n'


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        # The body decides, not the header (see the README): curl -d sends a JSON body as
        # form-urlencoded, and llama-server itself never reads Content-Type.
        ("application/x-www-form-urlencoded", json.dumps({"model": MODEL}).encode(), 200),
        ("text/plain", json.dumps({"model": MODEL}).encode(), 200),
        (None, json.dumps({"model": MODEL}).encode(), 200),
        ("application/x-www-form-urlencoded", b"model=tiny.Q4_1&prompt=hi", 400),
        ("multipart/form-data; boundary=b", MULTIPART, 400),
        ("application/xml", b"<model>tiny.Q4_1</model>", 400),
    ],
)
def test_content_types_are_judged_by_the_body(
    client: TestClient, fake_child: FakeChild, content_type: str | None, body: bytes, status: int
) -> None:
    fake_child.answer("POST", "/v1/completions", Reply(json={"choices": []}))
    headers = {"Content-Type": content_type} if content_type else {}
    paths = ["/v1/completions"] if status == 200 else ["/v1/completions", "/api/generate"]
    for path in paths:
        reply = client.post(path, content=body, headers=headers)
        assert reply.status_code == status, f"{path}: {reply.text}"
        if status != 200:
            assert_error_format(path, reply.json())
