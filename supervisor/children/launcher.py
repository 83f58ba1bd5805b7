"""Starts one llama-server so that it dies with the gateway, even on SIGKILL.

Run as a script (stdlib only, imports nothing of ours):
``python launcher.py PPID [--cpus 0,1] -- ARGV...``; ``--cpus`` pins llama-server (and every
thread it starts) to those CPUs.

Linux: set PR_SET_PDEATHSIG=SIGKILL, check the parent is still the gateway (it may have died
before the prctl), then exec llama-server, which keeps the death signal across exec. The gateway
forks from its event-loop thread, which lives as long as the gateway, so the "parent thread
exits" caveat of PDEATHSIG does not bite.

Elsewhere (macOS): stay as a small watchdog. The gateway holds our stdin pipe; when the gateway
dies the pipe reaches EOF and we kill llama-server. SIGTERM is forwarded. Setting
LLAMA_SUPERVISOR_LAUNCHER=watchdog picks this mode on Linux too (the tests use it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading

PR_SET_PDEATHSIG = 1


def _exec_with_deathsig(parent_pid: int, argv: list[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        sys.stderr.write(f"launcher: prctl failed: {os.strerror(ctypes.get_errno())}\n")
        os._exit(126)
    if os.getppid() != parent_pid:
        os._exit(125)  # the gateway is already gone
    os.execvp(argv[0], argv)


def _watchdog(argv: list[str]) -> int:
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def on_parent_gone() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        child.kill()

    threading.Thread(target=on_parent_gone, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    signal.signal(signal.SIGINT, lambda *_: child.terminate())
    return child.wait()


def main(args: list[str]) -> int:
    cpus: set[int] = set()
    if len(args) > 2 and args[1] == "--cpus":
        cpus = {int(cpu) for cpu in args[2].split(",")}
        args = [args[0], *args[3:]]
    if len(args) < 3 or args[1] != "--":
        sys.stderr.write(
            "usage: children/launcher.py PARENT_PID [--cpus 0,1] -- PROGRAM [ARGS...]\n"
        )
        return 2
    parent_pid, argv = int(args[0]), args[2:]
    try:
        if cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cpus)  # inherited across exec and by every thread
        forced_watchdog = os.environ.get("LLAMA_SUPERVISOR_LAUNCHER") == "watchdog"
        if sys.platform.startswith("linux") and not forced_watchdog:
            _exec_with_deathsig(parent_pid, argv)
        return _watchdog(argv)
    except OSError as exc:
        sys.stderr.write(f"launcher: cannot start {argv[0]}: {exc}\n")
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
