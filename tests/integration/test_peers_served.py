"""Peers for real (issue 20): a front gateway serving the models of a second gateway (its
peer, a `llama-supervisor serve` subprocess with its own llama-server children on SmolLM2),
on /v1, /api (sessions kept by the front) and /api/v2, streamed and not; the peer killed
mid-stream; a dead peer's quick 503 while local models keep serving; spillover from a full
local queue to the peer; peers added and removed by SIGHUP."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from harness import MODEL_ID, RunningGateway, wait_for, wait_until_gone
from sse import chat_body, data_lines

from supervisor.children.process import free_port

pytestmark = pytest.mark.integration
PATIENCE_S = 120.0  # a bound on waits (model loads on 2 cores included): a hang fails
PEER_MODEL = "peer-smol"  # the peer's name for the demo model, which the front does not have
PEER_KEY, PEER_ADMIN = "sk-peer-inference", "sk-peer-admin"
SMALL = "ctx_size = 2048\nparallel = 2\n"
LONG = {"max_tokens": 6000, "ignore_eos": True}


def peer_models_dir(demo_model_dir: Path, root: Path) -> Path:
    """The demo model under its own name and as ``PEER_MODEL`` (hard links: no copy)."""
    models = root / "models"
    models.mkdir()
    source = demo_model_dir / f"{MODEL_ID}.gguf"
    for name in (MODEL_ID, PEER_MODEL):
        os.link(source, models / f"{name}.gguf")
    return models


def start_peer(llama_server_bin: Path, demo_model_dir: Path, root: Path) -> RunningGateway:
    """A second gateway with keys: the front must send the peer's key to use it."""
    config = root / "peer.toml"
    config.write_text(f'{SMALL}api_keys = ["{PEER_KEY}"]\nadmin_keys = ["{PEER_ADMIN}"]\n')
    models = peer_models_dir(demo_model_dir, root)
    return RunningGateway(llama_server_bin, models, root / "peer.log", "--config", str(config))


def front_config(*peers: tuple[str, str]) -> str:
    """One slot and no queue for the front's local model (so a second request spills), peers
    checked twice a second."""
    text = SMALL.replace("parallel = 2", "parallel = 1") + "queue_max = 0\n"
    text += "peer_check_interval_s = 0.5\npeer_timeout_s = 2\n"
    for name, url in peers:
        text += f'\n[[peers]]\nname = "{name}"\nurl = "{url}"\napi_key = "{PEER_KEY}"\n'
    return text


