"""A bound on a request's head (request line and headers) for uvicorn's httptools protocol.

httptools keeps a header line in memory until it ends, however long: one client sending a
64 MB header grew the gateway by 64 MB (and more clients, more so). This protocol counts the
bytes of a request's head as they arrive and, past ``MAX_HEAD_BYTES``, answers 431 and closes
the connection. The count may include the tail of the previous request's body when a read
holds both, so the bound is generous next to real heads (a few KiB).
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 1024 * 1024
_MESSAGE = f"Request line and headers are larger than {MAX_HEAD_BYTES} bytes"
_BODY = json.dumps(
    {
        "error": {
            "message": _MESSAGE,
            "type": "invalid_request_error",
            "param": None,
            "code": "request_header_too_large",
        }
    }
).encode()
_ANSWER = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


class BoundedHeadProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # whatever comes next starts the next request's head
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self.transport.write(_ANSWER)
            self.transport.close()
