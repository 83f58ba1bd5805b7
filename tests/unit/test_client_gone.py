"""A client that hangs up mid-upload (issue 21, item 4), over a real socket, on every route
that reads its body, the ASGI way or the relay lane's: nothing is logged as an error (no
traceback), nothing is written back, and the request is counted as 499 (client closed), not
500."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fakes import FakeFactory
from prometheus_client.parser import text_string_to_metric_families
from served import MakeSettings, served

from supervisor.app import create_app

MakeGGUF = Callable[..., Path]
MODEL = "tiny.Q4_1"
REQUESTS = "llama_supervisor_requests_total"
SETTLE_S = 5.0  # the gateway notices the hang-up on its own loop: wait for the count

# (request head and a tenth of its announced body, the route template it is counted under)
CUT_UPLOADS = {
    # The relay lane (relay/lane.py) reads it off the socket, without ASGI.
    "relay lane": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
        "/v1/chat/completions",
    ),
    # Chunked: the relay lane passes it by, the fast lane (relay/asgi_shortcut.py) takes it.
    "chunked relay": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n64\r\n0123456789",
        "/v1/chat/completions",
    ),
    # A query string also sends a relayed POST the ASGI way.
    "relay with a query": (
        b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
        b"\r\n0123456789",
        "/v1/chat/completions",
    ),
    "api chat": (
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
        "/api/chat",
    ),
    "api/v2 chat": (
        f"POST /api/v2/chat/{MODEL} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode()
        + b"0123456789",
        "/api/v2/chat/{model_id}",
    ),
}


@pytest.fixture
def gateway_url(
    make_gguf: MakeGGUF, make_settings: MakeSettings, factory: FakeFactory
) -> Iterator[str]:
    make_gguf(f"models/{MODEL}.gguf")
    settings = make_settings()
    app = create_app(settings, factory=factory)
    with served(app, settings) as url:
        yield url


def counted(url: str, route: str) -> dict[str, float]:
    """The requests to ``route`` the gateway's /metrics counts, by status."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == REQUESTS and sample.labels["route"] == route
    }


@pytest.mark.parametrize("upload", list(CUT_UPLOADS))
def test_a_client_gone_mid_upload_is_counted_499_without_a_traceback(
    gateway_url: str, upload: str, caplog: pytest.LogCaptureFixture
) -> None:
    head, route = CUT_UPLOADS[upload]
    port = int(gateway_url.rsplit(":", 1)[1])
    with caplog.at_level(logging.INFO), socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        sock.sendall(head)
        sock.shutdown(socket.SHUT_WR)  # the client hangs up with 90 bytes still owed
        # A clean close: an end of stream (no reset), with nothing written first.
        assert sock.recv(65536) == b""
        deadline = time.monotonic() + SETTLE_S
        while not (statuses := counted(gateway_url, route)) and time.monotonic() < deadline:
            time.sleep(0.02)
    assert statuses == {"499": 1.0}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]
