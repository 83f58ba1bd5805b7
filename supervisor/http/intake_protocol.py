"""The gateway's HTTP protocol: uvicorn's httptools protocol, with bounds on what a client may
hold while it sends a request (``http/intake.py``): a request's head in bytes and time, its body's
progress, a share of the open connections and of the body bytes held.

httptools keeps a header line in memory until it ends, however long: one client sending a
64 MB header grew the gateway by 64 MB (and more clients, more so). So the bytes of a request's
head are counted as they arrive and, past ``MAX_HEAD_BYTES``, answered 431 and the connection
closed. The count may include the tail of the previous request's body when a read holds both,
so the bound is generous next to real heads (a few KiB).

The relay lane (``http/protocol.py``) answers some requests at once, from inside the read
that brought them; uvicorn then arms its keep-alive timer, and only stops it at the next read.
So a request begun in the same read stops it too, or it would cut that request's answer when
the timer fires (issue 21: a stream cut at exactly 5 s).
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from supervisor.errors import GatewayBusy, HeadTooLarge, SupervisorError
from supervisor.http.intake import Intake, Phase, Progress, closing_answer

MAX_HEAD_BYTES = 1024 * 1024
# How long a connection cut with an answer reads on (and drops what it reads) before it closes.
LINGER_S = 2.0
_HEAD_TOO_LARGE = f"Request line and headers are larger than {MAX_HEAD_BYTES} bytes"


def intake_protocol(intake: Intake) -> type[IntakeProtocol]:
    """The protocol class for uvicorn's ``http`` setting, bound to ``intake``."""
    return type("BoundIntakeProtocol", (IntakeProtocol,), {"intake": intake})


class IntakeProtocol(HttpToolsProtocol):
    intake: ClassVar[Intake]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url = b""
        self._in_head = True
        self._head_begun = False  # a byte of the next request's head has arrived
        self._head_bytes = 0
        self._requests = 0
        self._body_bytes = 0  # of the body being read: held in the intake's count
        self._cut_off = False  # cut: no more requests are read on this connection

    # -- the connection ------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if not self.intake.enter(self):
            busy = GatewayBusy("The gateway has too many open connections; try again")
            transport.write(closing_answer("", busy, self.server_state.default_headers))
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.intake.leave(self, self._body_bytes)
        self._body_bytes = 0
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._cut_off:  # lingering after a cut: see ``cut``
            return
        super().data_received(data)
        if not self._in_head or self.cut_off:
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self.intake.counted("head_too_large")
            self.cut(HeadTooLarge(_HEAD_TOO_LARGE))

    # -- parser callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._unset_keepalive_if_required()  # see the module's docstring
        self._in_head = self._head_begun = True
        self._head_bytes = 0
        self._requests += 1

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._hold_body(len(body)):
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_done()
        super().on_message_complete()

    def _hold_body(self, size: int) -> bool:
        """Count ``size`` more bytes of the body being read; False when they are not to be
        kept: the connection was cut, or the intake's bound is reached (then it is cut)."""
        if self._cut_off:
            return False
        if self.intake.hold(size):
            self._body_bytes += size
            return True
        self.intake.counted("pending_body_bytes")
        self.cut(GatewayBusy("The gateway holds too many unfinished request bodies; try again"))
        return False

    def _body_done(self) -> None:
        self.intake.release(self._body_bytes)
        self._body_bytes = 0
        self._in_head = True  # whatever comes next starts the next request's head
        self._head_begun = False
        self._head_bytes = 0

    # -- intake.Connection ---------------------------------------------------------------------
    @property
    def cut_off(self) -> bool:
        """No more requests are read on this connection: it was cut, or it is closing."""
        return self._cut_off or self.transport.is_closing()

    def progress(self) -> Progress:
        if self.flow.read_paused or self._cut_off:  # the gateway's own doing
            return Progress(Phase.BUSY, self._requests, 0)
        if not self._in_head:
            return Progress(Phase.BODY, self._requests, self._body_bytes)
        if self._answering():
            return Progress(Phase.BUSY, self._requests, 0)
        return Progress(Phase.HEAD, self._requests, self._head_bytes if self._head_begun else 0)

    def cut(self, error: SupervisorError | None) -> None:
        """Close the connection, answering ``error`` first unless an answer has begun.

        A client cut mid-request may still be sending. Closing with its bytes unread would
        make the kernel reset the connection, and the client might never read the answer; so
        after an answer the connection only stops writing, and reads on, dropping what comes,
        until the client closes it or ``LINGER_S`` passes."""
        if self.cut_off:
            return
        self._cut_off = True
        self.intake.release(self._body_bytes)
        self._body_bytes = 0
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # its app reads a disconnect, and writes nothing more
            cycle.message_event.set()
        if error is None or self._answer_started():
            self.transport.close()
            return
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        self.transport.write(closing_answer(path, error, self.server_state.default_headers))
        self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _answering(self) -> bool:
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def _answer_started(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.response_started and not cycle.response_complete
