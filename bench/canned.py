"""A zero-cost upstream: a tiny HTTP/1.1 server that answers like llama-server, instantly.

``GET /health`` is ``{"status":"ok"}``; ``POST /v1/chat/completions`` is a fixed
``chat.completion``, or with ``"stream": true`` a fixed SSE stream of ``--events`` token
chunks, a closing chunk and ``data: [DONE]``, each event its own HTTP chunk as llama-server
sends them. Keep-alive connections, no model, no work: what the gateway does in front of it is
the gateway's own cost.

Run as ``python -m bench.canned --port N [--events N]``; every other argument (the gateway
passes llama-server's flags) is ignored, so a script that execs this can stand in for
``--llama-server``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

MODEL = "canned"
MAX_HEADER_BYTES = 65536


def _chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
    return {
        "choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
        "created": int(time.time()),
        "id": "chatcmpl-canned00000000000000000000000",
        "model": MODEL,
        "system_fingerprint": "b1-canned",
        "object": "chat.completion.chunk",
    }


def sse_body(events: int) -> list[bytes]:
    """The stream's events, each framed as one HTTP/1.1 chunk."""
    payloads = [_chunk({"role": "assistant", "content": None})]
    payloads += [_chunk({"content": f" tok{i}"}) for i in range(events)]
    payloads.append(_chunk({}, finish="length"))
    framed = [f"data: {json.dumps(p, separators=(',', ':'))}\n\n".encode() for p in payloads]
    framed.append(b"data: [DONE]\n\n")
    return [b"%x\r\n%s\r\n" % (len(event), event) for event in framed] + [b"0\r\n\r\n"]


def json_body() -> bytes:
    reply = {
        "choices": [
            {
                "finish_reason": "length",
                "index": 0,
                "message": {"role": "assistant", "content": "Hi"},
            }
        ],
        "created": int(time.time()),
        "model": MODEL,
        "object": "chat.completion",
        "usage": {"completion_tokens": 1, "prompt_tokens": 8, "total_tokens": 9},
        "id": "chatcmpl-canned00000000000000000000000",
    }
    return json.dumps(reply, separators=(",", ":")).encode()


def _response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nKeep-Alive: timeout=5, max=100000\r\n\r\n"
    )
    return head.encode() + body


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\nKeep-Alive: timeout=5, max=100000\r\n\r\n"
)
HEALTH = _response("200 OK", b'{"status":"ok"}')
NOT_FOUND = _response("404 Not Found", b'{"error":{"code":404,"message":"File Not Found"}}')


class CannedServer:
    def __init__(self, events: int) -> None:
        self._stream = sse_body(events)
        self._json = _response("200 OK", json_body())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection should close."""
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, _, header_block = head.partition(b"\r\n")
        method, path, _ = request_line.split(b" ", 2)
        headers = _headers(header_block)
        body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        if method == b"GET" and path == b"/health":
            writer.write(HEALTH)
        elif method == b"POST" and path.split(b"?")[0] == b"/v1/chat/completions":
            if _wants_stream(body):
                writer.write(STREAM_HEAD)
                for chunk in self._stream:
                    writer.write(chunk)
            else:
                writer.write(self._json)
        else:
            writer.write(NOT_FOUND)
        await writer.drain()
        return headers.get(b"connection", b"").lower() != b"close"


def _headers(block: bytes) -> dict[bytes, bytes]:
    pairs = (line.partition(b":") for line in block.split(b"\r\n") if line)
    return {name.strip().lower(): value.strip() for name, _, value in pairs}


def _wants_stream(body: bytes) -> bool:
    try:
        return bool(json.loads(body).get("stream"))
    except (ValueError, AttributeError):
        return False


async def serve(host: str, port: int, events: int) -> None:
    server = await asyncio.start_server(
        CannedServer(events).handle, host, port, limit=MAX_HEADER_BYTES, backlog=1024
    )
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.canned", description=__doc__, allow_abbrev=False
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--events", type=int, default=64, help="token events per stream")
    args, _ignored = parser.parse_known_args(argv)  # llama-server's flags, from the gateway
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port, args.events))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
