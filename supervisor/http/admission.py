"""Admission: the one decision on a request's head, made for both ways in (the ASGI guard,
``http/guard.py``, and the relay lane, ``relay/lane.py``). A request is refused while the
gateway drains, then without a key good enough for its route, then when the length it
announces is over ``max_body_bytes``; what it is refused with is answered by the ASGI guard
(``error_responses.refusal_answer``): the lane takes only what is admitted.

An admitted request is counted in flight by the drain (``admission.drain``) until its answer
is over, on whichever way it is served.
"""

from __future__ import annotations

from typing import Protocol

from starlette.datastructures import Headers

from supervisor.config import Settings
from supervisor.errors import PayloadTooLarge, ShuttingDown, SupervisorError
from supervisor.http.auth import KeyRing
from supervisor.http.drain import Drain
from supervisor.relay.upstream import RawHeaders


class Policy(Protocol):
    """What admission reads of the running gateway (``reload.Reloader``, which holds the
    configuration in force): its keys and its settings' body limit, both of which a reload
    may replace."""

    @property
    def keys(self) -> KeyRing: ...
    @property
    def settings(self) -> Settings: ...


class Admission:
    """The drain, and the running gateway's keys and body limit. The app's lifespan binds it
    to the gateway (``attach``); unbound, it admits nothing."""

    def __init__(self, drain: Drain) -> None:
        self.drain = drain
        self._policy: Policy | None = None

    def attach(self, policy: Policy | None) -> None:
        self._policy = policy

    @property
    def body_limit(self) -> int:
        """The most bytes a body may have (0 while unbound)."""
        policy = self._policy
        return policy.settings.max_body_bytes if policy is not None else 0

    def refusal(
        self, method: str, path: str, headers: RawHeaders, length: int | None
    ) -> SupervisorError | None:
        """What a request is refused with, judged on its head; None admits it. ``headers``
        as the server keeps them (names lower-case); ``length``: its Content-Length, None
        without one (a chunked body is counted as it is read: ``http/body_limit.py``)."""
        if self.drain.draining:
            return ShuttingDown("The gateway is shutting down")
        policy = self._policy
        if policy is None:
            return ShuttingDown("The gateway is not running")
        keys = policy.keys
        if not keys.open:  # an open gateway (no keys) reads no headers
            try:
                keys.check(method, path, Headers(raw=headers))
            except SupervisorError as exc:
                return exc
        limit = policy.settings.max_body_bytes
        if length is not None and length > limit:
            return PayloadTooLarge(limit)
        return None


def declared_length(headers: RawHeaders) -> int | None:
    """A head's Content-Length; None without one (or with one the server would refuse)."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
