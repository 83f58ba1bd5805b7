"""What a lease on a peer's model holds: where the relay sends the request, with which key,
and the name the body must give there (``supervisor.children.child.Target``)."""

from __future__ import annotations

import asyncio

from supervisor.peers.model import PeerModel


class PeerTarget:
    """One peer model's requests in flight. The address and key are the peer's when the
    target was made: a reload that moves the peer makes new targets, while requests already
    relayed finish where they went."""

    def __init__(self, model: PeerModel, base_url: str, api_key: str | None) -> None:
        self.model = model
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key

    @property
    def model_id(self) -> str:
        return self.model.id

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def api_key(self) -> str | None:
        return self._api_key

    @property
    def upstream_model(self) -> str | None:
        return self.model.remote_id
