"""A real HTTP/1.1 server standing in for llama-server's HTTP side, for tests that need the
relay's own client to talk over a socket (respx only reaches httpx).

Tests set an answer per (method, path): a ``Reply``, a chunked ``Stream`` (which can end
properly, break off without its final chunk, or hold the connection until the gateway hangs
up), ``DROP`` (close without answering, as llama-server does to a kept-alive connection), or a
function of the ``Request`` returning one of those. Every request is recorded, with the number
of the connection it came on. Connections are kept alive, as llama-server does.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

SSE = {"Content-Type": "text/event-stream"}
HEALTHY = {"status": "ok"}
HOLD_LIMIT_S = 30.0  # a held stream gives up on its own after this, should nobody hang up


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    connection: int  # 1 for the server's first connection, 2 for the next...
    query: str = ""  # routed on the path alone, as llama-server does

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """A whole answer: ``json`` if given, else ``body``."""

    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stream:
    """A chunked answer, each piece sent and flushed on its own. ``end``: "done" sends the
    final chunk; "break" closes the connection without it (a child killed mid-stream); "hold"
    sends nothing more and waits until the peer closes the connection (sets ``hung_up``)."""

    pieces: list[bytes]
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: dict(SSE))
    end: Literal["done", "break", "hold"] = "done"


class Drop:
    """Close the connection without answering."""


DROP = Drop()
Answer = Reply | Stream | Drop
Route = Answer | Callable[[Request], Answer]
NOT_FOUND = Reply(404, json={"error": {"code": 404, "message": "File Not Found"}})


class FakeChild:
    """The server, on 127.0.0.1 and a free port, serving from a thread while entered.
    ``requests`` lists what it got, ``connections`` counts the connections it accepted, and
    ``hung_up`` is set when a peer closes a held stream."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {("GET", "/health"): Reply(json=HEALTHY)}
        self.requests: list[Request] = []
        self.hung_up = threading.Event()
        self.connections = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopping = False
        self._server = _Server(self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def answer(self, method: str, path: str, route: Route) -> None:
        self.routes[(method, path)] = route

    def received(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    def __enter__(self) -> FakeChild:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping = True
        self._server.shutdown()
        with self._lock:
            for sock in self._open:  # kept-alive connections would wait for a request
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join()

    # called from the server's threads

    def _opened(self, sock: socket.socket) -> int:
        with self._lock:
            self._open.add(sock)
            self.connections += 1
            return self.connections

    def _closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def _route(self, request: Request) -> Answer:
        self.requests.append(request)
        route = self.routes.get((request.method, request.path), NOT_FOUND)
        return route if isinstance(route, Reply | Stream | Drop) else route(request)


class _Server(ThreadingHTTPServer):
    def __init__(self, fake: FakeChild) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a gateway that hung up
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.fake = self.server.fake
        self.number = self.fake._opened(self.connection)

    def finish(self) -> None:
        self.fake._closed(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        path, _, query = self.path.partition("?")
        request = Request(self.command, path, headers, body, self.number, query)
        answer = self.fake._route(request)
        if isinstance(answer, Reply):
            self._reply(answer)
        elif isinstance(answer, Stream):
            self._stream(answer)
        else:
            self.close_connection = True

    def _reply(self, reply: Reply) -> None:
        body = reply.body if reply.json is None else json.dumps(reply.json).encode()
        headers = reply.headers
        if reply.json is not None:
            headers = {"Content-Type": "application/json"} | headers
        self._head(reply.status, headers | {"Content-Length": str(len(body))})
        self.wfile.write(body)

    def _stream(self, stream: Stream) -> None:
        self._head(stream.status, stream.headers | {"Transfer-Encoding": "chunked"})
        for piece in stream.pieces:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        if stream.end == "done":
            self.wfile.write(b"0\r\n\r\n")
            return
        self.close_connection = True
        if stream.end == "hold" and _wait_for_hang_up(self.connection) and not self.fake._stopping:
            self.fake.hung_up.set()

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()


def _wait_for_hang_up(sock: socket.socket) -> bool:
    """Whether the peer closed the connection (before ``HOLD_LIMIT_S``)."""
    sock.settimeout(HOLD_LIMIT_S)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass  # reset by the peer
    return True
