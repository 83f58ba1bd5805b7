"""The relay lane: relayed POSTs served straight off the sockets, without ASGI.

Behind a real model at concurrency 1 (requests taking turns with direct ones to the same
child), the ASGI way added 1.1 to 1.6 ms to a relayed request, where a bare callback relay on
the same sockets added 0.3 to 0.4 ms: uvicorn's request cycle, the ASGI layers, Starlette's
request and response objects and the tasks in between made most of the difference, their code
run cold after each 30 ms of llama-server's work. This lane added 0.6 ms.

So a POST to a relayed route (``table.RELAYS``) whose model is named in its JSON body, and
whose head admission lets in (``http/admission.py``, the ASGI guard's judge too) is an
``Exchange``: the body is checked and routed as on the ASGI way (``plan.plan_relay``), sent
on a pooled connection, and the child's answer written to the client from the connection's
callbacks (``upstream.AnswerSink``). A task runs only where the exchange must wait: for a
slot, a load or a fresh connection. It is counted and timed by the request observer
(``http/observer.py``), as the ASGI way's requests are.

Everything else takes the ASGI way (``asgi_shortcut.FastLane`` for the relay routes), which
also answers what admission refuses (a missing or weak key, a drain, a body over the limit)
and bodies without a length.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any, NamedTuple, Protocol

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from supervisor.children.child import Lease, Target
from supervisor.errors import SupervisorError
from supervisor.http.admission import Admission
from supervisor.http.error_responses import (
    ErrorAnswer,
    failed_request_answer,
    internal_error_answer,
)
from supervisor.http.observer import RequestObserver
from supervisor.relay.destination import Address, request_head
from supervisor.relay.failures import CLIENT_CLOSED_REQUEST, backend_failed, stream_broke
from supervisor.relay.plan import RelayPlan, RelayServices, plan_relay
from supervisor.relay.stream import is_event_stream, passed_headers, stream_headers
from supervisor.relay.table import RELAYS, ModelFrom, Relay
from supervisor.relay.targets import named_body
from supervisor.relay.upstream import (
    Connection,
    RawHeaders,
    UpstreamError,
    UpstreamPool,
    address_of,
    stale,
)

LOG = logging.getLogger(__name__)
END_OF_CHUNKS = b"0\r\n\r\n"
MAX_UPSTREAMS = 64  # children's addresses and heads kept (a restarted child has a new port)
CHUNKED = (b"transfer-encoding", b"chunked")


class Client(Protocol):
    """What an exchange needs of its client's connection (``http/protocol.py``)."""

    @property
    def default_headers(self) -> RawHeaders: ...
    @property
    def writing_paused(self) -> bool: ...
    def write(self, data: bytes) -> None: ...
    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...
    def exchange_over(self, keep_alive: bool) -> None: ...


class Upstream(NamedTuple):
    """Where a relayed request goes: a child's address, and the head for one of its paths
    (``destination.request_head``: all but the body's length)."""

    address: Address
    head: bytes


class RelayLane:
    """Decides which requests take the lane, and starts their exchanges. The app's lifespan
    binds it to the running gateway's relay services (``attach``); unbound, it admits nothing."""

    def __init__(self, admission: Admission, observer: RequestObserver) -> None:
        self.admission = admission
        self.drain = admission.drain
        self.observer = observer
        self.services: RelayServices | None = None
        self._routes = {
            relay.path.encode(): relay
            for relay in RELAYS.values()
            if relay.method == "POST" and relay.model_from is ModelFrom.BODY
        }
        self._upstreams: dict[tuple[str, str, str | None], Upstream] = {}

    def attach(self, services: RelayServices | None) -> None:
        self.services = services
        self._upstreams.clear()

    def admit(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]) -> Relay | None:
        """The relay route of a request the lane can serve whole, judged on its head; None
        sends it the ASGI way. ``headers`` as uvicorn keeps them (names lower-case)."""
        route = self._routes.get(url)  # the exact path: a query string or escapes go ASGI
        if route is None or method != b"POST" or self.services is None:
            return None
        length = b""
        for name, value in headers:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                return None
        if not length.isdigit():  # the lane reads a body of a known length only
            return None
        if self.admission.refusal("POST", route.path, headers, int(length)) is not None:
            return None  # the ASGI way answers the refusal
        return route

    def gone_mid_body(self, route: Relay, began: float) -> None:
        """A client hung up before its body (begun at ``began``, on the observer's clock) was
        whole: counted as the ASGI way counts it."""
        self.observer.finished(route.path, "POST", "", CLIENT_CLOSED_REQUEST, began, None)

    def exchange(self, client: Client, route: Relay, body: bytes, keep_alive: bool) -> Exchange:
        assert self.services is not None  # admitted
        return Exchange(self, self.services, client, route, body, keep_alive)

    def upstream(self, backend: Target, path: str) -> Upstream:
        """Where to send a request for ``path`` to ``backend``, and its head but for the
        body's length: made once per child and path."""
        key = (backend.base_url, path, backend.api_key)
        upstream = self._upstreams.get(key)
        if upstream is None:
            if len(self._upstreams) >= MAX_UPSTREAMS:
                self._upstreams.clear()
            address = address_of(backend.base_url)
            head = request_head(address, path, backend.api_key)
            upstream = self._upstreams[key] = Upstream(address, head)
        return upstream


