"""The shipped nginx site in front of a real gateway: streams pass token by token, a long quiet
generation is not cut, and a client that hangs up at nginx frees its slot.

The gateway runs with its liveness check effectively off, so that a SIGSTOPped child (the way
these tests make a generation go quiet) is not killed and restarted under them.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import MODEL_ID, RunningGateway, wait_for
from nginx_site import RunningNginx, site_for, write_nginx_conf
from sse import data_lines

from bench.nginx import find_nginx
from supervisor.children.process import free_port

pytestmark = pytest.mark.integration

REQUIRED = os.environ.get("LLAMA_SUPERVISOR_REQUIRE_INTEGRATION") == "1"
NGINX_DEFAULT_READ_TIMEOUT_S = 60.0
# Long enough (hundreds of tokens) that the request is surely still generating when stopped.
QUIET_BODY = {
    "model": MODEL_ID,
    "messages": [{"role": "user", "content": "Tell me a long story."}],
    "max_tokens": 128,
    "ignore_eos": True,  # llama.cpp's own: exactly max_tokens tokens
}


@pytest.fixture(scope="module")
def nginx_bin() -> str:
    found = find_nginx()
    if found is None:
        reason = "nginx is not installed: make system-deps (apt-get install nginx)"
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def quiet_gateway(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    log = tmp_path_factory.mktemp("nginx-gateway") / "gateway.log"
    # Child keys off: a test reads the child's /slots directly, which a keyed child refuses.
    env = {"LLAMA_SUPERVISOR_HEALTH_INTERVAL_S": "10000", "LLAMA_SUPERVISOR_CHILD_KEYS": "false"}
    running = RunningGateway(llama_server_bin, demo_model_dir, log, env=env)
    try:
        # Load the model now, so that every timing below is generation alone.
        body = {"model": MODEL_ID, "prompt": "x", "max_tokens": 1}
        httpx.post(f"{running.url}/v1/completions", json=body, timeout=120).raise_for_status()
        yield running
    finally:
        running.stop()


def start_nginx(
    nginx: str, gateway: RunningGateway, workdir: Path, read_timeout: str | None = None
) -> RunningNginx:
    port = free_port()
    conf = write_nginx_conf(workdir, site_for(gateway.port, port, read_timeout=read_timeout))
    return RunningNginx(nginx, conf, port)


@pytest.fixture(scope="module")
def nginx(
    nginx_bin: str, quiet_gateway: RunningGateway, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningNginx]:
    running = start_nginx(nginx_bin, quiet_gateway, tmp_path_factory.mktemp("nginx"))
    yield running
    running.stop()


def in_flight(gateway: RunningGateway) -> int:
    info = httpx.get(f"{gateway.url}/api/v2/models/{MODEL_ID}", timeout=10).json()
    count: int = info["state"]["in_flight"]
    return count


def slots_busy(port: int) -> bool:
    slots = httpx.get(f"http://127.0.0.1:{port}/slots", timeout=5).json()
    return any(slot["is_processing"] for slot in slots)


def chat_child_pid(gateway: RunningGateway) -> int:
    for child in gateway.children():
        if "--embeddings" not in child.cmdline():
            pid: int = child.pid
            return pid
    raise AssertionError("no chat child running")


def test_a_stream_passes_nginx_token_by_token(nginx: RunningNginx) -> None:
    body = QUIET_BODY | {"max_tokens": 64, "stream": True}
    arrivals: list[float] = []
    started = time.monotonic()
    with httpx.stream("POST", f"{nginx.url}/v1/chat/completions", json=body, timeout=120) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line.removeprefix("data: "))["choices"]
            if choices and choices[0]["delta"].get("content"):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) >= 32
    # Relayed as generated, the first token comes long before the last; held back by a
    # buffering proxy, they would come together at the end.
    assert arrivals[0] < arrivals[-1] / 2, (arrivals[0], arrivals[-1])


def test_a_client_hanging_up_at_nginx_frees_the_slot(
    nginx: RunningNginx, quiet_gateway: RunningGateway
) -> None:
    # Thousands of tokens take far longer than the 10 s below: a slot free within them was
    # freed by the hang-up, not by the end of the generation.
    body = {"model": MODEL_ID, "prompt": "Tell me a long story.", "stream": True,
            "max_tokens": 6000, "ignore_eos": True}  # fmt: skip
    port = quiet_gateway.child_port()
    with httpx.stream("POST", f"{nginx.url}/v1/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        events = data_lines(resp.iter_lines(), strict=False)
        for _ in range(3):
            next(events)
        assert slots_busy(port)
        assert in_flight(quiet_gateway) == 1
    assert wait_for(lambda: in_flight(quiet_gateway) == 0 and not slots_busy(port), timeout=10)


class StoppedChildRequest:
    """A non-streamed chat through nginx during which the child is SIGSTOPped for a while, so
    neither nginx nor the gateway sees a byte from it."""

    def __init__(self, url: str, gateway: RunningGateway, stop_for: float) -> None:
        self.response: httpx.Response | None = None
        self.error: Exception | None = None
        assert wait_for(lambda: in_flight(gateway) == 0, timeout=30), "an earlier request lingers"
        client = threading.Thread(target=self._send, args=(url, stop_for + 120))
        client.start()
        child = chat_child_pid(gateway)
        assert wait_for(lambda: in_flight(gateway) == 1, timeout=30), "the request never began"
        os.kill(child, signal.SIGSTOP)
        try:
            client.join(stop_for)  # returns early if nginx answers while the child is stopped
            self.answered_while_stopped = not client.is_alive()
        finally:
            os.kill(child, signal.SIGCONT)
        client.join(120)
        assert not client.is_alive(), "no answer after the child was resumed"

    def _send(self, url: str, timeout: float) -> None:
        try:
            self.response = httpx.post(
                f"{url}/v1/chat/completions", json=QUIET_BODY, timeout=timeout
            )
        except httpx.HTTPError as exc:
            self.error = exc


def test_the_control_nginx_with_a_short_read_timeout_gives_up(
    nginx_bin: str, quiet_gateway: RunningGateway, tmp_path: Path
) -> None:
    """Proves the next test can fail: the same site with a 2 s read timeout answers 504."""
    short = start_nginx(nginx_bin, quiet_gateway, tmp_path, read_timeout="2s")
    try:
        request = StoppedChildRequest(short.url, quiet_gateway, stop_for=5.0)
    finally:
        short.stop()
    assert request.answered_while_stopped
    assert request.response is not None, request.error
    assert request.response.status_code == 504


@pytest.mark.timeout(240)
def test_a_generation_quiet_for_longer_than_nginx_default_timeout_is_not_cut(
    nginx: RunningNginx, quiet_gateway: RunningGateway
) -> None:
    request = StoppedChildRequest(
        nginx.url, quiet_gateway, stop_for=NGINX_DEFAULT_READ_TIMEOUT_S + 5
    )
    assert not request.answered_while_stopped, "answered while the child was stopped"
    assert request.response is not None, request.error
    assert request.response.status_code == 200, request.response.text
    reply = request.response.json()
    assert reply["usage"]["completion_tokens"] == QUIET_BODY["max_tokens"]
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["choices"][0]["message"]["content"]
