"""deploy/: the rpc-worker's systemd unit as install.sh renders it, checked by systemd-analyze."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install.sh"
UNIT = "etc/systemd/system/llama-supervisor-rpc-worker.service"
REQUIRED = os.environ.get("LLAMA_SUPERVISOR_REQUIRE_INTEGRATION") == "1"


@pytest.fixture
def staged(tmp_path: Path) -> tuple[Path, Path]:
    fake_bin = tmp_path / "venv" / "bin" / "llama-supervisor"
    fake_bin.parent.mkdir(parents=True)
    fake_bin.write_text("#!/bin/sh\nexit 0\n")
    fake_bin.chmod(0o755)
    root = tmp_path / "root"
    done = subprocess.run(
        ["bash", str(INSTALL), "--platform", "linux", "--destdir", str(root),
         "--prefix", str(fake_bin.parent.parent), "--bin", str(fake_bin)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "systemctl enable --now llama-supervisor-rpc-worker" in done.stdout
    return root / UNIT, fake_bin


def test_the_worker_unit_is_rendered_and_runs_rpc_worker(staged: tuple[Path, Path]) -> None:
    unit, fake_bin = staged
    text = unit.read_text()
    assert "@" not in text.replace("@…@", "")
    lines = text.splitlines()
    assert (
        f"ExecStart={fake_bin} rpc-worker --host ${{RPC_HOST}} --port ${{RPC_PORT}} $RPC_ARGS"
        in lines
    )
    assert "Environment=RPC_HOST=127.0.0.1" in lines  # loopback unless told otherwise
    assert "User=llama-supervisor" in lines


def test_systemd_analyze_verifies_the_worker_unit(staged: tuple[Path, Path]) -> None:
    analyze = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    if not sys.platform.startswith("linux"):
        pytest.skip("systemd is Linux only")
    if not os.access(analyze, os.X_OK):
        reason = "systemd-analyze is missing: make system-deps (apt-get install systemd)"
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)
    unit, _ = staged
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"}, check=False,
    )  # fmt: skip
    said = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]
    assert said == [], said
