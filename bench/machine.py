"""What the run ran on: CPU, memory, OS, Python, llama.cpp build, this checkout."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs in the dev deps

REPO = Path(__file__).resolve().parent.parent


def describe(llama_server: Path) -> dict[str, str]:
    return {
        "cpu": _cpu_model(),
        "cores": f"{psutil.cpu_count(logical=False) or '?'} physical, "
        f"{psutil.cpu_count(logical=True) or '?'} logical",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{_os_name()} (kernel {platform.release()})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "llama_server": _llama_version(llama_server),
        "llama_build_key": _build_key(llama_server),
        "checkout": _git_revision(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def _llama_version(binary: Path) -> str:
    """llama-server prints ``version: 0.5.0-dev (build 1, commit 0c1e57098)`` (to stderr)."""
    for line in _run([str(binary), "--version"]).splitlines():
        if line.startswith("version:"):
            return line.removeprefix("version:").strip()
    return "unknown"


def _build_key(binary: Path) -> str:
    """The cache key of a build made by build_llamacpp.sh (``builds/<key>/bin/llama-server``)."""
    parts = binary.resolve().parts
    if len(parts) >= 4 and parts[-4] == "builds":
        return parts[-3]
    return "not a cached build"


def _git_revision() -> str:
    revision = _run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO)
    if not revision or " " in revision:
        return "unknown"
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO)
    return f"{revision} (with uncommitted changes)" if dirty else revision


def cpu_count() -> int:
    return os.cpu_count() or 1
