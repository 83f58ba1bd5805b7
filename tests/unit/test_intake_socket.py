"""The intake's bounds (supervisor/http/intake.py, intake_protocol.py) over real sockets, with short
timeouts (issue 21, items 2 and 5): silent and trickling clients get a 408 or a closed
connection in the surface's format, one connection past the cap and a body past the bytes
bound a 503, while fair clients pass; and a request pipelined behind one the relay lane
refused at once is not cut by uvicorn's keep-alive timer."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_child import Answer, FakeChild, Reply, Request, Stream
from fakes import FakeFactory
from served import MakeSettings, served

from supervisor.app import create_app

MODEL = "tiny.Q4_1"
CHAT = "/v1/chat/completions"
MakeGGUF = Callable[..., Path]
PATIENCE_S = 10.0
SHORT = {"head_timeout_s": 0.4, "body_idle_timeout_s": 0.4}
pytestmark = pytest.mark.timeout(60)


class Gateway:
    def __init__(self, url: str) -> None:
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=PATIENCE_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def cuts(self, reason: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=PATIENCE_S).text
        for line in text.splitlines():
            if line.startswith("llama_supervisor_connections_cut_total{") and reason in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture
def make_gateway(
    make_gguf: MakeGGUF, make_settings: MakeSettings, factory: FakeFactory
) -> Iterator[Callable[..., Gateway]]:
    make_gguf(f"models/{MODEL}.gguf")
    with ExitStack() as stack:

        def make(config: dict[str, Any] | None = None, **overrides: Any) -> Gateway:
            settings = make_settings(**overrides)
            app = create_app(settings, factory=factory)
            return Gateway(stack.enter_context(served(app, settings, **(config or {}))))

        yield make


def head(path: str, length: int, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gateway", f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(path: str, payload: dict[str, Any], *extra: str) -> bytes:
    body = json.dumps(payload).encode()
    return head(path, len(body), *extra) + body


def until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """All the gateway writes until it closes the connection, and how long that took."""
    started, answer = time.monotonic(), b""
    try:
        while data := sock.recv(65536):
            answer += data
    except ConnectionResetError:
        pass
    return answer, time.monotonic() - started


def answer_of(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head_part, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head_part.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, json.loads(body)


# Time


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    make_gateway: Callable[..., Gateway],
) -> None:
    gateway = make_gateway(**SHORT)
    with gateway.connect() as silent:
        answer, took = until_closed(silent)
    assert answer == b"" and took < PATIENCE_S
    assert gateway.cuts("head_timeout") == 1


def test_a_trickled_head_gets_a_408_and_the_connection_closes(
    make_gateway: Callable[..., Gateway],
) -> None:
    gateway = make_gateway(**SHORT)
    with gateway.connect() as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
        for _ in range(40):  # a header byte every 0.05 s: never idle, never done
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)
        answer, _ = until_closed(sock)
    status, headers, body = answer_of(answer)
    assert status == 408 and headers["connection"] == "close"
    assert body["error"]["code"] == "request_timeout"
    assert gateway.cuts("head_timeout") == 1


@pytest.mark.parametrize(
    ("path", "error_of"),
    [
        (CHAT, lambda body: body["error"]["code"]),  # the relay lane
        (f"{CHAT}?way=asgi", lambda body: body["error"]["code"]),  # the ASGI way
        ("/api/chat", lambda body: "request_timeout" if "slowly" in body["detail"] else ""),
    ],
)
def test_a_stalled_body_gets_a_408_in_the_surfaces_format(
    make_gateway: Callable[..., Gateway], path: str, error_of: Callable[[Any], str]
) -> None:
    gateway = make_gateway(**SHORT)
    with gateway.connect() as sock:
        sock.sendall(head(path, 100) + b'{"model":')
        answer, _ = until_closed(sock)
    status, _, body = answer_of(answer)
    assert status == 408 and error_of(body) == "request_timeout"
    assert gateway.cuts("body_timeout") == 1


def test_a_body_trickled_below_the_minimum_rate_gets_a_408(
    make_gateway: Callable[..., Gateway], fake_child: FakeChild
) -> None:
    gateway = make_gateway(**SHORT)
    body = json.dumps({"model": MODEL, "pad": "x" * 200}).encode()
    with gateway.connect() as sock:
        sock.sendall(head(CHAT, len(body)))
        for byte in body:  # never idle for 0.4 s, but about 20 bytes a second
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)
        answer, _ = until_closed(sock)
    assert answer_of(answer)[0] == 408
    assert gateway.cuts("body_too_slow") == 1
    assert fake_child.received("POST", CHAT) == []
    requests = httpx.get(f"{gateway.url}/metrics", timeout=PATIENCE_S).text
    assert 'status="499"' not in requests  # the gateway cut it: not the client's hang-up


def test_fair_clients_pass_slow_pauses_and_all(
    make_gateway: Callable[..., Gateway], fake_child: FakeChild
) -> None:
    fake_child.answer("POST", CHAT, Reply(json={"ok": True}))
    gateway = make_gateway(head_timeout_s=1.0, body_idle_timeout_s=1.0)
    body = json.dumps({"model": MODEL}).encode()
    with gateway.connect() as sock:
        sock.sendall(head(CHAT, len(body))[:20])
        time.sleep(0.4)
        sock.sendall(head(CHAT, len(body))[20:] + body[:5])
        time.sleep(0.6)
        sock.sendall(body[5:] + post(CHAT, {"model": MODEL}, "Connection: close"))
        answer, _ = until_closed(sock)
    assert answer.count(b"HTTP/1.1 200 ") == 2
    assert gateway.cuts("") == 0


# Open files and memory


def test_one_connection_past_the_cap_gets_a_503_at_once(
    make_gateway: Callable[..., Gateway],
) -> None:
    gateway = make_gateway(max_connections=3)
    with gateway.connect(), gateway.connect(), gateway.connect(), gateway.connect() as fourth:
        answer, _ = until_closed(fourth)
        status, headers, body = answer_of(answer)
        assert status == 503 and headers["retry-after"] == "1"
        assert body["error"]["code"] == "gateway_busy"
    with httpx.Client(base_url=gateway.url, timeout=PATIENCE_S) as client:
        assert client.get("/health").status_code == 200  # the held ones are gone: room again
    assert gateway.cuts("too_many_connections") == 1


def test_unfinished_bodies_past_the_bound_get_a_503_and_the_rest_pass(
    make_gateway: Callable[..., Gateway], fake_child: FakeChild
) -> None:
    fake_child.answer("POST", CHAT, lambda request: Reply(json={"size": len(request.body)}))
    gateway = make_gateway(max_body_bytes=10_000, max_pending_body_bytes=15_000)
    body = json.dumps({"model": MODEL, "pad": "x" * 9_000}).encode()
    with gateway.connect() as first, gateway.connect() as second:
        first.sendall(head(CHAT, len(body)) + body[:8_000])
        time.sleep(0.2)
        second.sendall(head(CHAT, len(body)) + body[:8_000])
        answer, _ = until_closed(second)
        status, _, refusal = answer_of(answer)
        assert status == 503 and refusal["error"]["code"] == "gateway_busy"
        first.sendall(body[8_000:] + b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
        answer, _ = until_closed(first)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert json.dumps({"size": len(body)}).encode() in answer
    assert gateway.cuts("pending_body_bytes") == 1


# uvicorn's keep-alive timer and the relay lane


@pytest.mark.parametrize("follow_up", [CHAT, f"{CHAT}?way=asgi"])
def test_a_request_pipelined_behind_an_at_once_refusal_is_not_cut(
    make_gateway: Callable[..., Gateway], fake_child: FakeChild, follow_up: str
) -> None:
    def slow_stream(request: Request) -> Answer:
        time.sleep(1.0)  # well past the keep-alive timeout below
        return Stream([b'data: {"n": 1}\n\n', b'data: {"n": 2}\n\n'])

    fake_child.answer("POST", CHAT, slow_stream)
    gateway = make_gateway(config={"timeout_keep_alive": 0.2})
    bad = head(CHAT, 1) + b"{"  # bad JSON: the lane answers it inside the same read
    with gateway.connect() as sock:
        sock.sendall(bad + post(follow_up, {"model": MODEL, "stream": True}))
        answer, _ = until_closed(sock)  # closed by the keep-alive timer once both are answered
    first, _, second = answer.partition(b"HTTP/1.1 200 ")
    assert first.startswith(b"HTTP/1.1 400 ")
    assert b'data: {"n": 2}' in second
    assert second.endswith(b"0\r\n\r\n")
