"""The gateway as a service sees it, for real: SIGTERM in the middle of a stream, sd_notify on
a socket the test listens on, API keys, JSON logs, and a child's output over the admin API."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from harness import MODEL_ID, RunningGateway, wait_for, wait_until_gone
from sse import chat_body, data_lines

pytestmark = pytest.mark.integration
INFERENCE, ADMIN = "sk-test-inference", "sk-test-admin"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    yield sock, path
    sock.close()


def _messages(sock: socket.socket) -> Iterator[dict[str, str]]:
    while True:
        fields = sock.recv(4096).decode().split("\n")
        yield dict(field.split("=", 1) for field in fields)


def test_sigterm_lets_a_stream_finish_then_exits_zero_with_no_child(
    llama_server_bin: Path,
    demo_model_dir: Path,
    tmp_path: Path,
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "LLAMA_SUPERVISOR_SHUTDOWN_GRACE_S": "120"}
    gateway = RunningGateway(llama_server_bin, demo_model_dir, tmp_path / "gw.log", env=env)
    try:
        messages = _messages(sock)
        ready = next(messages)
        assert ready["READY"] == "1" and ready["MAINPID"] == str(gateway.proc.pid)

        chunks: list[str] = []
        first_chunk = threading.Event()

        def stream() -> None:
            body = chat_body(
                MODEL_ID, "Count to a thousand.", stream=True, max_tokens=120, ignore_eos=True
            )
            url = f"{gateway.url}/v1/chat/completions"
            with httpx.stream("POST", url, json=body, timeout=120) as reply:
                assert reply.status_code == 200
                for payload in data_lines(reply.iter_lines(), strict=False):
                    chunks.append(payload)
                    first_chunk.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert first_chunk.wait(120)
        children = gateway.children()
        assert children
        gateway.proc.send_signal(signal.SIGTERM)
        assert next(messages)["STOPPING"] == "1"

        refused = httpx.get(f"{gateway.url}/v1/models", timeout=10)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] and refused.json()["error"]["code"] == "shutting_down"

        reader.join(180)
        assert not reader.is_alive()
        assert chunks[-1] == "[DONE]"
        finals = [json.loads(c)["choices"][0]["finish_reason"] for c in chunks[:-1] if c]
        assert finals[-1] == "length"  # all 120 tokens: nothing was cut
        assert gateway.proc.wait(60) == 0
        assert wait_until_gone(children, timeout=5) == []
    finally:
        gateway.stop()


@pytest.fixture
def keyed_gateway(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path
) -> Iterator[RunningGateway]:
    env = {
        "LLAMA_SUPERVISOR_API_KEYS": json.dumps([INFERENCE]),
        "LLAMA_SUPERVISOR_ADMIN_KEYS": json.dumps([ADMIN]),
    }
    gateway = RunningGateway(
        llama_server_bin, demo_model_dir, tmp_path / "gw.log", "--log-format", "json", env=env
    )
    yield gateway
    gateway.stop()


def test_keys_guard_a_real_gateway(keyed_gateway: RunningGateway) -> None:
    url = keyed_gateway.url
    assert httpx.get(f"{url}/health").status_code == 200
    anonymous = openai.OpenAI(base_url=f"{url}/v1", api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=INFERENCE, max_retries=0)
    answer = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert answer.choices[0].message.content is not None

    load = f"{url}/api/v2/models/{MODEL_ID}/load"
    assert httpx.post(load, headers={"x-api-key": INFERENCE}).status_code == 403
    refused = httpx.post(f"{url}/api/models/{MODEL_ID}/unload")
    assert refused.status_code == 401 and "detail" in refused.json()
    assert httpx.post(load, headers={"x-api-key": ADMIN}, timeout=120).status_code == 200


def test_a_childs_output_is_kept_and_followed(keyed_gateway: RunningGateway) -> None:
    url, admin = keyed_gateway.url, {"authorization": f"Bearer {ADMIN}"}
    followed: list[dict[str, object]] = []

    def follow() -> None:
        stream_url = f"{url}/api/v2/models/{MODEL_ID}/logs/stream?lines=0"
        with httpx.stream("GET", stream_url, headers=admin, timeout=60) as reply:
            assert reply.status_code == 200
            for payload in data_lines(reply.iter_lines(), strict=False):
                followed.append(json.loads(payload))
                if "listening" in str(followed[-1]["line"]):
                    return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    time.sleep(0.5)  # the follower is in place before the child prints
    load = httpx.post(f"{url}/api/v2/models/{MODEL_ID}/load", headers=admin, timeout=120)
    assert load.status_code == 200
    follower.join(30)
    assert not follower.is_alive()
    pid = keyed_gateway.children()[0].pid
    assert followed and {line["pid"] for line in followed} == {pid}

    kept = httpx.get(f"{url}/api/v2/models/{MODEL_ID}/logs?lines=1000", headers=admin).json()
    assert kept["model"] == MODEL_ID
    assert [line["line"] for line in followed] == [line["line"] for line in kept["lines"]][
        : len(followed)
    ]
    assert wait_for(lambda: keyed_gateway.log_path.stat().st_size > 0, 5)
    for line in keyed_gateway.log_path.read_text().splitlines():
        assert isinstance(json.loads(line), dict), line  # --log-format json: every line
