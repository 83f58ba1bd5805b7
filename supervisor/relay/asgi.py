"""The relay over ASGI: a relayed request sent to its child (``Proxy``) and the child's answer
given back as a Starlette response (``RelayResponse`` for a stream). The relay lane
(``relay/lane.py``) does the same off the sockets; what both pass on is ``relay/stream.py``'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from supervisor.children.child import Lease, Target
from supervisor.errors import BackendError
from supervisor.relay.destination import JSON
from supervisor.relay.disconnect import DisconnectWatch
from supervisor.relay.failures import CLIENT_CLOSED_REQUEST, map_upstream_errors, stream_broke
from supervisor.relay.stream import (
    StreamTranslator,
    is_event_stream,
    passed_headers,
    stream_headers,
)
from supervisor.relay.table import ModelFrom
from supervisor.relay.targets import peer_request
from supervisor.relay.upstream import (
    RawHeaders,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
)

LOG = logging.getLogger(__name__)


class Proxy:
    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool

    @property
    def pool(self) -> UpstreamPool:
        return self._pool

    def close(self) -> None:
        self._pool.close()

    async def forward(
        self,
        acquire: Callable[[], Awaitable[Lease[Target]]],
        path: str,
        body: bytes,
        stream: StreamTranslator,
        receive: Receive,
        *,
        answer: Callable[[int, bytes], bytes] | None = None,
        method: str = "POST",
        content_type: str = JSON,
        model_from: ModelFrom = ModelFrom.BODY,
    ) -> Response:
        """Wait for a slot (``acquire``), POST ``body`` to its child (or send ``method``)
        and relay the answer: SSE through ``stream`` (raw bytes with ``Passthrough``),
        anything else through ``answer`` (its status and body to the body the client gets).

        The client's disconnect is watched (on ``receive``) all along: a client that gives up
        while queued leaves the queue, and one that gives up while llama-server generates a
        non-streamed answer (sent only when complete) cancels the upstream request, so the
        slot frees at once."""
        exchange = await self._exchange(
            acquire, path, body, receive, method, content_type, model_from
        )
        if exchange is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        lease, upstream, content = exchange
        if is_event_stream(upstream.raw_headers):
            return RelayResponse(upstream, lease, stream, stream_headers(upstream.raw_headers))
        _close(upstream, lease)
        if answer is not None:
            content = answer(upstream.status_code, content)
        response = Response(content, upstream.status_code)
        response.raw_headers = [*passed_headers(upstream.raw_headers), *response.raw_headers]
        return response

    async def fetch_json(
        self,
        acquire: Callable[[], Awaitable[Lease[Target]]],
        path: str,
        body: bytes,
        receive: Receive,
    ) -> tuple[int, Any] | None:
        """Like ``forward`` for a non-streamed request whose answer a surface reshapes: the
        status and parsed JSON, or None if the client went away."""
        exchange = await self._exchange(acquire, path, body, receive)
        if exchange is None:
            return None
        lease, upstream, content = exchange
        _close(upstream, lease)
        try:
            return upstream.status_code, json.loads(content)
        except ValueError as exc:
            raise BackendError(f"Model '{lease.backend.model_id}' answered no JSON") from exc

    async def _exchange(
        self,
        acquire: Callable[[], Awaitable[Lease[Target]]],
        path: str,
        body: bytes,
        receive: Receive,
        method: str = "POST",
        content_type: str = JSON,
        model_from: ModelFrom = ModelFrom.BODY,
    ) -> tuple[Lease[Target], UpstreamResponse, bytes] | None:
        """The lease, the child's response (open if it streams) and its body if it does not;
        None if the client disconnected first (everything is released then)."""
        lease: Lease[Target] | None = None
        upstream: UpstreamResponse | None = None
        content = b""
        try:
            with DisconnectWatch(receive) as watch:
                lease = await acquire()
                with map_upstream_errors(lease.backend.model_id):
                    backend = lease.backend
                    if backend.upstream_model is not None:  # named as the peer knows it
                        path, body = peer_request(
                            model_from, path, body, content_type, backend.upstream_model
                        )
                    upstream = await self._pool.post(
                        backend.base_url, path, body, backend.api_key,
                        method=method, content_type=content_type,
                    )  # fmt: skip
                    if not is_event_stream(upstream.raw_headers):
                        content = await upstream.aread()
        except BaseException:
            _close(upstream, lease)
            raise
        if watch.gone or upstream is None or lease is None:
            _close(upstream, lease)  # the client went away: nobody reads the answer
            return None
        return lease, upstream, content


def _close(upstream: UpstreamResponse | None, lease: Lease[Target] | None) -> None:
    if upstream is not None:
        upstream.close()
    if lease is not None:
        lease.release()


class RelayResponse(Response):
    """Relays a child's SSE stream.

    Starlette's StreamingResponse (ASGI spec >= 2.4) notices a gone client only at its next
    send, and then leaves the body iterator unclosed. Here a watcher cancels the relay as soon
    as the client disconnects, and the upstream response is always closed, which makes
    llama-server drop the generation and free its slot at once."""

    def __init__(
        self,
        upstream: UpstreamResponse,
        lease: Lease[Target],
        stream: StreamTranslator,
        headers: RawHeaders,
    ) -> None:
        self.status_code = upstream.status_code
        self.background = None
        self.raw_headers = headers
        self._upstream = upstream
        self._lease = lease
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with DisconnectWatch(receive):
                await self._relay(send)
        except OSError:
            pass  # the client went away while we were sending
        finally:
            _close(self._upstream, self._lease)
            self._stream.closed()

    async def _relay(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        try:
            async for chunk in self._stream.chunks(self._upstream.aiter_raw()):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (UpstreamError, ValueError) as exc:
            model = self._lease.backend.model_id
            LOG.warning("[%s] stream broke: %r", model, exc)
            tail = self._stream.error(stream_broke(model))
            await send({"type": "http.response.body", "body": tail, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
