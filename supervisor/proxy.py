"""The shared HTTP client and the relay from a child back to the client.

Bytes from the child are passed through untouched: no JSON parsing, no re-buffering. Per chunk
the relay only remembers whether the chunk ended an SSE event, so that an error event appended
after a child's death starts on a fresh line.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import httpx
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from .backends.pool import Lease
from .errors import BackendError, SupervisorError

LOG = logging.getLogger(__name__)

ErrorEvent = Callable[[SupervisorError], bytes]
STREAM_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}
HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}
)


def make_client() -> httpx.AsyncClient:
    """One pooled client for all children; generations may run for a long time, so no read
    timeout (liveness is the supervisor's job, not a socket timer's)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=10.0, read=None, write=60.0, pool=60.0),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        trust_env=False,
    )


@contextlib.contextmanager
def map_upstream_errors(model: str) -> Iterator[None]:
    """Translate httpx's errors into ours, once, at the boundary."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise BackendError(f"Model '{model}' backend failed: {type(exc).__name__}") from exc


class Proxy:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def forward(
        self, lease: Lease, path: str, body: bytes, error_event: ErrorEvent
    ) -> Response:
        """POST ``body`` to the child and relay its answer; SSE answers are streamed."""
        backend = lease.backend
        request = self._client.build_request(
            "POST",
            backend.base_url + path,
            content=body,
            headers={"content-type": "application/json"},
        )
        try:
            with map_upstream_errors(backend.entry.id):
                upstream = await self._client.send(request, stream=True)
        except BaseException:
            lease.release()
            raise
        content_type = upstream.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            try:
                with map_upstream_errors(backend.entry.id):
                    content = await upstream.aread()
            finally:
                await upstream.aclose()
                lease.release()
            return Response(content, upstream.status_code, _passed_headers(upstream))
        headers = _passed_headers(upstream) | STREAM_HEADERS
        return StreamingResponse(
            relay(upstream, lease, error_event),
            status_code=upstream.status_code,
            headers=headers,
            background=BackgroundTask(_finish, upstream, lease),
        )


def _passed_headers(upstream: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}


async def _finish(upstream: httpx.Response, lease: Lease) -> None:
    with anyio.CancelScope(shield=True):
        await upstream.aclose()
    lease.release()


async def relay(
    upstream: httpx.Response, lease: Lease, error_event: ErrorEvent
) -> AsyncIterator[bytes]:
    """Yield the child's bytes as they come. If the child dies mid-stream, end with one error
    event (and whatever terminator ``error_event`` adds). When the client goes away, Starlette
    cancels us; closing the upstream response then makes llama-server drop the generation and
    free its slot at once."""
    event_closed = True
    try:
        async for chunk in upstream.aiter_raw():
            event_closed = chunk.endswith(b"\n\n")
            yield chunk
    except httpx.HTTPError as exc:
        LOG.warning("[%s] stream broke: %s", lease.backend.entry.id, exc)
        error = BackendError(
            f"Model '{lease.backend.entry.id}' backend failed during the stream; "
            "the request did not complete"
        )
        yield (b"" if event_closed else b"\n\n") + error_event(error)
    finally:
        await _finish(upstream, lease)
