"""The client commands as a user runs them (`python -m supervisor.cli …` in a subprocess)
against a real gateway with a real llama-server child on SmolLM2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import MODEL_ID, RunningGateway

pytestmark = pytest.mark.integration
MODEL_FILE = f"{MODEL_ID}.gguf"
ADMIN_KEY = "cli-test-admin-key"


def cli(*argv: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    if key is not None:
        env["LLAMA_SUPERVISOR_ADMIN_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli", *argv],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def keyed_gateway(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """A gateway that wants an admin key, with a small context so loads are quick."""
    directory = tmp_path_factory.mktemp("cli-gateway")
    config = directory / "config.toml"
    config.write_text(f'admin_keys = ["{ADMIN_KEY}"]\nctx_size = 2048\nparallel = 1\n')
    running = RunningGateway(
        llama_server_bin, demo_model_dir, directory / "gateway.log", "--config", str(config)
    )
    yield running
    running.stop()


def test_a_session_of_client_commands(keyed_gateway: RunningGateway) -> None:
    url = ["--url", keyed_gateway.url]

    refused = cli("models", "list", *url)
    assert refused.returncode == 1
    assert "no admin key given" in refused.stderr and "Traceback" not in refused.stderr

    listed = cli("models", "list", "--json", *url, key=ADMIN_KEY)
    assert listed.returncode == 0, listed.stderr
    ids = [m["id"] for m in json.loads(listed.stdout)["available_models"]]
    assert MODEL_FILE in ids

    loaded = cli("models", "load", MODEL_ID, "--threads", "2", *url, key=ADMIN_KEY)
    assert loaded.returncode == 0, loaded.stderr
    assert f"loaded {MODEL_ID}" in loaded.stdout

    table = cli("models", "list", *url, key=ADMIN_KEY)
    assert table.returncode == 0 and "loaded" in table.stdout

    status = cli("models", "status", MODEL_ID, "--json", *url, key=ADMIN_KEY)
    info = json.loads(status.stdout)
    assert info["status"] == "loaded" and info["state"]["params"]["threads"] == 2
    pid = info["state"]["pid"]

    logs = cli("logs", MODEL_ID, "-n", "5", "--json", *url, key=ADMIN_KEY)
    assert logs.returncode == 0, logs.stderr
    lines = json.loads(logs.stdout)["lines"]
    assert 0 < len(lines) <= 5 and all(line["pid"] == pid for line in lines)

    unloaded = cli("models", "unload", MODEL_ID, *url, key=ADMIN_KEY)
    assert unloaded.returncode == 0, unloaded.stderr
    after = json.loads(cli("models", "status", MODEL_ID, "--json", *url, key=ADMIN_KEY).stdout)
    assert after["status"] == "unloaded"

    unknown = cli("models", "status", "no-such-model", *url, key=ADMIN_KEY)
    assert unknown.returncode == 1 and "no-such-model" in unknown.stderr


def test_logs_follow_streams_until_ctrl_c(keyed_gateway: RunningGateway) -> None:
    loaded = cli("models", "load", MODEL_ID, "--url", keyed_gateway.url, key=ADMIN_KEY)
    assert loaded.returncode == 0, loaded.stderr
    follow = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "logs", MODEL_ID, "-f", "-n", "3",
         "--url", keyed_gateway.url, "--api-key", ADMIN_KEY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        first = follow.stdout.readline()
        assert "chat[" in first
        follow.send_signal(signal.SIGINT)
        assert follow.wait(10) == 0
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()


def test_no_gateway_is_exit_2(keyed_gateway: RunningGateway) -> None:
    gone = cli("models", "list", "--url", "http://127.0.0.1:9")
    assert gone.returncode == 2
    assert "no gateway at http://127.0.0.1:9" in gone.stderr
