"""The configured peers (``Peers``): their health checks, which of their models a name means
(``find``, ``spill``), what the model lists show (``models``), and leases on their models for
the relay (``lease``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

import httpx

from supervisor.children.child import Lease
from supervisor.clock import Clock, SystemClock, wait_or_sleep
from supervisor.config import PeerSettings, Settings
from supervisor.errors import PeerUnavailable
from supervisor.loops import stop_loop
from supervisor.peers.model import PREFIX_SEPARATOR, PeerModel, prefixed
from supervisor.peers.peer import Peer
from supervisor.peers.target import PeerTarget

LOG = logging.getLogger(__name__)


def _released(target: PeerTarget) -> None:
    """A peer's slots are the peer's to count: the lease's own count is all there is."""


class Peers:
    """The peers of the settings in force, in configuration order (which decides who serves a
    bare name several peers serve). Checked every ``peer_check_interval_s`` on ``clock``,
    all at once, by a task of their own; ``wall`` stamps each check."""

    def __init__(
        self,
        settings: Settings,
        client: httpx.AsyncClient,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._clock = clock or SystemClock()
        self._wall = wall
        self._peers: dict[str, Peer] = {}
        self._recheck = asyncio.Event()  # a reload: check the new peers now
        self._task: asyncio.Task[None] | None = None
        self._configure(settings)

    def _configure(self, settings: Settings) -> None:
        self._interval = settings.peer_check_interval_s
        self._timeout = settings.peer_timeout_s
        self._peers = {config.name: self._kept(config) for config in settings.peers}

    def _kept(self, config: PeerSettings) -> Peer:
        """The peer of ``config``: the one already checked if its address and key are the
        same (its state holds), else a new one, unknown until checked."""
        peer = self._peers.get(config.name)
        if peer is None or (peer.settings.url, peer.settings.api_key) != (
            config.url,
            config.api_key,
        ):
            return Peer(config)
        peer.settings = config  # models and spillover take effect at once
        return peer

    # -- the check loop ----------------------------------------------------------------------
    def start(self) -> None:
        """Start checking (in the app's lifespan): the first round at once."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="peer checks")

    async def close(self) -> None:
        """Stop checking. Never raises: a loop that had failed is logged."""
        task, self._task = self._task, None
        await stop_loop(task, "peers: the check loop", LOG)

    async def run(self) -> None:
        """Check every peer, then wait for the interval (or a reload), until cancelled."""
        while True:
            self._recheck.clear()
            try:
                await self.check_all()
            except Exception:  # the loop must outlive a bug in one round
                LOG.exception("peers: a check round failed")
            await wait_or_sleep(self._clock, self._recheck, self._interval)

    async def check_all(self) -> None:
        """One round: every peer checked at once, each within the peer timeout."""
        peers = list(self._peers.values())
        await asyncio.gather(
            *(peer.check(self._client, self._timeout, self._clock, self._wall) for peer in peers)
        )
        for peer in peers:
            if peer.state == "down":
                LOG.debug("peer %s is down: %s", peer.name, peer.last_error)

    def replace(self, settings: Settings) -> None:
        """Serve the peers of reloaded ``settings``: added ones are checked at once, removed
        ones serve nothing more (their requests in flight finish), changed ones are checked
        anew at their new address."""
        self._configure(settings)
        self._recheck.set()

    # -- names -------------------------------------------------------------------------------
    def find(self, name: str) -> PeerModel | None:
        """The peer model ``name`` means: ``"box2/qwen"`` is peer box2's qwen (while box2 is
        not up, whatever it names: the lease then answers 503, or ``find`` at once for a name
        a down peer never listed); a bare ``"qwen"`` is the first peer's that serves it and
        is up, else the first's that serves it at all. None: no peer serves it (a 404)."""
        peer_name, separator, remote = name.partition(PREFIX_SEPARATOR)
        peer = self._peers.get(peer_name) if separator else None
        if peer is not None and remote and (not peer.up or remote in peer.models):
            if peer.state == "down" and remote not in peer.models:
                # The 503 now, before the request is labelled by a name nobody listed: the
                # metrics' model labels stay bounded.
                raise PeerUnavailable(peer.name, name)
            return PeerModel(name, peer.name, remote)
        serving = [peer for peer in self._peers.values() if name in peer.models]
        chosen = next((peer for peer in serving if peer.up), serving[0] if serving else None)
        return PeerModel(name, chosen.name, name) if chosen is not None else None

    def spill(self, model_id: str) -> PeerModel | None:
        """A peer that may take a request for the local ``model_id`` whose queue is full: up,
        open to spillover, and serving a model of that same id."""
        for peer in self._peers.values():
            if peer.up and peer.settings.spillover and model_id in peer.models:
                return PeerModel(model_id, peer.name, model_id)
        return None

    def models(self, local: Collection[str] = ()) -> list[PeerModel]:
        """The peer models the lists show, of the peers that are up: each as ``"<peer>/<id>"``
        and, unless a ``local`` model or an earlier peer's has that name, as ``"<id>"``."""
        taken = set(local)
        listed: list[PeerModel] = []
        for peer in self._peers.values():
            if not peer.up:
                continue
            for remote in peer.models:
                if remote not in taken:
                    taken.add(remote)
                    listed.append(PeerModel(remote, peer.name, remote))
                listed.append(PeerModel(prefixed(peer.name, remote), peer.name, remote))
        return listed

    # -- requests ----------------------------------------------------------------------------
    def lease(self, model: PeerModel) -> Lease[PeerTarget]:
        """A hold on ``model`` for one request; ``PeerUnavailable`` at once if its peer is
        down or no longer configured. A peer not yet checked is tried."""
        peer = self._peers.get(model.peer)
        if peer is None:
            raise PeerUnavailable(model.peer, model.id, "is no longer configured")
        if peer.state == "down":
            raise PeerUnavailable(peer.name, model.id)
        return Lease(peer.target(model), _released)

    def listing(self) -> list[dict[str, Any]]:
        """Each peer as ``GET /v1/peers`` shows it, in configuration order."""
        return [peer.listing() for peer in self._peers.values()]
