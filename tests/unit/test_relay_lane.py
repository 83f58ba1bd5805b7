"""The relay lane (supervisor/relay/lane.py, http/protocol.py) over a real socket, against a
FakeChild: which requests it takes, and what only a connection shows: pipelining, keep-alive,
hang-ups, queues, the drain and the child dropping or breaking its connection. Its answers
matching the ASGI way's is shown by test_fastlane.py and test_proxy_relay.py, which run both."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fake_child import DROP, Answer, FakeChild, Reply, Request, Stream
from fakes import FakeFactory
from fastapi import FastAPI
from served import served

from supervisor.app import create_app
from supervisor.config import Settings
from supervisor.http.protocol import RelayProtocol
from supervisor.http.server import http_protocol
from supervisor.relay.lane import Exchange, RelayLane
from supervisor.relay.stream import Passthrough
from supervisor.relay.table import RELAYS, ModelFrom

MODEL = "tiny.Q4_1"
CHAT = "/v1/chat/completions"
MakeGGUF = Callable[..., Path]
PATIENCE_S = 10.0
pytestmark = pytest.mark.timeout(60)


def chunk(text: str) -> bytes:
    return f"data: {json.dumps({'choices': [{'delta': {'content': text}}]})}\n\n".encode()


class Gateway:
    """A served app, its URL, and the number of requests its relay lane took."""

    def __init__(self, app: FastAPI, url: str, lane: RelayLane) -> None:
        self.app = app
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.lane = lane
        self.exchanges = 0

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=PATIENCE_S)

    def metric(self, name: str, **labels: str) -> float:
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        text = httpx.get(f"{self.url}/metrics", timeout=PATIENCE_S).text
        for line in text.splitlines():
            if line.startswith(name + "{") and all(label in line for label in wanted):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture
def make_gateway(
    tmp_path: Path, make_gguf: MakeGGUF, fake_child: FakeChild, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Gateway]]:
    make_gguf(f"models/{MODEL}.gguf")
    stack: list[Any] = []

    def make(**overrides: Any) -> Gateway:
        settings = Settings(
            models_dirs=[tmp_path / "models"],
            llama_server=Path(sys.executable),
            data_dir=tmp_path / "data",
            **overrides,
        )
        app = create_app(settings, factory=FakeFactory(base_url=fake_child.url))
        lane: RelayLane = app.state.relay_lane
        context = served(app, settings)
        gateway = Gateway(app, context.__enter__(), lane)
        stack.append(context)
        exchange = lane.exchange

        def counted(*args: Any) -> Any:
            gateway.exchanges += 1
            return exchange(*args)

        monkeypatch.setattr(lane, "exchange", counted)
        return gateway

    yield make
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.fixture
def gateway(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway()


def post(path: str, payload: dict[str, Any], *headers: str) -> bytes:
    body = json.dumps(payload).encode()
    lines = [f"POST {path} HTTP/1.1", "Host: gateway", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_answers(sock: socket.socket, count: int) -> list[httpx.Response]:
    """``count`` whole HTTP/1.1 answers from ``sock``, parsed (Content-Length or chunked)."""
    buffer = b""
    answers: list[httpx.Response] = []
    sock.settimeout(PATIENCE_S)
    while len(answers) < count:
        parsed = _one_answer(buffer)
        if parsed is None:
            data = sock.recv(65536)
            assert data, f"connection closed after {len(answers)} answer(s)"
            buffer += data
            continue
        response, buffer = parsed
        answers.append(response)
    return answers


def _one_answer(buffer: bytes) -> tuple[httpx.Response, bytes] | None:
    if b"\r\n\r\n" not in buffer:
        return None
    head, rest = buffer.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in header_lines]
    names = {name.lower(): value for name, value in headers}
    if "content-length" in names:
        length = int(names["content-length"])
        if len(rest) < length:
            return None
        body, rest = rest[:length], rest[length:]
    else:
        body = b""
        while True:
            if b"\r\n" not in rest:
                return None
            size_line, after = rest.split(b"\r\n", 1)
            size = int(size_line, 16)
            if len(after) < size + 2:
                return None
            body, rest = body + after[:size], after[size + 2 :]
            if size == 0:
                break
    status = int(status_line.split(" ")[1])
    return httpx.Response(status, headers=headers, content=body), rest


# Which requests the lane takes


# Every POST whose model is named in its JSON body, whatever its surface or child.
LANE_ROUTES = sorted(
    path
    for (method, path), relay in RELAYS.items()
    if method == "POST" and relay.model_from is ModelFrom.BODY
)


def test_a_relayed_post_takes_the_lane_and_everything_else_does_not(
    gateway: Gateway, fake_child: FakeChild
) -> None:
    assert {CHAT, "/v1/messages", "/v1/responses", "/infill", "/v1/rerank"} <= set(LANE_ROUTES)
    for number, path in enumerate(LANE_ROUTES):
        fake_child.answer("POST", path, Reply(json={"n": number}))
    fake_child.answer("GET", "/props", Reply(json={"total_slots": 1}))
    fake_child.answer("POST", "/lora-adapters", Reply(json=[]))
    fake_child.answer("POST", "/v1/audio/transcriptions", Reply(json={"text": "hi"}))
    with gateway.client() as client:
        for number, path in enumerate(LANE_ROUTES):
            assert client.post(path, json={"model": MODEL}).json() == {"n": number}, path
        assert gateway.exchanges == len(LANE_ROUTES)
        assert client.get("/health").status_code == 200
        assert client.get("/v1/models").status_code == 200
        assert client.get("/props", params={"model": MODEL}).json() == {"total_slots": 1}
        lora = client.post("/lora-adapters", params={"model": MODEL}, json=[])
        assert lora.status_code == 200 and lora.json() == []
        assert client.post("/lora-adapters", json=[]).json() == []  # the default model's
        form = client.post(
            "/v1/audio/transcriptions", data={"model": MODEL}, files={"file": b"RIFF"}
        )
        assert form.status_code == 400  # no audio projector: refused the ASGI way
        assert client.post(f"{CHAT}?trace=1", json={"model": MODEL}).status_code == 200
        chunked = client.post(CHAT, content=iter([b'{"model": "', MODEL.encode(), b'"}']))
        assert chunked.status_code == 200  # chunked: no length to check against the limit
        assert gateway.exchanges == len(LANE_ROUTES)  # all of those went the ASGI way
    assert (
        gateway.metric("llama_supervisor_requests_total", route=CHAT, model=MODEL, status="200")
        == 3
    )


def test_what_the_lane_does_not_admit_is_refused_the_asgi_way(
    make_gateway: Callable[..., Gateway], fake_child: FakeChild
) -> None:
    gateway = make_gateway(api_keys=["k-1"], max_body_bytes=1000)
    fake_child.answer("POST", CHAT, Reply(json={"choices": []}))
    with gateway.client() as client:
        missing = client.post(CHAT, json={"model": MODEL})
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "authentication_error"
        assert missing.headers["www-authenticate"] == "Bearer"
        too_big = client.post(
            CHAT, json={"model": MODEL, "pad": "x" * 2000}, headers={"Authorization": "Bearer k-1"}
        )
        assert too_big.status_code == 413
        assert gateway.exchanges == 0
        fine = client.post(CHAT, json={"model": MODEL}, headers={"Authorization": "Bearer k-1"})
        assert fine.status_code == 200
        assert gateway.exchanges == 1
    assert not [r for r in fake_child.received("POST", CHAT) if "pad" in r.json()]


def test_errors_are_in_the_surface_format_and_counted(
    gateway: Gateway, fake_child: FakeChild
) -> None:
    with gateway.client() as client:
        bad = client.post(CHAT, content=b"{not json")
        unknown = client.post("/completion", json={"model": "nope", "prompt": "x"})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert gateway.exchanges == 2
    assert fake_child.received("POST", CHAT) == []
    assert gateway.metric("llama_supervisor_requests_total", route=CHAT, status="400") == 1


# One connection


def test_pipelined_requests_are_answered_in_order(gateway: Gateway, fake_child: FakeChild) -> None:
    fake_child.answer("POST", CHAT, lambda request: Reply(json={"echo": request.json()["n"]}))
    fake_child.answer("POST", "/completion", Stream([b"data: {}\n\n"]))
    pipelined = (
        post(CHAT, {"model": MODEL, "n": 1})
        + post("/completion", {"model": MODEL, "stream": True})
        + b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n"
        + post(CHAT, {"model": MODEL, "n": 2})
        + post(CHAT, {"model": MODEL, "n": 3})
    )
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(pipelined)
        answers = read_answers(sock, 5)
    assert answers[0].json() == {"echo": 1}
    assert answers[1].content == b"data: {}\n\ndata: [DONE]\n\n"
    assert answers[2].json()["status"] == "ok"
    assert [a.json() for a in answers[3:]] == [{"echo": 2}, {"echo": 3}]
    assert gateway.exchanges == 1  # the rest queued behind it, as uvicorn queues them


def test_connection_close_and_http_1_0_get_their_answer_then_the_connection_ends(
    gateway: Gateway, fake_child: FakeChild
) -> None:
    fake_child.answer("POST", CHAT, Reply(json={"ok": True}))
    for request in (
        post(CHAT, {"model": MODEL}, "Connection: close"),
        post(CHAT, {"model": MODEL}).replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    ):
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            sock.sendall(request)
            (answer,) = read_answers(sock, 1)
            assert answer.json() == {"ok": True}
            assert sock.recv(1) == b""  # closed by the gateway
    assert gateway.exchanges == 1  # HTTP/1.0 goes the ASGI way


def test_a_kept_alive_connection_serves_request_after_request(
    gateway: Gateway, fake_child: FakeChild
) -> None:
    fake_child.answer("POST", CHAT, lambda request: Reply(json={"n": request.json()["n"]}))
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        for n in range(5):
            sock.sendall(post(CHAT, {"model": MODEL, "n": n}))
            assert read_answers(sock, 1)[0].json() == {"n": n}
    assert gateway.exchanges == 5
    assert len({r.connection for r in fake_child.received("POST", CHAT)}) == 1


# The child's side


def test_a_connection_the_child_dropped_is_retried_once_on_a_fresh_one(
    gateway: Gateway, fake_child: FakeChild
) -> None:
    seen: list[Request] = []

    def answer(request: Request) -> Answer:
        seen.append(request)
        return DROP if len(seen) == 2 else Reply(json={"n": len(seen)})

    fake_child.answer("POST", CHAT, answer)
    with gateway.client() as client:
        assert client.post(CHAT, json={"model": MODEL}).json() == {"n": 1}
        assert client.post(CHAT, json={"model": MODEL}).json() == {"n": 3}
    assert seen[1].connection == seen[0].connection
    assert seen[2].connection != seen[0].connection


def test_a_child_that_breaks_mid_stream_ends_it_with_an_error_event(
    gateway: Gateway, fake_child: FakeChild
) -> None:
    fake_child.answer("POST", CHAT, Stream([chunk("Hel")], end="break"))
    with gateway.client() as client:
        answer = client.post(CHAT, json={"model": MODEL, "stream": True})
        assert answer.status_code == 200
        events = answer.text.split("\n\n")
        assert events[0] + "\n\n" == chunk("Hel").decode()
        assert json.loads(events[1].removeprefix("data: "))["error"]["type"] == "server_error"
        assert events[2] == "data: [DONE]"
        assert client.get("/health").status_code == 200  # and the connection goes on


def test_a_child_that_cannot_be_reached_is_a_502(gateway: Gateway, fake_child: FakeChild) -> None:
    fake_child.answer("POST", CHAT, DROP)
    with gateway.client() as client:
        answer = client.post(CHAT, json={"model": MODEL})
    assert answer.status_code == 502
    assert "backend failed" in answer.json()["error"]["message"]


# The client going away, queues and the drain


def test_a_client_hanging_up_mid_stream_closes_the_child_connection(
    gateway: Gateway, fake_child: FakeChild
) -> None:
    fake_child.answer("POST", CHAT, Stream([chunk("Hel")], end="hold"))
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(post(CHAT, {"model": MODEL, "stream": True}))
        read_until(sock, b"Hel")
        assert gateway.app.state.drain.in_flight == 1
    assert fake_child.hung_up.wait(PATIENCE_S)
    wait_until(lambda: gateway.app.state.drain.in_flight == 0)
    assert gateway.exchanges == 1
    assert gateway.metric("llama_supervisor_requests_total", route=CHAT, status="200") == 1


def test_a_client_hanging_up_while_queued_leaves_the_queue(
    make_gateway: Callable[..., Gateway], fake_child: FakeChild
) -> None:
    gateway = make_gateway(parallel=1)
    fake_child.answer("POST", CHAT, Stream([chunk("Hel")], end="hold"))
    with socket.create_connection(("127.0.0.1", gateway.port)) as holder:
        holder.sendall(post(CHAT, {"model": MODEL, "stream": True}))
        read_until(holder, b"Hel")  # the only slot is taken
        with socket.create_connection(("127.0.0.1", gateway.port)) as queued:
            queued.sendall(post(CHAT, {"model": MODEL, "n": "queued"}))
            wait_until(lambda: gateway.metric("llama_supervisor_queue_depth") == 1)
        wait_until(lambda: gateway.metric("llama_supervisor_queue_depth") == 0)
        assert gateway.metric("llama_supervisor_requests_total", status="499") == 1
    assert fake_child.hung_up.wait(PATIENCE_S)
    assert len(fake_child.received("POST", CHAT)) == 1  # the queued one never reached it
    assert gateway.exchanges == 2


def test_a_queued_request_is_served_when_the_slot_frees(
    make_gateway: Callable[..., Gateway], fake_child: FakeChild
) -> None:
    gateway = make_gateway(parallel=1)
    release = threading.Event()

    def slow(request: Request) -> Answer:
        if request.json().get("n") == 1:
            release.wait(PATIENCE_S)
        return Reply(json={"n": request.json().get("n")})

    fake_child.answer("POST", CHAT, slow)
    results: dict[int, Any] = {}

    def ask(n: int) -> None:
        with gateway.client() as client:
            results[n] = client.post(CHAT, json={"model": MODEL, "n": n}).json()

    first = threading.Thread(target=ask, args=(1,))
    first.start()
    wait_until(lambda: len(fake_child.received("POST", CHAT)) == 1)
    second = threading.Thread(target=ask, args=(2,))
    second.start()
    wait_until(lambda: gateway.metric("llama_supervisor_queue_depth") == 1)
    release.set()
    first.join(PATIENCE_S)
    second.join(PATIENCE_S)
    assert results == {1: {"n": 1}, 2: {"n": 2}}


def test_a_slow_reader_gets_a_long_stream_whole(gateway: Gateway, fake_child: FakeChild) -> None:
    pieces = [b"data: " + bytes([65 + i % 26]) * 60_000 + b"\n\n" for i in range(64)]
    fake_child.answer("POST", CHAT, Stream(pieces))
    received = bytearray()
    with (
        gateway.client() as client,
        client.stream("POST", CHAT, json={"model": MODEL, "stream": True}) as answer,
    ):
        for piece in answer.iter_raw(4096):
            received += piece
            if len(received) < 1_000_000:
                time.sleep(0.001)  # slower than the socket at first
    assert bytes(received) == b"".join(pieces)


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    sock.settimeout(PATIENCE_S)
    received = b""
    while marker not in received:
        data = sock.recv(65536)
        assert data, "connection closed"
        received += data
    return received


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# Framing


class RecordingClient:
    """An exchange's client connection that keeps what is written to it."""

    writing_paused = False

    def __init__(self) -> None:
        self.default_headers: list[tuple[bytes, bytes]] = []
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def test_an_empty_piece_of_a_stream_does_not_end_its_chunked_body() -> None:
    """A stream translator may give nothing for a piece of the child's body: framed as a
    chunk, nothing is the chunked body's end (``0\\r\\n\\r\\n``), and what follows would be
    garbage to the client."""
    client = RecordingClient()
    services = SimpleNamespace(proxy=SimpleNamespace(pool=None))
    lane = SimpleNamespace(observer=SimpleNamespace(now=time.perf_counter))
    exchange = Exchange(lane, services, client, RELAYS["POST", CHAT], b"{}", True)
    exchange._plan = SimpleNamespace(stream=Passthrough(lambda error: b""))
    exchange.answer_head(200, [(b"content-type", b"text/event-stream")])
    for piece in (b"data: 1\n\n", b"", b"data: 2\n\n"):
        exchange.answer_body(piece)
    body = b"".join(client.written).split(b"\r\n\r\n", 1)[1]
    assert body == b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n"


def test_cors_or_the_access_log_sends_every_request_the_asgi_way(tmp_path: Path) -> None:
    """The lane writes neither CORS headers nor access-log lines: either setting turns it off,
    through the one switch ``Settings.relay_lane_enabled``."""
    base = {"models_dirs": [tmp_path], "llama_server": Path(sys.executable)}
    for overrides, lane in [({}, True), ({"cors_origins": ["https://a.example"]}, False),
                            ({"access_log": True}, False)]:  # fmt: skip
        settings = Settings(**base, **overrides)
        assert settings.relay_lane_enabled is lane
        protocol = http_protocol(create_app(settings), settings)
        assert issubclass(protocol, RelayProtocol) is lane
