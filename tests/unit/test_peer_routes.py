"""Peers through the gateway's routes, a fake peer (``FakeChild``) on a real socket:
``GET /v1/peers``, peer models in every model list (a local model wins a name clash), the
peer's key on its checks, ``/v1/peers`` for admin keys only, and the peers' metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_child import DROP, FakeChild, Reply, Request, Stream
from fakes import FakeFactory
from served import MakeSettings, client_of
from sse import DONE, delta, sse_data

from supervisor.app import create_app

MakeGGUF = Callable[..., Path]
PEER_KEY = "sk-peer-0123"
ADMIN = "sk-admin-4567"
LOCAL = "tiny.Q4_1"
SETTLE_S = 10.0


@pytest.fixture
def fake_peer() -> Iterator[FakeChild]:
    """Another server whose /v1/models lists qwen, and a model of the local model's name."""
    with FakeChild() as peer:
        peer.answer("GET", "/v1/models", Reply(json={"data": [{"id": "qwen"}, {"id": LOCAL}]}))
        yield peer


def peer_config(url: str, **fields: Any) -> dict[str, Any]:
    return {"name": "box2", "url": url, "api_key": PEER_KEY} | fields


def settled(client: httpx.Client, **headers: str) -> list[dict[str, Any]]:
    """``GET /v1/peers`` once every peer has been checked."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        answer = client.get("/v1/peers", headers=headers)
        assert answer.status_code == 200, answer.text
        peers: list[dict[str, Any]] = answer.json()["data"]
        if all(peer["state"] != "unknown" for peer in peers):
            return peers
        assert time.monotonic() < deadline, "the peers were never checked"
        time.sleep(0.02)


@pytest.fixture
def client(
    way: str,
    make_settings: MakeSettings,
    make_gguf: MakeGGUF,
    factory: FakeFactory,
    fake_peer: FakeChild,
) -> Iterator[httpx.Client]:
    make_gguf(f"models/{LOCAL}.gguf")
    settings = make_settings(peers=[peer_config(fake_peer.url)])
    with client_of(create_app(settings, factory=factory), settings, way) as http_client:
        settled(http_client)
        yield http_client


def test_v1_peers_lists_each_peer_with_its_state_and_models_never_its_key(
    client: httpx.Client, fake_peer: FakeChild
) -> None:
    answer = client.get("/v1/peers")
    assert PEER_KEY not in answer.text
    body = answer.json()
    assert body["object"] == "list"
    [peer] = body["data"]
    assert peer["name"] == "box2" and peer["url"] == fake_peer.url
    assert peer["state"] == "up" and peer["last_error"] is None
    assert peer["models"] == ["qwen", LOCAL]
    assert peer["spillover"] is True and peer["in_flight"] == 0
    assert isinstance(peer["latency_ms"], float) and isinstance(peer["checked_at"], float)
    checks = fake_peer.received("GET", "/v1/models")
    assert checks and checks[0].headers["authorization"] == f"Bearer {PEER_KEY}"


def test_openai_lists_show_the_peers_models_after_the_local_ones(client: httpx.Client) -> None:
    for path in ("/v1/models", "/models"):
        data = client.get(path).json()["data"]
        assert [(m["id"], m["owned_by"]) for m in data] == [
            (LOCAL, "llama-supervisor"),
            ("qwen", "box2"),
            ("box2/qwen", "box2"),
            (f"box2/{LOCAL}", "box2"),  # the bare name is the local model's
        ]
    assert client.get("/v1/models/qwen").json()["owned_by"] == "box2"
    assert client.get(f"/v1/models/{LOCAL}").json()["owned_by"] == "llama-supervisor"
    assert client.get("/v1/models/phi").status_code == 404
    assert client.get("/").json()["models_available"] == 4


def test_api_and_api_v2_lists_show_the_peers_models(client: httpx.Client) -> None:
    api = client.get("/api/models").json()["models"]
    assert [m["name"] for m in api] == [LOCAL, "qwen", "box2/qwen", f"box2/{LOCAL}"]
    assert api[1]["loaded"] is True and api[1]["size_mb"] == 0
    v2 = client.get("/api/v2/models").json()
    ids = [m["id"] for m in v2["available_models"]]
    assert ids == [f"{LOCAL}.gguf", "qwen", "box2/qwen", f"box2/{LOCAL}"]
    assert v2["available_models"][1]["capabilities"] == ["completion"]
    assert [m.get("peer") for m in v2["available_models"]] == [None, "box2", "box2", "box2"]
    assert "qwen" not in v2["loaded_models"]


def test_a_down_peers_models_leave_the_lists(
    way: str,
    make_settings: MakeSettings,
    make_gguf: MakeGGUF,
    factory: FakeFactory,
) -> None:
    """Nothing listens at the peer's address: it is down, and only local models are listed."""
    with FakeChild() as gone:
        url = gone.url
    make_gguf(f"models/{LOCAL}.gguf")
    settings = make_settings(peers=[peer_config(url)])
    with client_of(create_app(settings, factory=factory), settings, way) as client:
        [peer] = settled(client)
        assert peer["state"] == "down" and peer["last_error"]
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [LOCAL]