@pytest.fixture(scope="module")
def peer(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    running = start_peer(llama_server_bin, demo_model_dir, tmp_path_factory.mktemp("peer"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def front_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("front")


@pytest.fixture(scope="module")
def front(
    llama_server_bin: Path, demo_model_dir: Path, front_dir: Path, peer: RunningGateway
) -> Iterator[RunningGateway]:
    """The gateway under test: the demo model locally, and the peer as box2."""
    (front_dir / "front.toml").write_text(front_config(("box2", peer.url)))
    running = RunningGateway(llama_server_bin, demo_model_dir, front_dir / "front.log",
                             "--config", str(front_dir / "front.toml"))  # fmt: skip
    assert wait_for(lambda: peer_state(running, "box2") == "up", timeout=30)
    yield running
    running.stop()


def peers_of(gateway: RunningGateway) -> dict[str, dict[str, Any]]:
    listed = httpx.get(f"{gateway.url}/v1/peers", timeout=10).json()["data"]
    return {peer["name"]: peer for peer in listed}


def peer_state(gateway: RunningGateway, name: str) -> str | None:
    peer = peers_of(gateway).get(name)
    return None if peer is None else str(peer["state"])


def peer_activity(peer: RunningGateway) -> list[dict[str, Any]]:
    """The peer's finished requests, newest first (its activity log)."""
    headers = {"Authorization": f"Bearer {PEER_ADMIN}"}
    answer = httpx.get(f"{peer.url}/api/v2/activity", headers=headers, timeout=10)
    answer.raise_for_status()
    entries: list[dict[str, Any]] = answer.json()["data"]
    return entries


def relayed_to(peer: RunningGateway, model: str, count_before: int) -> bool:
    """Whether the peer answered a chat for ``model`` since it had ``count_before`` entries."""
    entries = peer_activity(peer)
    new = entries[: len(entries) - count_before]
    return any(e["model"] == model and e["route"] == "/v1/chat/completions" for e in new)


def post(gateway: RunningGateway, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gateway.url}{path}", json=body, timeout=PATIENCE_S)


# -- listing -------------------------------------------------------------------------------------
def test_the_peer_is_listed_up_with_its_models_and_they_are_served_by_name(
    front: RunningGateway, peer: RunningGateway
) -> None:
    box2 = peers_of(front)["box2"]
    assert box2["url"] == peer.url and box2["last_error"] is None
    assert sorted(box2["models"]) == sorted([MODEL_ID, PEER_MODEL])
    assert box2["latency_ms"] is not None and PEER_KEY not in json.dumps(box2)
    listed = httpx.get(f"{front.url}/v1/models", timeout=10).json()["data"]
    owners = {model["id"]: model["owned_by"] for model in listed}
    assert owners[MODEL_ID] == "llama-supervisor"  # the local model wins its name
    assert owners[PEER_MODEL] == owners[f"box2/{PEER_MODEL}"] == owners[f"box2/{MODEL_ID}"]
    assert owners[PEER_MODEL] == "box2"


# -- requests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [PEER_MODEL, f"box2/{PEER_MODEL}"])
def test_v1_chat_on_a_peer_model_streamed_and_not(
    front: RunningGateway, peer: RunningGateway, name: str
) -> None:
    before = len(peer_activity(peer))
    answer = post(front, "/v1/chat/completions", chat_body(name, max_tokens=8))
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    body = chat_body(name, max_tokens=8, stream=True)
    with httpx.stream(
        "POST", f"{front.url}/v1/chat/completions", json=body, timeout=PATIENCE_S
    ) as r:
        assert r.status_code == 200
        events = list(data_lines(r.iter_lines(), strict=True))
    assert events[-1] == "[DONE]"
    assert any(
        json.loads(e)["choices"] and "delta" in json.loads(e)["choices"][0] for e in events[:-1]
    )
    assert not any("error" in json.loads(e) for e in events[:-1])
    assert relayed_to(peer, PEER_MODEL, before)  # named as the peer knows it


def test_api_chat_on_a_peer_model_keeps_the_session_on_the_front(
    front: RunningGateway, peer: RunningGateway
) -> None:
    first = post(front, "/api/chat", {"model": f"box2/{PEER_MODEL}", "options": {"max_tokens": 6},
                                      "messages": [{"role": "user", "content": "Hi"}]})  # fmt: skip
    assert first.status_code == 200, first.text
    session_id = first.json()["session_id"]
    body = {"session_id": session_id, "stream": True, "options": {"max_tokens": 6},
            "messages": [{"role": "user", "content": "And again"}]}  # fmt: skip
    with httpx.stream("POST", f"{front.url}/api/chat", json=body, timeout=PATIENCE_S) as r:
        assert r.status_code == 200
        events = [json.loads(e) for e in data_lines(r.iter_lines(), strict=True)]
    assert events[-1]["done"] is True and "error" not in events[-1]
    stored = httpx.get(f"{front.url}/api/sessions/{session_id}", timeout=10).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"] * 2
    assert stored["model"] == f"box2/{PEER_MODEL}"
    on_peer = httpx.get(f"{peer.url}/api/sessions/{session_id}", timeout=10,
                        headers={"Authorization": f"Bearer {PEER_KEY}"})  # fmt: skip
    assert on_peer.status_code == 404  # the peer served turns only


def test_api_v2_chat_on_a_peer_model_streamed_and_not(
    front: RunningGateway, peer: RunningGateway
) -> None:
    before = len(peer_activity(peer))
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6}
    answer = post(front, f"/api/v2/chat/{PEER_MODEL}", body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == PEER_MODEL
    url = f"{front.url}/api/v2/chat/{PEER_MODEL}/stream"
    with httpx.stream("POST", url, json=body, timeout=PATIENCE_S) as r:
        assert r.status_code == 200
        events = list(data_lines(r.iter_lines(), strict=True))
    assert events[-1] == "[DONE]" and not any("error" in json.loads(e) for e in events[:-1])
    assert relayed_to(peer, PEER_MODEL, before)


def test_a_request_the_full_local_queue_refuses_goes_to_the_peer(
    front: RunningGateway, peer: RunningGateway
) -> None:
    """The front's one slot for its local model is busy and it queues nothing: a second
    request for that model goes to the peer serving it under the same id, not to a 429."""
    load = httpx.post(f"{front.url}/api/v2/models/{MODEL_ID}.gguf/load", timeout=PATIENCE_S)
    assert load.status_code == 200, load.text
    before = len(peer_activity(peer))
    body = chat_body(MODEL_ID, "Write a long essay.", stream=True, **LONG)
    url = f"{front.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=PATIENCE_S) as held:
        events = data_lines(held.iter_lines(), strict=True)  # kept: dropped, it hangs up
        next(events)  # generating: the slot is taken
        spilled = post(front, "/v1/chat/completions", chat_body(MODEL_ID, max_tokens=4))
    assert spilled.status_code == 200, spilled.text
    assert relayed_to(peer, MODEL_ID, before)


# -- a peer that dies ----------------------------------------------------------------------------
@pytest.fixture
def doomed(
    llama_server_bin: Path,
    demo_model_dir: Path,
    tmp_path: Path,
    front: RunningGateway,
    front_dir: Path,
    peer: RunningGateway,
) -> Iterator[RunningGateway]:
    """A second peer, box3, added to the front by SIGHUP; removed again (SIGHUP) after."""
    running = start_peer(llama_server_bin, demo_model_dir, tmp_path)
    children: list[psutil.Process] = []
    config = front_dir / "front.toml"
    try:
        config.write_text(front_config(("box2", peer.url), ("box3", running.url)))
        front.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: peer_state(front, "box3") == "up", timeout=30)
        yield running
    finally:
        children = running.children()
        running.stop()
        for child in children:  # a peer killed -9 leaves its children to their own watchdog
            if child.is_running():
                child.kill()
        config.write_text(front_config(("box2", peer.url)))
        front.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: peer_state(front, "box3") is None, timeout=30)


def test_a_peer_killed_mid_stream_ends_it_with_one_error_then_503s_while_local_serves(
    front: RunningGateway, doomed: RunningGateway
) -> None:
    body = chat_body(f"box3/{PEER_MODEL}", "Write a long essay.", stream=True, **LONG)
    url = f"{front.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=PATIENCE_S) as r:
        assert r.status_code == 200
        events = data_lines(r.iter_lines(), strict=True)
        next(events)
        children = doomed.children()
        os.kill(doomed.proc.pid, signal.SIGKILL)
        rest = list(events)
    doomed.proc.wait(30)
    assert rest[-1] == "[DONE]"
    errors = [json.loads(e)["error"] for e in rest[:-1] if "error" in json.loads(e)]
    assert len(errors) == 1 and json.loads(rest[-2])["error"] == errors[0]
    assert errors[0]["code"] == "backend_error"
    assert children and not wait_until_gone(children, timeout=10)  # no orphan left

    assert wait_for(lambda: peer_state(front, "box3") == "down", timeout=30)
    refused = post(front, "/v1/chat/completions", chat_body(f"box3/{PEER_MODEL}", max_tokens=4))
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "peer_unavailable"
    assert "box3" in refused.json()["error"]["message"]
    listed = [m["id"] for m in httpx.get(f"{front.url}/v1/models", timeout=10).json()["data"]]
    assert f"box3/{PEER_MODEL}" not in listed and f"box2/{PEER_MODEL}" in listed
    local = post(front, "/v1/chat/completions", chat_body(MODEL_ID, max_tokens=4))
    assert local.status_code == 200, local.text
    other = post(front, "/v1/chat/completions", chat_body(f"box2/{PEER_MODEL}", max_tokens=4))
    assert other.status_code == 200, other.text


def test_a_peer_nobody_listens_at_is_down_and_its_models_a_quick_503(
    front: RunningGateway, front_dir: Path, peer: RunningGateway
) -> None:
    config = front_dir / "front.toml"
    nowhere = f"http://127.0.0.1:{free_port()}"
    try:
        config.write_text(front_config(("box2", peer.url), ("box9", nowhere)))
        reload = httpx.post(f"{front.url}/api/v2/reload", timeout=30)
        assert reload.status_code == 200, reload.text
        assert wait_for(lambda: peer_state(front, "box9") == "down", timeout=30)
        assert peers_of(front)["box9"]["last_error"]
        refused = post(front, "/v1/chat/completions", chat_body("box9/anything", max_tokens=4))
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert refused.json()["error"]["message"] == (
            "Peer 'box9' is down: model 'box9/anything' is unavailable"
        )
    finally:
        config.write_text(front_config(("box2", peer.url)))
        httpx.post(f"{front.url}/api/v2/reload", timeout=30)
