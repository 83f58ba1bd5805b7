"""``models pull`` and ``models import`` as a user runs them (``python -m supervisor.cli`` in a
subprocess) against a real gateway: the demo model fetched from a local HTTP server (the
gateway allowed private addresses for it), checked against its sha256, then listed and
answering a chat completion without a restart; and imported from an import folder."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from harness import MODEL_ID, RunningGateway

pytestmark = pytest.mark.integration
MODEL_FILE = f"{MODEL_ID}.gguf"
ADMIN_KEY = "pull-cli-admin-key"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def mirror(demo_model_dir: Path) -> Iterator[str]:
    """A plain HTTP server on loopback serving the demo model's folder."""
    handler = functools.partial(QuietHandler, directory=str(demo_model_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def demo_sha256(demo_model_dir: Path) -> str:
    digest = hashlib.sha256()
    with (demo_model_dir / MODEL_FILE).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def import_dir(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("card")
    os.link(demo_model_dir / MODEL_FILE, folder / "card-model.gguf")
    return folder


@pytest.fixture(scope="module")
def pulling_gateway(
    llama_server_bin: Path, import_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """A keyed gateway with an empty models directory that may pull from loopback."""
    directory = tmp_path_factory.mktemp("pull-gateway")
    models = directory / "models"
    models.mkdir()
    config = directory / "config.toml"
    config.write_text(
        f'admin_keys = ["{ADMIN_KEY}"]\nctx_size = 2048\nparallel = 1\n'
        f"import_dirs = [{json.dumps(str(import_dir))}]\n"
    )
    running = RunningGateway(
        llama_server_bin, models, directory / "gateway.log", "--config", str(config),
        env={"LLAMA_SUPERVISOR_PULL_ALLOW_PRIVATE": "true"},
    )  # fmt: skip
    yield running
    running.stop()


def cli(gateway: RunningGateway, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
           "LLAMA_SUPERVISOR_ADMIN_KEY": ADMIN_KEY}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli", *argv, "--url", gateway.url],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def served_as(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    found = re.search(r"served as (\S+)", result.stdout)
    assert found, result.stdout
    return found.group(1)


def listed(gateway: RunningGateway) -> list[str]:
    result = cli(gateway, "models", "list", "--json")
    assert result.returncode == 0, result.stderr
    return [model["id"] for model in json.loads(result.stdout)["available_models"]]


def chat(gateway: RunningGateway, model: str) -> dict[str, object]:
    reply = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        json={"model": model, "max_tokens": 4,
              "messages": [{"role": "user", "content": "Say hi"}]},
        timeout=120,
    )  # fmt: skip
    assert reply.status_code == 200, reply.text
    answer: dict[str, object] = reply.json()
    return answer


def test_pull_then_list_and_chat_without_a_restart(
    pulling_gateway: RunningGateway, mirror: str, demo_sha256: str
) -> None:
    url = f"{mirror}/{MODEL_FILE}"
    pulled = cli(pulling_gateway, "models", "pull", url, "--sha256", demo_sha256,
                 "--file", "smol-pulled.gguf")  # fmt: skip
    model = served_as(pulled)
    assert f"llama-supervisor models load {model}" in pulled.stdout
    assert len(pulled.stderr.splitlines()) <= 4  # piped: a few plain lines, not a bar
    assert "\x1b[" not in pulled.stderr
    assert model in listed(pulling_gateway) or f"{model}.gguf" in listed(pulling_gateway)
    assert chat(pulling_gateway, model)["choices"]

    again = cli(pulling_gateway, "models", "pull", url, "--file", "smol-pulled.gguf")
    assert again.returncode == 1
    assert "[HTTP 409]" in again.stderr and "Traceback" not in again.stderr


def test_a_checksum_mismatch_is_exit_1_and_leaves_nothing(
    pulling_gateway: RunningGateway, mirror: str
) -> None:
    bad = cli(pulling_gateway, "models", "pull", f"{mirror}/{MODEL_FILE}", "--sha256", "0" * 64,
              "--file", "smol-bad.gguf")  # fmt: skip
    assert bad.returncode == 1
    assert "checksum_mismatch" in bad.stderr and "Traceback" not in bad.stderr
    assert not any("smol-bad" in model for model in listed(pulling_gateway))


def test_import_from_the_import_folder(pulling_gateway: RunningGateway, demo_sha256: str) -> None:
    imported = cli(pulling_gateway, "models", "import", "card-model.gguf",
                   "--sha256", demo_sha256, "--file", "smol-imported.gguf")  # fmt: skip
    model = served_as(imported)
    assert model in listed(pulling_gateway) or f"{model}.gguf" in listed(pulling_gateway)

    outside = cli(pulling_gateway, "models", "import", "/etc/hostname")
    assert outside.returncode == 1
    assert "[HTTP 403]" in outside.stderr and "admin key" not in outside.stderr
