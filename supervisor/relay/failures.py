"""How the relay's failures are told: the upstream client's errors translated into ours, once,
at the boundary (``map_upstream_errors``, ``backend_failed``), what a stream's client hears when
its child fails mid-stream, and the status a request whose client went away is counted with."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from supervisor.errors import BackendError
from supervisor.relay.upstream import UpstreamError

CLIENT_CLOSED_REQUEST = 499  # nginx's code; the client never sees it


@contextlib.contextmanager
def map_upstream_errors(model: str) -> Iterator[None]:
    """Translate the upstream client's errors into ours, once, at the boundary."""
    try:
        yield
    except UpstreamError as exc:
        raise backend_failed(model, exc) from exc


def backend_failed(model: str, error: UpstreamError) -> BackendError:
    return BackendError(f"Model '{model}' backend failed: {error}")


def stream_broke(model: str) -> BackendError:
    """What a stream's client is told when the child fails after the stream began."""
    return BackendError(
        f"Model '{model}' backend failed during the stream; the request did not complete"
    )
