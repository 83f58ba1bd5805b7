"""A real gateway process with an empty models directory pulls the demo model from a local file
server (cut once mid-way, so the pull resumes), and a real llama-server then answers a chat
with it: pulled, checked and served without a restart. Its partial files stay in the test's
own cache directory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import MODEL_ID, RunningGateway
from model_server import ModelServer, model_server
from pull_gateway import pull_events

pytestmark = pytest.mark.integration
DEMO_FILE = f"{MODEL_ID}.gguf"


@pytest.fixture(scope="module")
def mirror(demo_model_dir: Path) -> Iterator[ModelServer]:
    with model_server() as server:
        server.serve("/mirror/" + DEMO_FILE, (demo_model_dir / DEMO_FILE).read_bytes())
        server.faults.chunk, server.faults.cut_after, server.faults.cuts = 1 << 20, 8 << 20, 1
        yield server


def test_a_pulled_model_answers_without_a_restart(
    llama_server_bin: Path,
    demo_model_dir: Path,
    mirror: ModelServer,
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    env = {"LLAMA_SUPERVISOR_PULL_ALLOW_PRIVATE": "true",
           "LLAMA_SUPERVISOR_CACHE": str(tmp_path / "cache")}  # fmt: skip
    gateway = RunningGateway(llama_server_bin, models, tmp_path / "gateway.log", env=env)
    try:
        with httpx.Client(base_url=gateway.url, timeout=120) as client:
            assert client.get("/v1/models").json()["data"] == []
            digest = hashlib.sha256((demo_model_dir / DEMO_FILE).read_bytes()).hexdigest()
            body = {"url": f"{mirror.url}/mirror/{DEMO_FILE}", "sha256": digest}
            with client.stream("POST", "/api/v2/models/pull", json=body) as response:
                assert response.status_code == 200
                events = list(pull_events(response.iter_lines()))
            assert events[-1][0] == "done", events[-1]
            assert events[-1][1]["model"] == MODEL_ID
            assert "range" in mirror.requests[-1]  # the cut was resumed
            chat = {"model": MODEL_ID, "max_tokens": 4,
                    "messages": [{"role": "user", "content": "Say hi"}]}  # fmt: skip
            answer = client.post("/v1/chat/completions", json=chat)
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"]
    finally:
        gateway.stop()
    assert list((tmp_path / "cache" / "pulls").iterdir()) == []
