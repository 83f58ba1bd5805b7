"""A file server on a real socket for the pull tests: serves byte strings by path, honours
``Range`` and ``If-Range`` (or ignores them), sends each file's ETag (its sha256's start),
records every request's headers, and misbehaves on demand: cuts the connection after some
bytes, claims a wrong Content-Length, sends slowly, redirects."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d+)-$")


@dataclass
class Faults:
    cut_after: int | None = None  # body bytes sent before the connection is cut
    cuts: int = 1  # how many answers are cut so
    ignore_range: bool = False  # answer 200 with the whole file whatever was asked
    extra_length: int = 0  # Content-Length claims this many bytes more than are sent
    chunk: int = 16 * 1024
    chunk_delay_s: float = 0.0  # a pause before each chunk (a slow server)
    no_validator: bool = False  # send no ETag (nor Last-Modified)


@dataclass
class ModelServer:
    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)  # path → Location
    faults: Faults = field(default_factory=Faults)
    requests: list[dict[str, str]] = field(default_factory=list)  # headers, lower-cased names
    stopping: threading.Event = field(default_factory=threading.Event)
    etags: dict[str, str] = field(default_factory=dict)  # path → the ETag of what it serves

    def serve(self, path: str, content: bytes) -> str:
        """Serve ``content`` at ``path``; its URL."""
        self.files[path] = content
        self.etags[path] = etag(content)
        return self.url + path


def _handler(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            server.requests.append({k.lower(): v for k, v in self.headers.items()})
            path = self.path.split("?", 1)[0]
            if path in server.redirects:
                self._answer(302, b"", {"Location": server.redirects[path]})
                return
            content = server.files.get(path)
            if content is None:
                self._answer(404, b"not found", {})
                return
            tag_value = server.etags.get(path) or etag(content)
            start = self._range_start(tag_value)
            if start is not None and start >= len(content):
                self._answer(416, b"", {"Content-Range": f"bytes */{len(content)}"})
                return
            tag = {} if server.faults.no_validator else {"ETag": tag_value}
            if start is None:
                self._send(200, content, tag)
                return
            rest = content[start:]
            extent = f"bytes {start}-{len(content) - 1}/{len(content)}"
            self._send(206, rest, {"Content-Range": extent} | tag)

        def _range_start(self, tag_value: str) -> int | None:
            """Where the asked range starts; None for the whole file: no range asked, ranges
            ignored, or an ``If-Range`` that is not the file's ETag."""
            match = _RANGE.match(self.headers.get("Range", ""))
            if match is None or server.faults.ignore_range:
                return None
            if_range = self.headers.get("If-Range")
            if if_range is not None and if_range != tag_value:
                return None
            return int(match.group(1))

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            faults = server.faults
            cut = faults.cut_after if faults.cuts > 0 else None
            if cut is not None:
                faults.cuts -= 1
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body) + faults.extra_length))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            sent = 0
            try:
                while sent < len(body) and not server.stopping.is_set():
                    if faults.chunk_delay_s:
                        time.sleep(faults.chunk_delay_s)
                    size = faults.chunk if cut is None else min(faults.chunk, cut - sent)
                    self.wfile.write(body[sent : sent + size])
                    self.wfile.flush()
                    sent += size
                    if cut is not None and sent >= cut:
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                if faults.extra_length:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
            except OSError:  # the client went: a cancelled pull
                self.close_connection = True

    return Handler


def etag(content: bytes) -> str:
    return '"' + hashlib.sha256(content).hexdigest()[:16] + '"'


@contextmanager
def model_server() -> Iterator[ModelServer]:
    """A ``ModelServer`` on 127.0.0.1, served from a thread while the block runs."""
    state = ModelServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
