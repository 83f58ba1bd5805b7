"""The admin API client against an httpx.MockTransport: paths, bodies, the bearer key, error
translation, and the SSE log follow."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from supervisor.cli.admin_client import AdminClient, LogLine, error_message, normalise_url, sse_data
from supervisor.errors import AdminRequestFailed, GatewayUnreachable

Handler = Callable[[httpx.Request], httpx.Response]
URL = "http://gateway.test:8080"


def client_with(handler: Handler, api_key: str | None = None) -> AdminClient:
    return AdminClient(URL, api_key, transport=httpx.MockTransport(handler))


def test_requests_carry_the_bearer_key_and_quote_model_ids() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "a b.gguf", "status": "unloaded"})

    with client_with(handler, api_key="s3cret") as client:
        assert client.model("a b.gguf")["status"] == "unloaded"
    assert seen[0].headers["Authorization"] == "Bearer s3cret"
    assert seen[0].url.raw_path == b"/api/v2/models/a%20b.gguf"


def test_no_key_sends_no_authorization_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"available_models": [], "loaded_models": {}})

    with client_with(handler) as client:
        client.list_models()
    assert "Authorization" not in seen[0].headers
    assert seen[0].url.path == "/api/v2/models"


def test_load_swap_unload_and_reload_post_seed_001_bodies() -> None:
    seen: list[tuple[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.url.path, body))
        return httpx.Response(200, json={"status": "success"})

    with client_with(handler) as client:
        client.load("m", {"n_ctx": 512, "threads": 2})
        client.swap("m", "v2/m.gguf", {"n_gpu_layers": 0})
        client.unload("m")
        client.reload()
    assert seen == [
        ("/api/v2/models/m/load", {"n_ctx": 512, "threads": 2}),
        ("/api/v2/models/m/swap", {"path": "v2/m.gguf", "n_gpu_layers": 0}),
        ("/api/v2/models/m/unload", None),
        ("/api/v2/reload", None),
    ]


def test_an_error_answer_carries_the_gateways_message_and_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        error = {"message": "Model not found: nope", "type": "invalid_request_error"}
        return httpx.Response(404, json={"error": error})

    with client_with(handler) as client, pytest.raises(AdminRequestFailed) as caught:
        client.model("nope")
    assert caught.value.status_code == 404
    assert caught.value.message == "Model not found: nope"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(403, json={"detail": "admin key required"}), "admin key required"),
        (httpx.Response(502, text="Bad Gateway from nginx"), "Bad Gateway from nginx"),
        (httpx.Response(500, text=""), "Internal Server Error"),
        (httpx.Response(400, json={"error": "plain words"}), "plain words"),
    ],
)
def test_error_messages_of_other_shapes(response: httpx.Response, message: str) -> None:
    assert error_message(response) == message


def test_a_refused_connection_is_gateway_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with client_with(handler) as client, pytest.raises(GatewayUnreachable) as caught:
        client.list_models()
    assert "no gateway at http://gateway.test:8080" in caught.value.message
    assert "llama-supervisor serve" in caught.value.message


def test_a_timeout_or_broken_exchange_is_a_failed_request() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed", request=request)

    for handler in (timeout, broken):
        with client_with(handler) as client, pytest.raises(AdminRequestFailed) as caught:
            client.list_models()
        assert caught.value.status_code == 0


def test_an_answer_that_is_not_json_is_a_failed_request() -> None:
    with (
        client_with(lambda request: httpx.Response(200, text="<html>")) as client,
        pytest.raises(AdminRequestFailed, match="not JSON"),
    ):
        client.list_models()


def test_urls_without_a_scheme_or_with_a_slash_are_normalised() -> None:
    assert normalise_url("localhost:9000") == "http://localhost:9000"
    assert normalise_url(" https://gw.example/ ") == "https://gw.example"


def test_logs_returns_typed_lines() -> None:
    seen: list[httpx.Request] = []
    lines = [
        {"time": "2026-01-01T00:00:00Z", "role": "chat", "pid": 42, "line": "ready"},
        {"time": "2026-01-01T00:00:01Z", "role": "embedding", "pid": None, "line": "[x] y"},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"model": "m.gguf", "lines": lines})

    with client_with(handler) as client:
        got = client.logs("m", 5)
    assert seen[0].url.path == "/api/v2/models/m/logs"
    assert seen[0].url.params["lines"] == "5"
    assert got == [
        LogLine("2026-01-01T00:00:00Z", "chat", 42, "ready"),
        LogLine("2026-01-01T00:00:01Z", "embedding", None, "[x] y"),
    ]


def test_sse_data_skips_comments_and_joins_multiline_data() -> None:
    lines = [": keepalive", "", "data: one", "", "event: x", "data: two", "data:three", "",
             "data: last-without-blank"]  # fmt: skip
    assert list(sse_data(lines)) == ["one", "two\nthree", "last-without-blank"]


def sse_body(*events: bytes) -> Iterator[bytes]:
    yield from events


def test_follow_logs_reads_the_sse_stream() -> None:
    seen: list[httpx.Request] = []
    first = {"time": "t1", "role": "chat", "pid": 7, "line": "hello"}
    second = {"time": "t2", "role": "chat", "pid": 7, "line": "world"}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = sse_body(
            b": keepalive\n\n",
            b"data: " + json.dumps(first).encode() + b"\n\n",
            b"data: " + json.dumps(second).encode()[:10],  # an event split across chunks
            json.dumps(second).encode()[10:] + b"\n\n",
        )
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    with client_with(handler) as client:
        got = list(client.follow_logs("m", 3))
    assert seen[0].url.path == "/api/v2/models/m/logs/stream"
    assert seen[0].url.params["lines"] == "3"
    assert [line.line for line in got] == ["hello", "world"]


def test_follow_logs_refused_raises_with_the_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": "Invalid API key"}})

    with client_with(handler) as client, pytest.raises(AdminRequestFailed) as caught:
        list(client.follow_logs("m", 3))
    assert caught.value.status_code == 401
    assert caught.value.message == "Invalid API key"


def test_a_bad_sse_event_is_a_failed_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse_body(b"data: {not json\n\n"))

    with client_with(handler) as client, pytest.raises(AdminRequestFailed, match="bad log event"):
        list(client.follow_logs("m", 3))
