"""Children live and die with the gateway, and a bad model file fails loudly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from harness import MODEL_ID, RunningGateway, alive, wait_until_gone
from sse import chat_body

pytestmark = pytest.mark.integration


def chat(gateway: RunningGateway, model: str = MODEL_ID) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=chat_body(model, max_tokens=4),
        timeout=120,
    )


@pytest.fixture
def own_gateway(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path
) -> Callable[..., RunningGateway]:
    started: list[RunningGateway] = []

    def start(models_dir: Path = demo_model_dir) -> RunningGateway:
        running = RunningGateway(llama_server_bin, models_dir, tmp_path / "gateway.log")
        started.append(running)
        return running

    yield start  # type: ignore[misc]
    for running in started:
        running.stop()


def test_sigkill_of_the_gateway_leaves_no_llama_server(
    own_gateway: Callable[..., RunningGateway],
) -> None:
    gateway = own_gateway()
    assert chat(gateway).status_code == 200
    assert httpx.post(
        f"{gateway.url}/v1/embeddings", json={"model": MODEL_ID, "input": "x"}, timeout=120
    ).is_success
    children = gateway.children()
    assert len(children) == 2  # a chat child and an embedding child
    os.kill(gateway.proc.pid, signal.SIGKILL)
    gateway.proc.wait()
    assert wait_until_gone(children, timeout=2) == []


def test_sigterm_stops_children_and_exits_zero(own_gateway: Callable[..., RunningGateway]) -> None:
    gateway = own_gateway()
    assert chat(gateway).status_code == 200
    children = gateway.children()
    assert children and all(alive(c) for c in children)
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(30) == 0
    assert wait_until_gone(children, timeout=1) == []


def test_a_model_that_cannot_load_reports_llama_servers_own_words(
    own_gateway: Callable[..., RunningGateway],
    make_gguf: Callable[..., Path],
    tmp_path: Path,
) -> None:
    # A well-formed GGUF that lacks the hyperparameters and tensors a llama model needs.
    make_gguf("broken/hollow.gguf")
    gateway = own_gateway(tmp_path / "broken")
    response = chat(gateway, "hollow")
    assert response.status_code == 503
    assert response.headers["retry-after"]
    error = response.json()["error"]
    assert error["code"] == "model_load_failed"
    assert "exited with code" in error["message"]
    assert "error loading model" in error["message"]  # llama.cpp's own words, from its stderr
    assert gateway.children() == []


def test_the_gateway_refuses_to_start_without_a_binary(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "serve", "--llama-server", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "llama-server not found" in result.stderr