def test_v1_peers_needs_an_admin_key(
    make_settings: MakeSettings, factory: FakeFactory, fake_peer: FakeChild
) -> None:
    settings = make_settings(
        peers=[peer_config(fake_peer.url)], api_keys=["sk-inference-0123"], admin_keys=[ADMIN]
    )
    with client_of(create_app(settings, factory=factory), settings, "asgi") as client:
        inference = {"Authorization": "Bearer sk-inference-0123"}
        assert client.get("/v1/peers", headers=inference).status_code == 403
        assert client.get("/v1/peers").status_code == 401
        [peer] = settled(client, Authorization=f"Bearer {ADMIN}")
        assert peer["state"] == "up"
        assert "box2/qwen" in client.get("/v1/models", headers=inference).text


def test_metrics_show_each_peers_health(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    assert 'llama_supervisor_peer_up{peer="box2"} 1.0' in text
    assert 'llama_supervisor_peer_check_seconds{peer="box2"}' in text
    assert 'llama_supervisor_peer_in_flight_requests{peer="box2"} 0.0' in text


# -- requests relayed to the peer -------------------------------------------------------------
def chat_reply(request: Request) -> Reply:
    """A chat answer that says which model the body named."""
    model = request.json()["model"]
    message = {"role": "assistant", "content": f"from {model}"}
    return Reply(json={"model": model, "choices": [{"index": 0, "message": message}]})


def chat(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]} | fields


@pytest.mark.parametrize("name", ["box2/qwen", "qwen"])
def test_a_chat_for_a_peer_model_goes_to_the_peer_named_as_it_knows_it(
    client: httpx.Client, fake_peer: FakeChild, name: str
) -> None:
    fake_peer.answer("POST", "/v1/chat/completions", chat_reply)
    answer = client.post("/v1/chat/completions", json=chat(name))
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "from qwen"
    [sent] = fake_peer.received("POST", "/v1/chat/completions")
    assert sent.json()["model"] == "qwen"
    assert sent.headers["authorization"] == f"Bearer {PEER_KEY}"


def test_a_streamed_chat_for_a_peer_model_is_passed_through(
    client: httpx.Client, fake_peer: FakeChild
) -> None:
    fake_peer.answer("POST", "/v1/chat/completions", Stream([delta("Hel"), delta("lo"), DONE]))
    with client.stream("POST", "/v1/chat/completions", json=chat("box2/qwen", stream=True)) as r:
        assert r.status_code == 200
        raw = r.read().decode()
    texts = [
        json.loads(d)["choices"][0]["delta"]["content"] for d in sse_data(raw, strict=True)[:-1]
    ]
    assert texts == ["Hel", "lo"] and raw.endswith(DONE.decode())


