"""Peers (supervisor/peers/): health checks against a fake peer (an httpx transport), which
peer model a name means, spillover, the lists' names, leases, and a reload's changes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from fake_clock import FakeClock

from supervisor.config import PeerSettings, Settings
from supervisor.errors import PeerUnavailable
from supervisor.peers.directory import Peers
from supervisor.peers.model import PeerModel
from supervisor.peers.peer import Peer, model_ids, shown_url

T = TypeVar("T")
SECRET = "sk-peer-secret"


class FakePeer:
    """A peer's /v1/models: the models it lists, or a failure. Counts the checks and keeps
    the Authorization header each carried."""

    def __init__(self, models: list[str] | None = None) -> None:
        self.models = ["qwen", "llama"] if models is None else models
        self.failure: Exception | None = None
        self.status = 200
        self.body: object | None = None
        self.checks = 0
        self.authorization: list[str | None] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models"
        self.checks += 1
        self.authorization.append(request.headers.get("authorization"))
        if self.failure is not None:
            raise self.failure
        body = self.body if self.body is not None else {"data": [{"id": m} for m in self.models]}
        return httpx.Response(self.status, content=json.dumps(body).encode())


class FakeNetwork:
    """Fake peers by host name, behind one transport."""

    def __init__(self, **peers: FakePeer) -> None:
        self.peers = peers

    def handle(self, request: httpx.Request) -> httpx.Response:
        peer = self.peers.get(request.url.host)
        if peer is None:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return peer.handle(request)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))


def peer_settings(name: str, **fields: Any) -> PeerSettings:
    return PeerSettings(name=name, url=f"http://{name}:8080", **fields)


def settings_of(*peers: PeerSettings, **fields: Any) -> Settings:
    return Settings(models_dirs=[], peers=list(peers), **fields)


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    return asyncio.run(main())


async def checked(network: FakeNetwork, *peers: PeerSettings, **fields: Any) -> Peers:
    directory = Peers(settings_of(*peers, **fields), network.client(), wall=lambda: 1234.5)
    await directory.check_all()
    return directory


# -- one peer's check ----------------------------------------------------------------------------
def test_a_good_check_brings_the_peer_up_with_its_models_and_key() -> None:
    fake = FakePeer()

    async def main() -> dict[str, Any]:
        directory = await checked(
            FakeNetwork(box2=fake), peer_settings("box2", api_key=SECRET, spillover=False)
        )
        return directory.listing()[0]

    listed = run(main)
    assert listed == {
        "name": "box2",
        "url": "http://box2:8080",
        "state": "up",
        "latency_ms": listed["latency_ms"],
        "models": ["qwen", "llama"],
        "spillover": False,
        "in_flight": 0,
        "checked_at": 1234.5,
        "last_error": None,
    }
    assert isinstance(listed["latency_ms"], float)
    assert fake.authorization == [f"Bearer {SECRET}"]
    assert SECRET not in json.dumps(listed)


def test_no_key_configured_sends_no_authorization() -> None:
    fake = FakePeer()
    run(lambda: checked(FakeNetwork(box2=fake), peer_settings("box2")))
    assert fake.authorization == [None]


@pytest.mark.parametrize(
    ("failure", "status", "body", "error"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), 200, None, "Connection refused"),
        (httpx.ReadTimeout("timed out"), 200, None, "no answer within 3s"),
        (None, 401, None, "answered 401"),
        (None, 200, {"models": []}, "no model list"),
        (None, 200, {"data": [{"name": "x"}]}, "no model list"),
    ],
)
def test_a_failed_check_marks_the_peer_down_and_says_why(
    failure: Exception | None, status: int, body: object, error: str
) -> None:
    fake = FakePeer()
    fake.failure, fake.status, fake.body = failure, status, body
    directory = run(lambda: checked(FakeNetwork(box2=fake), peer_settings("box2")))
    listed = directory.listing()[0]
    assert listed["state"] == "down"
    assert error in listed["last_error"]


def test_a_peer_that_never_answers_is_down_within_the_timeout() -> None:
    """The check's own deadline holds even when the transport would wait for ever."""

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def main() -> Peer:
        peer = Peer(peer_settings("box2"))
        client = httpx.AsyncClient(transport=httpx.MockTransport(hang))
        await asyncio.wait_for(peer.check(client, 0.05, FakeClock()), timeout=10)
        return peer

    peer = run(main)
    assert (peer.state, peer.last_error) == ("down", "no answer within 0.05s")


