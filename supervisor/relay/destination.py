"""Where a relayed request goes, below HTTP: the head of a request to an address (kept per
child and path by the relay lane), and the keep-alive probes a connection to another host
(a peer) gets. ``upstream.py`` sends on them."""

from __future__ import annotations

import asyncio
import socket

Address = tuple[str, int]
JSON = "application/json"
LOOPBACK = ("127.", "localhost", "::1")
# TCP keep-alive on a connection to another host (a peer): idle seconds before the first
# probe, seconds between probes, probes unanswered before the kernel gives up (~25 s).
TCP_KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))


def request_head(
    address: Address,
    path: str,
    api_key: str | None = None,
    *,
    method: str = "POST",
    content_type: str = JSON,
) -> bytes:
    """A request's head up to its Content-Length's value, which ``Connection.send`` fills in:
    the rest is the same for every request to a child's path, so it can be kept. ``path`` (a
    query string too) and ``content_type`` come from a parsed request (no line breaks)."""
    authorization = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n{authorization}"
        f"Content-Type: {content_type}\r\nContent-Length: "
    ).encode("latin-1")


def probed(transport: asyncio.BaseTransport) -> None:
    """Keep-alive probes on a connection to another host (a peer): a host gone from the
    network sends no reset, and a request waiting on it would wait for ever; the probes end
    it as a lost connection (a 502, or a stream's error event). A child, on loopback, goes
    without: its death is a reset at once."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in TCP_KEEPALIVE:
            option = getattr(socket, name, None)  # Linux's; elsewhere the system's defaults
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:  # not TCP after all: nothing to probe
        return