def test_a_local_model_wins_its_name_and_the_prefix_reaches_the_peers(
    client: httpx.Client, fake_peer: FakeChild, fake_child: FakeChild
) -> None:
    fake_peer.answer("POST", "/v1/chat/completions", chat_reply)
    fake_child.answer("POST", "/v1/chat/completions", chat_reply)
    client.post("/v1/chat/completions", json=chat(LOCAL)).raise_for_status()
    assert len(fake_child.received("POST", "/v1/chat/completions")) == 1
    assert not fake_peer.received("POST", "/v1/chat/completions")
    answer = client.post("/v1/chat/completions", json=chat(f"box2/{LOCAL}"))
    assert answer.json()["choices"][0]["message"]["content"] == f"from {LOCAL}"
    assert len(fake_peer.received("POST", "/v1/chat/completions")) == 1


def test_a_down_peers_model_is_a_quick_503_with_retry_after(
    way: str, make_settings: MakeSettings, factory: FakeFactory
) -> None:
    with FakeChild() as gone:
        url = gone.url
    settings = make_settings(peers=[peer_config(url)])
    with client_of(create_app(settings, factory=factory), settings, way) as client:
        settled(client)
        answer = client.post("/v1/chat/completions", json=chat("box2/qwen"))
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "5"
        error = answer.json()["error"]
        assert error["code"] == "peer_unavailable"
        assert error["message"] == "Peer 'box2' is down: model 'box2/qwen' is unavailable"
        assert client.post("/v1/chat/completions", json=chat("qwen")).status_code == 404


def test_a_request_the_full_local_queue_refuses_spills_over_to_the_peer(
    make_settings: MakeSettings,
    make_gguf: MakeGGUF,
    factory: FakeFactory,
    fake_child: FakeChild,
    fake_peer: FakeChild,
) -> None:
    """One slot and no queue here: while the slot is busy, a second request for the model
    goes to the peer serving it under the same id, not to a 429; without spillover, a 429."""
    make_gguf(f"models/{LOCAL}.gguf")
    fake_child.answer("POST", "/v1/chat/completions", Stream([delta("busy")], end="hold"))
    fake_peer.answer("POST", "/v1/chat/completions", chat_reply)
    for spillover, status in ((True, 200), (False, 429)):
        settings = make_settings(
            parallel=1, queue_max=0, peers=[peer_config(fake_peer.url, spillover=spillover)]
        )
        with client_of(create_app(settings, factory=factory), settings, "lane") as client:
            settled(client)
            body = chat(LOCAL, stream=True)
            with client.stream("POST", "/v1/chat/completions", json=body) as held:
                assert held.status_code == 200  # the local slot is taken until this closes
                answer = client.post("/v1/chat/completions", json=chat(LOCAL))
            assert answer.status_code == status, answer.text
    [spilled] = fake_peer.received("POST", "/v1/chat/completions")
    assert spilled.json()["model"] == LOCAL


def test_a_reload_adds_and_removes_peers(
    make_settings: MakeSettings, factory: FakeFactory, fake_peer: FakeChild
) -> None:
    settings = make_settings()
    configs = [settings]
    app = create_app(settings, factory=factory, load_settings=lambda: configs[-1])
    with client_of(app, settings, "asgi") as client:
        assert client.get("/v1/peers").json()["data"] == []
        configs.append(make_settings(peers=[peer_config(fake_peer.url)]))
        assert client.post("/api/v2/reload").status_code == 200
        [peer] = settled(client)
        assert peer["state"] == "up" and "box2/qwen" in client.get("/v1/models").text
        configs.append(make_settings())
        assert client.post("/api/v2/reload").status_code == 200
        assert client.get("/v1/peers").json()["data"] == []
        assert client.post("/v1/chat/completions", json=chat("box2/qwen")).status_code == 404