def test_down_after_one_failure_and_up_again_on_the_next_good_check() -> None:
    fake = FakePeer()

    async def main() -> list[str]:
        directory = await checked(FakeNetwork(box2=fake), peer_settings("box2"))
        states = [directory.listing()[0]["state"]]
        fake.failure = httpx.ConnectError("refused")
        await directory.check_all()
        states.append(directory.listing()[0]["state"])
        fake.failure = None
        await directory.check_all()
        states.append(directory.listing()[0]["state"])
        return states

    assert run(main) == ["up", "down", "up"]


def test_configured_models_filter_what_the_peer_lists() -> None:
    """A configured model the peer does not list is not served; before any check the
    configured ones are all there is."""
    fake = FakePeer(["qwen", "llama"])
    config = peer_settings("box2", models=["llama", "mistral"])
    assert Peer(config).models == ["llama", "mistral"]
    directory = run(lambda: checked(FakeNetwork(box2=fake), config))
    assert directory.listing()[0]["models"] == ["llama"]


def test_a_model_configured_twice_is_listed_once() -> None:
    fake = FakePeer(["qwen", "llama"])
    config = peer_settings("box2", models=["qwen", "qwen"])
    assert Peer(config).models == ["qwen"]
    directory = run(lambda: checked(FakeNetwork(box2=fake), config))
    assert directory.listing()[0]["models"] == ["qwen"]
    assert [model.id for model in directory.models()] == ["qwen", "box2/qwen"]


def test_model_ids_are_an_openai_lists_ids_without_repeats() -> None:
    assert model_ids({"data": [{"id": "a"}, {"id": "b"}, {"id": "a"}]}) == ("a", "b")
    with pytest.raises(ValueError):
        model_ids([{"id": "a"}])


def test_shown_urls_lose_a_password() -> None:
    assert shown_url("http://user:pw@box2:8080") == "http://box2:8080"
    assert shown_url("http://box2:8080") == "http://box2:8080"


# -- names -------------------------------------------------------------------------------------
def two_peers(box2_up: bool = True, box3_up: bool = True) -> Peers:
    box2, box3 = FakePeer(["qwen", "llama"]), FakePeer(["qwen", "mistral"])
    box2.failure = None if box2_up else httpx.ConnectError("refused")
    box3.failure = None if box3_up else httpx.ConnectError("refused")
    network = FakeNetwork(box2=box2, box3=box3)
    return run(lambda: checked(network, peer_settings("box2"), peer_settings("box3")))


def test_a_prefixed_name_is_that_peers_model() -> None:
    peers = two_peers()
    assert peers.find("box3/qwen") == PeerModel("box3/qwen", "box3", "qwen")
    assert peers.find("box2/mistral") is None  # box2 does not serve it
    assert peers.find("box9/qwen") is None  # no such peer


def test_a_bare_name_goes_to_the_first_peer_up_that_serves_it() -> None:
    assert two_peers().find("qwen") == PeerModel("qwen", "box2", "qwen")
    assert two_peers(box2_up=False).find("qwen") == PeerModel("qwen", "box3", "qwen")
    assert two_peers().find("mistral") == PeerModel("mistral", "box3", "mistral")
    assert two_peers().find("phi") is None


def test_a_down_peers_models_are_found_and_their_lease_is_a_quick_503() -> None:
    """Found (so a 503 that names the peer, not a 404), and refused at once: what it listed
    when last up still names its models."""
    fake = FakePeer(["qwen", "llama"])
    peers = run(lambda: checked(FakeNetwork(box2=fake), peer_settings("box2")))
    fake.failure = httpx.ConnectError("refused")
    run(peers.check_all)
    for name, shown in (("box2/qwen", "box2/qwen"), ("llama", "llama")):
        model = peers.find(name)
        assert model is not None and model.peer == "box2"
        with pytest.raises(PeerUnavailable) as caught:
            peers.lease(model)
        assert caught.value.status_code == 503 and caught.value.retry_after == 5
        assert caught.value.message == f"Peer 'box2' is down: model '{shown}' is unavailable"
    never_up = two_peers(box2_up=False, box3_up=False)
    assert never_up.find("llama") is None  # nothing known of it: a 404
    with pytest.raises(PeerUnavailable):  # at once: no model label for a made-up name
        never_up.find("box2/llama")


