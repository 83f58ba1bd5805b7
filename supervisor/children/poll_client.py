"""The HTTP client for children's readiness and health polls (the relay has its own,
``relay/upstream.py``'s ``UpstreamPool``)."""

from __future__ import annotations

import httpx


def make_client() -> httpx.AsyncClient:
    """Idle connections are dropped after 2 s, well before llama-server's own 5 s keep-alive
    timeout."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=10.0, read=None, write=60.0, pool=60.0),
        limits=httpx.Limits(max_connections=None, keepalive_expiry=2.0),
        trust_env=False,
    )