def test_api_generate_and_embeddings_reach_the_peer_named_as_it_knows_it(
    client: httpx.Client, fake_peer: FakeChild
) -> None:
    completion = {"model": "qwen", "choices": [{"index": 0, "text": " there"}]}
    vectors = {"model": "qwen", "data": [{"index": 0, "embedding": [0.5, 0.25]}]}
    fake_peer.answer("POST", "/v1/completions", Reply(json=completion))
    fake_peer.answer("POST", "/v1/embeddings", Reply(json=vectors))
    generated = client.post("/api/generate", json={"model": "box2/qwen", "prompt": "Hi"})
    assert generated.status_code == 200, generated.text
    assert generated.json()["text"] == " there"
    embedded = client.post("/api/embeddings", json={"model": "qwen", "input": "Hi"})
    assert embedded.status_code == 200, embedded.text
    sent = fake_peer.received("POST", "/v1/completions") + fake_peer.received(
        "POST", "/v1/embeddings"
    )
    assert [request.json()["model"] for request in sent] == ["qwen", "qwen"]


def test_a_peer_that_hangs_up_without_answering_is_a_502(
    client: httpx.Client, fake_peer: FakeChild
) -> None:
    fake_peer.answer("POST", "/v1/chat/completions", DROP)
    answer = client.post("/v1/chat/completions", json=chat("box2/qwen"))
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "backend_error"


def test_a_get_naming_a_peer_model_in_its_query_names_it_as_the_peer_knows_it(
    client: httpx.Client, fake_peer: FakeChild
) -> None:
    fake_peer.answer("GET", "/props", Reply(json={"total_slots": 1}))
    fake_peer.answer("POST", "/lora-adapters", Reply(json=[]))
    answer = client.get("/props", params={"model": "box2/qwen"})
    assert answer.status_code == 200, answer.text
    [sent] = fake_peer.received("GET", "/props")
    assert sent.query == "model=qwen"
    scales = [{"id": 0, "scale": 0.5}]  # a JSON list, not an object: passed on as it came
    answer = client.post("/lora-adapters", params={"model": "box2/qwen"}, json=scales)
    assert answer.status_code == 200, answer.text
    [sent] = fake_peer.received("POST", "/lora-adapters")
    assert sent.query == "model=qwen" and sent.json() == scales


def test_a_form_naming_a_peer_model_names_it_as_the_peer_knows_it(
    client: httpx.Client, fake_peer: FakeChild
) -> None:
    fake_peer.answer("POST", "/v1/audio/transcriptions", Reply(json={"text": "hi"}))
    answer = client.post(
        "/v1/audio/transcriptions",
        data={"model": "box2/qwen", "language": "en"},
        files={"file": ("a.wav", b"RIFF\x00\x00", "audio/wav")},
    )
    assert answer.status_code == 200, answer.text
    [sent] = fake_peer.received("POST", "/v1/audio/transcriptions")
    assert b'name="model"\r\n\r\nqwen\r\n' in sent.body
    assert b'name="language"\r\n\r\nen\r\n' in sent.body and b"RIFF\x00\x00" in sent.body


def test_made_up_names_on_a_down_peer_are_a_503_with_no_metrics_series(
    way: str, make_settings: MakeSettings, factory: FakeFactory
) -> None:
    """A 503 for any ``box2/<id>`` while box2 is down, but the metrics' model labels stay
    bounded (names a peer served when last up, or configured): no series per made-up name."""
    with FakeChild() as gone:
        url = gone.url
    settings = make_settings(peers=[peer_config(url)])
    with client_of(create_app(settings, factory=factory), settings, way) as client:
        settled(client)
        for made_up in ("box2/made-up-1", "box2/made-up-2"):
            answer = client.post("/v1/chat/completions", json=chat(made_up))
            assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
            assert answer.json()["error"]["code"] == "peer_unavailable"
        assert "made-up" not in client.get("/metrics").text