def test_a_lease_counts_in_flight_on_its_peer_and_targets_the_remote_model() -> None:
    fake = FakePeer()
    peers = run(lambda: checked(FakeNetwork(box2=fake), peer_settings("box2", api_key=SECRET)))
    model = peers.find("box2/qwen")
    assert model is not None

    async def main() -> None:
        first, second = peers.lease(model), peers.lease(model)
        target = first.backend
        assert (target.model_id, target.upstream_model) == ("box2/qwen", "qwen")
        assert (target.base_url, target.api_key) == ("http://box2:8080", SECRET)
        assert peers.listing()[0]["in_flight"] == 2 and not target.idle.is_set()
        first.release()
        first.release()  # idempotent
        second.release()
        assert peers.listing()[0]["in_flight"] == 0 and target.idle.is_set()

    run(main)


def test_spillover_takes_an_up_peer_open_to_it_that_serves_the_same_id() -> None:
    box2, box3 = FakePeer(["qwen"]), FakePeer(["qwen", "llama"])
    network = FakeNetwork(box2=box2, box3=box3)
    peers = run(
        lambda: checked(network, peer_settings("box2", spillover=False), peer_settings("box3"))
    )
    assert peers.spill("qwen") == PeerModel("qwen", "box3", "qwen")
    assert peers.spill("phi") is None
    box3.failure = httpx.ConnectError("refused")
    run(peers.check_all)
    assert peers.spill("qwen") is None  # box2 serves it but takes no spillover


def test_lists_show_up_peers_models_bare_and_prefixed_and_local_names_win() -> None:
    names = [model.id for model in two_peers().models(local=["llama"])]
    assert names == ["qwen", "box2/qwen", "box2/llama", "box3/qwen", "mistral", "box3/mistral"]
    down = [model.id for model in two_peers(box2_up=False).models()]
    assert down == ["qwen", "box3/qwen", "mistral", "box3/mistral"]
    assert all(m.peer == "box3" for m in two_peers(box2_up=False).models())


# -- the loop and reloads -------------------------------------------------------------------------
def test_the_loop_checks_at_once_then_every_interval_and_stops_on_close() -> None:
    fake = FakePeer()
    clock = FakeClock()

    async def main() -> list[int]:
        peers = Peers(
            settings_of(peer_settings("box2"), peer_check_interval_s=5),
            FakeNetwork(box2=fake).client(),
            clock=clock,
        )
        peers.start()
        await clock.run_until(lambda: fake.checks == 1)
        counts = [fake.checks]
        await clock.advance(4.9)
        counts.append(fake.checks)
        await clock.advance(0.2)
        counts.append(fake.checks)
        await peers.close()
        await clock.advance(30)
        counts.append(fake.checks)
        return counts

    assert run(main) == [1, 1, 2, 2]


def test_a_reload_adds_removes_and_changes_peers_and_checks_at_once() -> None:
    box2, box3 = FakePeer(["qwen"]), FakePeer(["mistral"])
    clock = FakeClock()

    async def main() -> None:
        peers = Peers(
            settings_of(peer_settings("box2"), peer_check_interval_s=60),
            FakeNetwork(box2=box2, box3=box3).client(),
            clock=clock,
        )
        peers.start()
        await clock.run_until(lambda: box2.checks == 1)
        leased = peers.lease(PeerModel("box2/qwen", "box2", "qwen"))

        peers.replace(settings_of(peer_settings("box3"), peer_check_interval_s=60))
        await clock.run_until(lambda: box3.checks == 1, limit=1)
        assert [p["name"] for p in peers.listing()] == ["box3"]
        assert peers.find("qwen") is None and peers.find("mistral") is not None
        with pytest.raises(PeerUnavailable, match="no longer configured"):
            peers.lease(PeerModel("box2/qwen", "box2", "qwen"))
        leased.release()  # a request already on its way finishes

        moved = PeerSettings(name="box3", url="http://box2:8080", spillover=False)
        peers.replace(settings_of(moved, peer_check_interval_s=60))
        assert peers.listing()[0]["state"] == "unknown"  # a new address: checked anew
        await clock.run_until(lambda: box2.checks == 2, limit=1)
        assert peers.listing()[0]["state"] == "up"
        assert peers.listing()[0]["models"] == ["qwen"]

        kept = PeerSettings(name="box3", url="http://box2:8080", spillover=True)
        peers.replace(settings_of(kept, peer_check_interval_s=60))
        assert peers.listing()[0]["state"] == "up"  # same address: its state holds
        assert peers.spill("qwen") is not None
        await peers.close()

    run(main)
