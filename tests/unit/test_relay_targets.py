"""Where a request gets its slot (supervisor/relay/targets.py): a local model's child through
the model manager, a peer's model through the peers, and spillover to a peer when a local
queue is full; a peer's body named as the peer knows the model; and ``Catalog.serve``, which
finds a peer's model where no local one has the name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from served import MakeSettings

from supervisor.children.spec import Role
from supervisor.errors import BadRequest, ModelNotFound, QueueFull
from supervisor.models.catalog import Catalog
from supervisor.models.registry import Registry
from supervisor.peers.model import PeerModel
from supervisor.relay.table import ModelFrom
from supervisor.relay.targets import Targets, named_body, peer_request

MakeGGUF = Callable[..., Path]
QWEN_ON_BOX2 = PeerModel("box2/qwen", "box2", "qwen")


class Manager:
    """The model manager's acquiring side: a local lease, or a full queue."""

    def __init__(self, full: bool = False) -> None:
        self.full = full
        self.asked: list[tuple[str, Role]] = []

    async def acquire(self, entry: Any, role: Role = Role.CHAT) -> str:
        self.asked.append((entry.id, role))
        if self.full:
            raise QueueFull(f"Model '{entry.id}' has 64 requests queued")
        return f"local:{entry.id}"

    def try_acquire(self, entry: Any, role: Role = Role.CHAT) -> str | None:
        return None if self.full else f"local:{entry.id}"


class Peers:
    """The peers' leasing side: which model spills where, and the leases handed out."""

    def __init__(self, spills: dict[str, PeerModel] | None = None) -> None:
        self.spills = spills or {}
        self.leased: list[PeerModel] = []

    def spill(self, model_id: str) -> PeerModel | None:
        return self.spills.get(model_id)

    def lease(self, model: PeerModel) -> str:
        self.leased.append(model)
        return f"peer:{model.peer}/{model.remote_id}"


class Entry:
    def __init__(self, id: str) -> None:
        self.id = id


def targets(manager: Manager, peers: Peers | None) -> Targets:
    return Targets(manager, peers)


def test_a_local_model_gets_its_slot_from_the_manager() -> None:
    manager, peers = Manager(), Peers({"qwen": QWEN_ON_BOX2})
    lease = asyncio.run(targets(manager, peers).acquire(Entry("qwen"), Role.EMBEDDING))
    assert lease == "local:qwen"
    assert manager.asked == [("qwen", Role.EMBEDDING)]
    assert peers.leased == []  # a queue with room never spills


def test_a_full_local_queue_spills_over_to_a_peer_serving_the_model() -> None:
    peers = Peers({"qwen": PeerModel("qwen", "box2", "qwen")})
    lease = asyncio.run(targets(Manager(full=True), peers).acquire(Entry("qwen")))
    assert lease == "peer:box2/qwen"


def test_a_full_local_queue_without_a_peer_for_it_is_still_a_429() -> None:
    for peers in (Peers({"other": QWEN_ON_BOX2}), None):
        with pytest.raises(QueueFull):
            asyncio.run(targets(Manager(full=True), peers).acquire(Entry("qwen")))


def test_a_peer_model_goes_to_its_peer_at_once() -> None:
    manager, peers = Manager(), Peers()
    chosen = targets(manager, peers)
    assert chosen.try_acquire(QWEN_ON_BOX2) == "peer:box2/qwen"
    assert asyncio.run(chosen.acquire(QWEN_ON_BOX2)) == "peer:box2/qwen"
    assert manager.asked == []
    with pytest.raises(ModelNotFound):  # peers gone (a reload) between picking and sending
        targets(manager, None).try_acquire(QWEN_ON_BOX2)


def test_a_peer_body_names_the_model_as_the_peer_knows_it() -> None:
    body = json.dumps({"model": "box2/qwen", "messages": [{"role": "user", "content": "é"}]})
    named = json.loads(named_body(body.encode(), "qwen"))
    assert named == {"model": "qwen", "messages": [{"role": "user", "content": "é"}]}
    assert json.loads(named_body(b'{"prompt": "hi"}', "qwen")) == {"prompt": "hi", "model": "qwen"}
    same = b'{"model": "qwen", "stream": true}'
    assert named_body(same, "qwen") is same  # already right: sent as it came
    for bad in (b"{", b"[1]"):
        with pytest.raises(BadRequest):
            named_body(bad, "qwen")


def test_a_peer_request_names_the_model_where_its_route_does() -> None:
    """In the query (others kept, added where the default model was meant), in the form
    (added first where it had none), in the JSON body; nothing else touched."""
    query = peer_request(ModelFrom.QUERY, "/props?model=box2%2Fqwen&x=1", b"", "", "qwen")
    assert query == ("/props?model=qwen&x=1", b"")
    assert peer_request(ModelFrom.QUERY, "/props", b"", "", "qwen") == ("/props?model=qwen", b"")
    scales = b'[{"id": 0, "scale": 0.5}]'
    assert peer_request(ModelFrom.QUERY, "/lora-adapters", scales, "", "q")[1] is scales
    form_type = "multipart/form-data; boundary=XyZ"
    file_part = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="model"\r\n\r\nRIFF\r\n'
    )
    form = file_part + b"--XyZ--\r\n"
    path, sent = peer_request(ModelFrom.FORM, "/v1/audio/transcriptions", form, form_type, "q")
    assert path == "/v1/audio/transcriptions"
    assert sent == b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nq\r\n' + form
    body = peer_request(ModelFrom.BODY, "/v1/embeddings", b'{"input": "hi"}', "", "q")[1]
    assert json.loads(body) == {"input": "hi", "model": "q"}


class Lookup:
    def __init__(self, *models: PeerModel) -> None:
        self.models = {model.id: model for model in models}

    def find(self, name: str) -> PeerModel | None:
        return self.models.get(name)


def test_serve_finds_a_peer_model_where_no_local_model_has_the_name(
    make_gguf: MakeGGUF, make_settings: MakeSettings
) -> None:
    make_gguf("models/qwen.gguf")
    settings = make_settings()
    registry = Registry(settings)
    registry.scan()
    bare = PeerModel("llama", "box2", "llama")
    shadowed = PeerModel("qwen", "box2", "qwen")
    catalog = Catalog(registry, settings, list, Lookup(QWEN_ON_BOX2, bare, shadowed))
    assert catalog.serve("box2/qwen") == QWEN_ON_BOX2
    assert catalog.serve("llama") == bare
    assert catalog.serve("qwen").id == "qwen" and not isinstance(catalog.serve("qwen"), PeerModel)
    with pytest.raises(ModelNotFound):
        catalog.serve("nowhere")
    with pytest.raises(ModelNotFound):
        catalog.pick("box2/qwen")  # admin routes (load, unload, swap) see local models only
    with_default = make_settings(default_model="box2/qwen")
    catalog = Catalog(registry, with_default, list, Lookup(QWEN_ON_BOX2))
    assert catalog.serve(None) == QWEN_ON_BOX2
