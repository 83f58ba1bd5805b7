"""A request's head is bounded
(supervisor/http/intake_protocol.py): through a real uvicorn on a socket,
a header past the bound gets a 431 and a closed connection, while ordinary requests, kept
alive one after another, and bodies far larger than the bound pass as before."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from served import MakeSettings, served

from supervisor.app import create_app
from supervisor.http.intake_protocol import MAX_HEAD_BYTES, IntakeProtocol
from supervisor.http.server import http_protocol


@pytest.fixture
def port(tmp_path: Path, make_settings: MakeSettings) -> Iterator[int]:
    """The gateway served as ``serve`` serves it: its protocol is a IntakeProtocol."""
    settings = make_settings(models_dirs=[tmp_path])
    app = create_app(settings)
    assert issubclass(http_protocol(app, settings), IntakeProtocol)
    with served(app, settings) as url:
        yield int(url.rsplit(":", 1)[1])


def read_all(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):  # until the gateway closes the connection
        answer += chunk
    return answer


def test_a_header_past_the_bound_gets_431_and_the_connection_closes(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        try:
            while sent < 8 * MAX_HEAD_BYTES:  # the gateway hangs up long before this
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        head, _, body = read_all(sock).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), head
    assert json.loads(body)["error"]["code"] == "request_header_too_large"


def test_kept_alive_requests_and_big_bodies_pass(port: int) -> None:
    body = json.dumps({"prompt": "x" * (3 * MAX_HEAD_BYTES)}).encode()  # no model: a 503
    request = (
        b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    last = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request + request + last)
        answer = read_all(sock)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"503", b"503", b"200"], answer[:300]
