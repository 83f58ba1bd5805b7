"""``llama-supervisor build``: run build_llamacpp.sh with a progress bar, keep its full output
in a log file, and print the built binary's path.

The script writes its progress (and cmake's) to stderr and the binary's path as the last line
of stdout. Steps come from its ``[build_llamacpp] …`` lines, percentages from cmake's
``[ 42%] …`` lines."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from supervisor.errors import SupervisorError

if TYPE_CHECKING:
    from rich.console import Console

SCRIPT_NAME = "build_llamacpp.sh"
TAIL_LINES = 30
_PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]\s*(.*)$")  # make: [ 42%] Building …
_NINJA = re.compile(r"^\[(\d+)/(\d+)\]\s*(.*)$")  # ninja: [12/345] Building …
_SCRIPT_LOG = re.compile(r"^\[build_llamacpp\]\s*(.*)$")
_OBJECT = re.compile(r"(?:Building \w+ object|Linking \w+ \w+) (.+?)(?:\.o(?:bj)?)?$")

DESCRIPTION = """\
Build llama.cpp's llama-server from source with build_llamacpp.sh and print the binary's
path (the gateway also finds the newest cached build by itself). The source is the pinned
llama.cpp release, or any llama.cpp checkout given with --source (BitNet's fork included).
Builds are cached under the cache directory, keyed by source, backend, platform and flags: a
second run with the same options returns at once unless --force.

The script is build_llamacpp.sh at the root of the llama-supervisor checkout, found next to
the package when it is installed editable (pip install -e .); with any other install, point
--script at a checkout's copy."""

EPILOG = """\
examples:
  llama-supervisor build                          # CPU (Metal on Apple Silicon)
  llama-supervisor build --backend cuda --jobs 8  # needs nvcc
  llama-supervisor build --source ~/src/BitNet/3rdparty/llama.cpp
  LLAMA_SERVER=$(llama-supervisor build | tail -n1)

The full output goes to a log file under the cache directory (its path is printed); when the
build fails, its last lines are shown too. Exit status: 0 built, 1 the build failed, 2 the
script was not found, 130 interrupted."""


class BuildScriptMissing(SupervisorError):
    code = "build_script_missing"


@dataclass(frozen=True)
class BuildEvent:
    """What one output line says: a new step, a cmake percentage, and/or the current target."""

    step: str | None = None
    percent: int | None = None
    detail: str | None = None


def parse_build_line(line: str) -> BuildEvent | None:
    """A line of the script's output as progress, or None when it says nothing new."""
    line = line.rstrip()
    if match := _SCRIPT_LOG.match(line):
        return BuildEvent(step=match[1])
    if match := _PERCENT.match(line):
        return BuildEvent(percent=min(int(match[1]), 100), detail=_target(match[2]))
    if (match := _NINJA.match(line)) and int(match[2]) > 0:
        percent = min(100 * int(match[1]) // int(match[2]), 100)
        return BuildEvent(percent=percent, detail=_target(match[3]))
    if line.startswith("-- Configuring") or line.startswith("-- The C"):
        return BuildEvent(step="configuring with cmake")
    return None


def _target(rest: str) -> str | None:
    """``Building CXX object a/b/c.cpp.o`` → ``c.cpp``; other text as it is."""
    target = _OBJECT.search(rest)
    return (Path(target[1]).name if target else rest) or None


def find_build_script(explicit: Path | None = None) -> Path:
    """The script given, else the one at the root of the checkout this package runs from."""
    script = explicit or Path(__file__).resolve().parents[2] / SCRIPT_NAME
    if not script.is_file():
        where = "" if explicit else " (llama-supervisor is not installed from a checkout)"
        raise BuildScriptMissing(
            f"no build script at {script}{where}: pass --script PATH/{SCRIPT_NAME}, or run "
            f"{SCRIPT_NAME} from a llama-supervisor checkout"
        )
    return script


def add_build_command(commands: Any) -> None:
    build: argparse.ArgumentParser = commands.add_parser(
        "build",
        help="build llama-server from source (cached)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument(
        "--backend",
        choices=("cpu", "cuda", "metal"),
        help="GPU backend (default: metal on Apple Silicon, else cpu)",
    )
    build.add_argument("--source", type=Path, metavar="DIR", help="a llama.cpp checkout to build")
    build.add_argument(
        "--jobs", type=int, metavar="N", help="parallel compile jobs (default: cores)"
    )
    build.add_argument("--force", action="store_true", help="rebuild even when a build is cached")
    build.add_argument(
        "--cmake-flag",
        dest="cmake_flags",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra CMake flag, repeatable; write it with '=' as it starts with '-' "
        "(--cmake-flag=-DGGML_AVX512=OFF)",
    )
    build.add_argument("--amx", action="store_true", help="keep ggml's AMX kernels on x86-64")
    build.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="builds and logs go here (default: $LLAMA_SUPERVISOR_CACHE, else "
        "~/.cache/llama-supervisor)",
    )
    build.add_argument("--script", type=Path, metavar="PATH", help=f"the {SCRIPT_NAME} to run")
    build.add_argument("-v", "--verbose", action="store_true", help="show every output line")
    build.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="a progress bar (default: when stderr is a terminal)",
    )
    build.set_defaults(run=run_build)