class Exchange:
    """One relayed POST. ``start`` routes it and sends it to a child; the child's answer comes
    back through the ``AnswerSink`` callbacks, which write it to the client: a streamed answer
    chunk by chunk (the client's backpressure holds the child back), any other once whole.
    However it ends (answered, refused, failed, the client gone), ``_finish`` runs once.

    The class holds the starting values of what most exchanges never change: an exchange is
    made for every request, and the fewer steps before its request is sent, the sooner."""

    _plan: RelayPlan | None = None
    _lease: Lease[Target] | None = None
    _upstream = Upstream(("", 0), b"")
    _connection: Connection | None = None
    _task: asyncio.Task[None] | None = None
    _status = 0
    _streaming = False
    _first_token: float | None = None
    _over = False

    def __init__(
        self,
        lane: RelayLane,
        services: RelayServices,
        client: Client,
        route: Relay,
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self._lane = lane
        self._client = client
        self._route = route
        self._body = body
        self._keep_alive = keep_alive
        self._started = lane.observer.now()
        self._services = services
        self._pool: UpstreamPool = services.proxy.pool
        self._headers: RawHeaders = []
        self._parts: list[bytes] = []

    # -- the request ---------------------------------------------------------------------------
    def start(self) -> None:
        self._lane.drain.enter()
        try:
            self._plan = plan = plan_relay(self._services, self._route, self._body)
            lease = self._services.targets.try_acquire(plan.entry, self._route.role)
            if lease is None:
                self._wait(self._acquire(plan))
            else:
                self._send(lease)
        except SupervisorError as exc:
            self._refuse(exc)
        except UpstreamError as exc:
            self._refuse(backend_failed(self._model, exc))
        except Exception:
            LOG.exception("relay lane: POST %s failed", self._route.path)
            self._answer_error(internal_error_answer(self._route.path))

    async def _acquire(self, plan: RelayPlan) -> None:
        self._send(await self._services.targets.acquire(plan.entry, self._route.role))

    def _send(self, lease: Lease[Target]) -> None:
        self._lease = lease
        if lease.backend.upstream_model is not None:  # a peer's: named as the peer knows it
            self._body = named_body(self._body, lease.backend.upstream_model)
        self._upstream = self._lane.upstream(lease.backend, self._route.path)
        connection = self._pool.take(self._upstream.address)
        if connection is None:
            self._wait(self._connect())
        else:
            self._post(connection)

    async def _connect(self) -> None:
        self._post(await self._pool.connect(self._upstream.address))

    def _post(self, connection: Connection) -> None:
        self._connection = connection
        connection.send(self._upstream.head, self._body, self)

    def _wait(self, work: Coroutine[Any, Any, None]) -> None:
        """Go on in a task: ``work`` waits for a slot or a connection, then sends."""

        async def waited() -> None:
            try:
                await work
            except SupervisorError as exc:
                self._refuse(exc)
            except UpstreamError as exc:
                self._refuse(backend_failed(self._model, exc))
            except asyncio.CancelledError:
                if not self._over:  # not the client's going: a shutdown
                    raise
            except Exception:
                LOG.exception("relay lane: POST %s failed", self._route.path)
                self._answer_error(internal_error_answer(self._route.path))
            finally:
                if self._task is asyncio.current_task():  # not if it handed on to another
                    self._task = None

        self._task = self._client.spawn(waited())

    # -- the answer (upstream.AnswerSink) ------------------------------------------------------
    def answer_head(self, status: int, headers: RawHeaders) -> None:
        self._status = status
        self._headers = headers
        if is_event_stream(headers):
            self._streaming = True
            passed = [*stream_headers(headers), CHUNKED]
            self._client.write(self._head(status, passed))

    def answer_body(self, chunk: bytes) -> None:
        if not self._streaming:
            self._parts.append(chunk)
            return
        assert self._plan is not None
        data = self._plan.stream.feed(chunk)
        if self._first_token is None:
            self._first_token = self._lane.observer.now() - self._started
        self._client.write(_chunk(data))  # nothing for no data: a 0-size chunk ends the body
        if self._client.writing_paused and self._connection is not None:
            self._connection.pause_reading()

    def answer_end(self) -> None:
        assert self._plan is not None
        if self._streaming:
            tail = self._plan.stream.tail()
            self._client.write(_chunk(tail) + END_OF_CHUNKS)
        else:
            content = self._plan.answer(self._status, b"".join(self._parts))
            length = (b"content-length", b"%d" % len(content))
            passed = [*passed_headers(self._headers), length]
            self._client.write(self._head(self._status, passed) + content)
            self._plan.count(content)  # once the client has its answer
        self._finish(self._status)

    def answer_failed(self, error: UpstreamError) -> None:
        if self._connection is not None and stale(self._connection, error):
            self._connection = None
            self._wait(self._connect())
            return
        if not self._streaming:
            self._refuse(backend_failed(self._model, error))
            return
        assert self._plan is not None
        LOG.warning("[%s] stream broke: %r", self._model, error)
        tail = self._plan.stream.error(stream_broke(self._model))
        self._client.write(_chunk(tail) + END_OF_CHUNKS)
        self._finish(self._status)

    # -- the client ---------------------------------------------------------------------------
    def client_writable(self) -> None:
        if self._connection is not None:
            self._connection.resume_reading()

    def client_lost(self) -> None:
        """The client went away: whatever the child was doing for it stops (its connection
        is dropped, which makes llama-server free the slot at once)."""
        if self._over:
            return
        status = self._status if self._streaming else CLIENT_CLOSED_REQUEST
        self._finish(status, keep_alive=False)
        if self._task is not None:
            self._task.cancel()

    # -- endings ------------------------------------------------------------------------------
    def _refuse(self, error: SupervisorError) -> None:
        self._answer_error(failed_request_answer("POST", self._route.path, error))

    def _answer_error(self, answer: ErrorAnswer) -> None:
        if self._over:
            return
        self._client.write(self._head(answer.status, answer.headers) + answer.body)
        self._finish(answer.status)

    def _head(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
        lines = [STATUS_LINE[status]]
        for name, value in (*self._client.default_headers, *headers):
            lines += (name, b": ", value, b"\r\n")
        if not self._keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def _finish(self, status: int, *, keep_alive: bool | None = None) -> None:
        if self._over:
            return
        self._over = True
        if self._connection is not None:
            self._pool.release(self._connection)  # closed unless its answer was whole
        if self._lease is not None:
            self._lease.release()
        plan = self._plan
        if plan is not None:
            plan.stream.closed()
        self._lane.observer.finished(
            self._route.path,
            "POST",
            plan.entry.id if plan else "",
            status,
            self._started,
            self._first_token,
            self._streaming,
            plan.meter if plan else None,
            self._body,
        )
        self._lane.drain.leave()
        self._client.exchange_over(self._keep_alive if keep_alive is None else keep_alive)

    @property
    def _model(self) -> str:
        return self._plan.entry.id if self._plan is not None else ""


def _chunk(data: bytes) -> bytes:
    """``data`` framed as one chunk of a chunked body; nothing for no data."""
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b""
