"""The gateway's HTTP protocol: uvicorn's (httptools, with the intake's bounds:
``http/intake_protocol.py``), with the relay lane (``relay/lane.py``) serving the relayed POSTs it
admits.

A request the lane admits is read here (its body, as it arrives), then handed to an
``Exchange``, which writes its answer on this connection. Anything else goes to uvicorn's
ASGI request cycle as before. While an exchange runs, the connection goes on reading, so a
client that goes away is noticed at once; a request pipelined behind it waits its turn, as
uvicorn's own pipelining does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, ClassVar

from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from supervisor.http.intake import Intake
from supervisor.http.intake_protocol import IntakeProtocol
from supervisor.relay.lane import Exchange, RelayLane
from supervisor.relay.table import Relay
from supervisor.relay.upstream import RawHeaders


def relay_protocol(lane: RelayLane, intake: Intake) -> type[RelayProtocol]:
    """The protocol class for uvicorn's ``http`` setting, bound to ``lane`` and ``intake``."""
    return type("BoundRelayProtocol", (RelayProtocol,), {"lane": lane, "intake": intake})


class RelayProtocol(IntakeProtocol):
    lane: ClassVar[RelayLane]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._relay: Relay | None = None  # the admitted request whose body is being read
        self._relay_began = 0.0
        self._body: list[bytes] = []
        self._keep_alive = True
        self._exchange: Exchange | None = None
        self._closing = False

    # -- parser callbacks ----------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        route = self._admitted()
        if route is None:
            super().on_headers_complete()
            return
        self._in_head = False
        self._relay = route
        self._relay_began = self.lane.observer.now()
        self._body = []
        self._keep_alive = self.parser.should_keep_alive()

    def _admitted(self) -> Relay | None:
        idle = self._exchange is None and not self.pipeline and not self.cut_off
        if not idle or (self.cycle is not None and not self.cycle.response_complete):
            return None
        parser = self.parser
        if (
            self.expect_100_continue
            or parser.should_upgrade()
            or parser.get_http_version() != "1.1"
        ):
            return None
        return self.lane.admit(parser.get_method(), self.url, self.headers)

    def on_body(self, body: bytes) -> None:
        if self._relay is None:
            super().on_body(body)
        elif self._hold_body(len(body)):
            self._body.append(body)

    def on_message_complete(self) -> None:
        route, self._relay = self._relay, None
        if route is None:
            super().on_message_complete()
            return
        self._body_done()
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        if self.cut_off:  # cut while its body was read
            return
        self._exchange = self.lane.exchange(self, route, body, self._keep_alive)
        self._exchange.start()

    # -- uvicorn's request cycles --------------------------------------------------------------
    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if self._exchange is None:
            super()._start_asgi_task(cycle, app)
            return
        # Pipelined behind an exchange: it starts when the exchange is over.
        self.flow.pause_reading()
        self.pipeline.appendleft((cycle, app))

    def shutdown(self) -> None:
        if self._exchange is None:
            super().shutdown()
        else:
            self._closing = True  # the server stops: close once the exchange is over

    def _answering(self) -> bool:
        return self._exchange is not None or super()._answering()

    def _answer_started(self) -> bool:
        return self._exchange is not None or super()._answer_started()

    # -- the connection ------------------------------------------------------------------------
    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._relay is not None and not self._cut_off:  # gone before its body was whole
            self.lane.gone_mid_body(self._relay, self._relay_began)
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            exchange.client_lost()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._exchange is not None:
            self._exchange.client_writable()

    # -- lane.Client ---------------------------------------------------------------------------
    @property
    def default_headers(self) -> RawHeaders:
        return self.server_state.default_headers

    @property
    def writing_paused(self) -> bool:
        return self.flow.write_paused

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self.loop.create_task(work)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        return task

    def exchange_over(self, keep_alive: bool) -> None:
        self._exchange = None
        if self.transport.is_closing():
            return
        if not keep_alive or self._closing:
            self.transport.close()
            return
        self.on_response_complete()  # a pipelined request starts, or the keep-alive timer