def script_argv(args: argparse.Namespace, script: Path) -> list[str]:
    """The script's command line for these options (through bash: no exec bit needed)."""
    argv = ["bash", str(script)]
    if args.backend:
        argv += ["--backend", args.backend]
    if args.source:
        argv += ["--source", str(args.source.expanduser())]
    if args.jobs:
        argv += ["--jobs", str(args.jobs)]
    if args.cache_dir:
        argv += ["--cache-dir", str(args.cache_dir.expanduser())]
    for flag in args.cmake_flags:
        argv += ["--cmake-flag", flag]
    if args.force:
        argv.append("--force")
    if args.amx:
        argv.append("--amx")
    return argv


def run_build(args: argparse.Namespace) -> int:
    # rich and pydantic-settings only when building: `serve` is parsed by the same parser.
    from rich.text import Text

    from supervisor.cli.render import stderr_console
    from supervisor.config import default_cache_dir

    script = find_build_script(args.script)
    logs = (args.cache_dir.expanduser() if args.cache_dir else default_cache_dir()) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"build-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    err = stderr_console()
    with log_path.open("w") as log:
        try:
            returncode, stdout = _run_script(script_argv(args, script), log, args, err)
        except KeyboardInterrupt:
            err.print(f"build interrupted; its output so far: {log_path}", markup=False)
            return 130
    binary = stdout[-1].strip() if stdout else ""
    if returncode != 0 or not binary:
        err.print(Text(f"build failed (exit {returncode}); full log: {log_path}", style="bold red"))
        err.print(Text("\n".join(_tail(log_path, TAIL_LINES))))
        return 1
    err.print(f"llama-server: {binary} (build log: {log_path})", markup=False)
    print(binary, flush=True)
    return 0


def _run_script(
    argv: list[str], log: IO[str], args: argparse.Namespace, err: Console
) -> tuple[int, list[str]]:
    """Run the script; stderr drives the display and goes, with stdout, to ``log``. Returns
    its exit status and its stdout lines."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace"
    )
    assert proc.stdout is not None and proc.stderr is not None
    stdout: list[str] = []
    lock = threading.Lock()

    def keep(line: str) -> None:
        with lock:
            log.write(line if line.endswith("\n") else line + "\n")

    def drain_stdout(lines: Iterable[str]) -> None:
        for line in lines:
            stdout.append(line)
            keep(line)

    reader = threading.Thread(target=drain_stdout, args=(proc.stdout,), daemon=True)
    reader.start()
    try:
        _follow(proc.stderr, keep, args, err)
        returncode = proc.wait()
    except KeyboardInterrupt:
        _stop(proc)
        raise
    reader.join(5)
    return returncode, stdout


def _follow(
    lines: Iterable[str], keep: Callable[[str], None], args: argparse.Namespace, err: Console
) -> None:
    """Feed output lines to the log and the display: a bar on a terminal, else the script's
    own step lines (every line with --verbose)."""
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from supervisor.cli.render import wants_progress

    show_bar = wants_progress(args.progress)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}", style="dim", markup=False),
        console=err,
        transient=True,
        disable=not show_bar,
    )
    task = progress.add_task("starting", total=None, detail="")
    with progress:
        for line in lines:
            keep(line)
            event = parse_build_line(line)
            if args.verbose or (not show_bar and event is not None and event.step):
                progress.console.print(line.rstrip(), markup=False, highlight=False)
            if event is None:
                continue
            if event.step:
                progress.update(task, description=event.step)
            if event.percent is not None:
                progress.update(task, total=100, completed=event.percent, description="compiling")
            if event.detail:
                progress.update(task, detail=event.detail[:60])


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _stop(proc: subprocess.Popen[str]) -> None:
    """After Ctrl-C (which the script and cmake got too): give them a moment, then kill."""
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, count: int) -> list[str]:
    with path.open(errors="replace") as handle:
        return [line.rstrip("\n") for line in deque(handle, maxlen=count)]
