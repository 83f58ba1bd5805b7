"""Where a request's model is served: a local child (the model manager's), or another server
(``supervisor/peers``), and spillover from one to the other."""

from __future__ import annotations

import json
import logging
from typing import Protocol
from urllib.parse import parse_qsl, urlencode

from supervisor.children.child import Lease, Target
from supervisor.children.spec import Role
from supervisor.errors import BadRequest, ModelNotFound, QueueFull
from supervisor.lifecycle.manager import ModelManager
from supervisor.models.catalog import Served
from supervisor.models.registry import ModelEntry
from supervisor.peers.model import PeerModel
from supervisor.relay.table import ModelFrom
from supervisor.surfaces.form import with_field

LOG = logging.getLogger(__name__)


class PeerLeases(Protocol):
    """What serving needs of the peers (``peers.directory.Peers``)."""

    def spill(self, model_id: str) -> PeerModel | None: ...
    def lease(self, model: PeerModel) -> Lease[Target]: ...


class Targets:
    """A slot for a request: on a local model's child, queued if need be; on a peer for a peer
    model. A local model whose queue is full spills over to a peer serving it under the same
    id (``spillover``), where there is one up, instead of a 429."""

    def __init__(self, manager: ModelManager, peers: PeerLeases | None = None) -> None:
        self._manager = manager
        self._peers = peers

    async def acquire(self, model: Served, role: Role = Role.CHAT) -> Lease[Target]:
        if isinstance(model, PeerModel):
            return self._peer(model)
        try:
            return await self._manager.acquire(model, role)
        except QueueFull:
            lease = self._spill(model, role)
            if lease is None:
                raise
            return lease

    def try_acquire(self, model: Served, role: Role = Role.CHAT) -> Lease[Target] | None:
        """A slot at once, if one is free (a peer's always is: it queues for itself); else
        None, and ``acquire`` waits."""
        if isinstance(model, PeerModel):
            return self._peer(model)
        return self._manager.try_acquire(model, role)

    def _peer(self, model: PeerModel) -> Lease[Target]:
        if self._peers is None:
            raise ModelNotFound(model.id)
        return self._peers.lease(model)

    def _spill(self, entry: ModelEntry, role: Role) -> Lease[Target] | None:
        if self._peers is None:
            return None
        spill = self._peers.spill(entry.id)
        if spill is None:
            return None
        LOG.info("[%s] %s queue full: spilling over to peer '%s'", entry.id, role.value,
                 spill.peer)  # fmt: skip
        return self._peers.lease(spill)


def named_body(body: bytes, model: str) -> bytes:
    """A JSON request ``body`` whose ``model`` is ``model``: what a peer must read, where the
    client named the model as this gateway does (``"<peer>/<id>"``) or not at all."""
    try:
        data = json.loads(body) if body else {}
    except ValueError as exc:
        raise BadRequest("Request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object")
    if data.get("model") == model:
        return body
    data["model"] = model
    return json.dumps(data, ensure_ascii=False).encode()


def peer_request(
    model_from: ModelFrom, path: str, body: bytes, content_type: str, model: str
) -> tuple[str, bytes]:
    """The ``path`` (with its query) and ``body`` of a relayed request, the model named
    ``model`` where the route names it (``model_from``): a peer knows its models by its own
    ids, never as ``"<peer>/<id>"``."""
    if model_from is ModelFrom.BODY:
        return path, named_body(body, model)
    if model_from is ModelFrom.FORM:
        return path, with_field(body, content_type.encode("latin-1"), "model", model)
    route, _, query = path.partition("?")
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "model"]
    return f"{route}?{urlencode([('model', model), *pairs])}", body
