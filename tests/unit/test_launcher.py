"""The launcher ties a child's life to its parent's (no llama-server needed: `sleep` will do)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from supervisor.children import launcher

LAUNCHER = str(Path(launcher.__file__))
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PDEATHSIG")

# A parent that starts the launcher the way the gateway does, prints the child's pid, waits.
PARENT = f"""
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, {LAUNCHER!r}, str(os.getpid()), "--", "sleep", "60"],
                         stdin=subprocess.PIPE, start_new_session=True)
print(child.pid, flush=True)
time.sleep(60)
"""


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def start_parent(env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], int]:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=env
    )
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


def sleepers_of(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "sleep"]


@linux_only
def test_child_dies_when_its_parent_is_sigkilled() -> None:
    parent, child_pid = start_parent()
    try:
        assert not gone(child_pid, timeout=0.3)
        assert psutil.Process(child_pid).cmdline()[0] == "sleep"  # exec'd, no extra process
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert gone(child_pid, timeout=2)
    finally:
        parent.kill()
        if not gone(child_pid, 0):
            os.kill(child_pid, signal.SIGKILL)


def test_watchdog_mode_kills_the_child_when_the_parent_is_sigkilled() -> None:
    """The macOS mechanism (stdin EOF), forced on any platform."""
    parent, launcher_pid = start_parent(os.environ | {"LLAMA_SUPERVISOR_LAUNCHER": "watchdog"})
    try:
        deadline = time.monotonic() + 5
        while not sleepers_of(launcher_pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        sleepers = sleepers_of(launcher_pid)
        assert len(sleepers) == 1
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert gone(sleepers[0].pid, timeout=2)
        assert gone(launcher_pid, timeout=2)
    finally:
        parent.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher_pid, signal.SIGKILL)


@linux_only
def test_launcher_refuses_when_the_parent_is_already_gone() -> None:
    not_parent = os.getpid() + 1_000_000
    result = subprocess.run([sys.executable, LAUNCHER, str(not_parent), "--", "true"])
    assert result.returncode == 125


def test_launcher_reports_a_missing_program() -> None:
    result = subprocess.run(
        [sys.executable, LAUNCHER, str(os.getpid()), "--", "/no/such/llama-server"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 127
    assert "cannot start /no/such/llama-server" in result.stderr


def test_launcher_usage_error() -> None:
    assert subprocess.run([sys.executable, LAUNCHER, "1"], capture_output=True).returncode == 2


affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity")
SHOW_AFFINITY = "import os; print(sorted(os.sched_getaffinity(0)))"


@affinity
def test_launcher_pins_the_program_to_the_cpus_it_is_given() -> None:
    cpu = min(os.sched_getaffinity(0))
    argv = [sys.executable, LAUNCHER, str(os.getpid()), "--cpus", str(cpu), "--",
            sys.executable, "-c", SHOW_AFFINITY]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"[{cpu}]"


@affinity
def test_a_running_child_is_moved_thread_by_thread() -> None:
    """BackendProcess.pin: every thread of the child (here a Python with a second thread) is
    moved, as the placement loop moves a llama-server without restarting it."""
    import asyncio

    from supervisor.children.argv import ChildCommand
    from supervisor.children.process import BackendProcess

    code = (
        "import threading, time; "
        "threading.Thread(target=time.sleep, args=(60,)).start(); time.sleep(60)"
    )
    cpu = min(os.sched_getaffinity(0))

    async def run() -> set[tuple[int, ...]]:
        child = BackendProcess("t", ChildCommand([sys.executable, "-c", code]), "http://x")
        await child.start()
        try:
            assert child.pid is not None
            process = psutil.Process(child.pid)
            for _ in range(500):  # the launcher execs, then the second thread starts
                if process.num_threads() >= 2:
                    break
                await asyncio.sleep(0.02)
            assert child.pin((cpu,))
            return {tuple(psutil.Process(t.id).cpu_affinity()) for t in process.threads()}
        finally:
            await child.stop(grace=1)

    assert asyncio.run(run()) == {(cpu,)}
