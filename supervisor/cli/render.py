"""How the CLI shows things: rich tables and lines built from the admin API's plain JSON, and
the progress displays. Building a renderable is pure; printing is the caller's."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from supervisor.cli.admin_client import LogLine
from supervisor.placement.cores import cpu_list

STATUS_STYLES = {
    "loaded": "green",
    "loading": "yellow",
    "draining": "yellow",
    "stopping": "yellow",
    "failed": "bold red",
    "unloaded": "dim",
}
NONE = "-"
PIPE_WIDTH = 250


def stdout_console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or captured: no terminal width to fit, so never fold or crop a row.
        console.width = PIPE_WIDTH
    return console


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def wants_progress(asked: bool | None) -> bool:
    """Progress displays: when asked (``--progress``), else when stderr is a terminal."""
    return sys.stderr.isatty() if asked is None else asked


def status_text(word: str) -> Text:
    return Text(word, style=STATUS_STYLES.get(word, ""))


def format_bytes(n: int) -> str:
    # memory.format_bytes, imported here: supervisor.models.memory pulls in psutil, the registry and
    # the settings (pydantic), which every other CLI command can do without.
    from supervisor.models.memory import format_bytes as format_memory

    return format_memory(n)


def _size(value: Any) -> str:
    return format_bytes(value) if isinstance(value, int) else NONE


def _memory(state: dict[str, Any]) -> str:
    """Resident memory when the gateway measured it, else its estimate (marked ``~``)."""
    if isinstance(state.get("rss_bytes"), int):
        return format_bytes(state["rss_bytes"])
    if isinstance(state.get("memory_estimate_bytes"), int):
        return "~" + format_bytes(state["memory_estimate_bytes"])
    return NONE


def _or_none(value: Any) -> str:
    return NONE if value is None or value == "" else str(value)


def models_table(listing: dict[str, Any]) -> Table:
    """``GET /api/v2/models`` as one row per model file."""
    loaded: dict[str, Any] = listing.get("loaded_models") or {}
    table = Table(box=None, pad_edge=False, header_style="bold")
    # On a narrow terminal the model name folds; the short columns stay whole.
    table.add_column("MODEL", overflow="fold", ratio=1)
    left = ("STATUS", "ARCH", "THREADS@CPUS")
    for name in ("STATUS", "SIZE", "ARCH", "CTX", "PID", "MEMORY", "ACTIVE/QUEUED", left[2]):
        table.add_column(name, no_wrap=True, justify="left" if name in left else "right")
    for model in listing.get("available_models") or []:
        model_id = str(model.get("id", "?"))
        meta = model.get("metadata") or {}
        item = loaded.get(model_id) or {}
        state = item.get("state") or {}
        busy = NONE
        if state:
            busy = f"{state.get('in_flight', 0)}/{state.get('queued', 0)}"
        table.add_row(
            model_id,
            status_text(str(item.get("status", "unloaded"))),
            _size(model.get("size")),
            _or_none(meta.get("model_type")),
            _or_none((meta.get("parameters") or {}).get("context_length")),
            _or_none(state.get("pid")),
            _memory(state) if state else NONE,
            busy,
            _threads_at_cpus(state.get("children") or []),
        )
    return table


def _threads_at_cpus(children: list[dict[str, Any]]) -> str:
    """Each running child as ``threads@CPUs`` (``2@0-1``; threads alone when not pinned,
    ``auto`` for llama.cpp's default), the chat child first and bare, the others named:
    ``2@0-1, embedding 1@2``."""
    shown = []
    for child in children:
        threads = child.get("threads")
        where = "auto" if threads is None else str(threads)
        if cpus := _cpus(child):
            where += f"@{cpus}"
        role = child.get("role")
        shown.append(where if role == "chat" else f"{role} {where}")
    return ", ".join(shown) or NONE


def _cpus(child: dict[str, Any]) -> str:
    cpus = child.get("cpus") or []
    return cpu_list([int(cpu) for cpu in cpus])


def child_line(child: dict[str, Any]) -> str:
    """One running child for ``models status``: ``chat[4242] 2 threads on CPUs 0-1, poll
    default, RAM``."""
    pid = child.get("pid")
    threads = child.get("threads")
    count = "default threads" if threads is None else _counted(threads, "thread")
    cpus = _cpus(child)
    where = f" on {_named(len(child.get('cpus') or []), 'CPU')} {cpus}" if cpus else ", unpinned"
    shared = " (shared)" if child.get("shared") else ""
    poll = child.get("poll")
    parts = [
        f"{child.get('role', '?')}[{NONE if pid is None else pid}] {count}{where}{shared}",
        f"poll {'default' if poll is None else poll}",
    ]
    if child.get("memory"):
        parts.append(str(child["memory"]) + _gpus(child))
    return ", ".join(parts)


def _gpus(child: dict[str, Any]) -> str:
    """`` on GPU 0 (NVIDIA H200)``; several with their ``--tensor-split``."""
    gpus = child.get("gpus") or []
    if not gpus:
        return ""
    named = ", ".join(f"{gpu.get('index')} ({gpu.get('name')})" for gpu in gpus)
    text = f" on {_named(len(gpus), 'GPU')} {named}"
    split = child.get("tensor_split") or []
    if split:
        text += ", tensor split " + ",".join(str(part) for part in split)
    return text


def _named(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


def _counted(count: int, word: str) -> str:
    return f"{count} {_named(count, word)}"


def model_details(info: dict[str, Any]) -> Table:
    """``GET /api/v2/models/{id}`` as a two-column sheet."""
    state: dict[str, Any] = info.get("state") or {}
    meta = info.get("metadata") or {}
    parameters = meta.get("parameters") or {}
    performance = info.get("performance") or {}
    params = state.get("params") or {}
    rows: list[tuple[str, str | Text]] = [
        ("model", str(info.get("id", "?"))),
        ("status", status_text(str(info.get("status", "?")))),
        ("file", _or_none(state.get("path"))),
        ("size", _size(info.get("size"))),
        ("architecture", _or_none(meta.get("model_type"))),
        ("context length", _or_none(parameters.get("context_length"))),
        ("pinned", "yes" if state.get("pinned") else "no"),
        ("pid", _or_none(state.get("pid"))),
        ("port", _or_none(state.get("port"))),
        ("memory", _memory(state)),
        ("loaded at", _or_none(state.get("loaded_at"))),
        ("load time", _seconds(state.get("load_seconds"))),
        ("load parameters", ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"),
        ("requests", f"{state.get('in_flight', 0)} in flight, {state.get('queued', 0)} queued"),
        ("restarts", _or_none(state.get("restart_count"))),
        ("embedding child", _or_none(state.get("embedding_state"))),
        ("tokens processed", _or_none(performance.get("tokens_processed"))),
        ("average speed", f"{float(performance.get('average_speed') or 0):.1f} tokens/s"),
    ]
    for index, child in enumerate(state.get("children") or []):
        rows.append(("children" if index == 0 else "", Text(child_line(child))))
    if state.get("exit_code") is not None:
        rows.append(("exit code", str(state["exit_code"])))
    if state.get("last_error"):
        rows.append(("last error", Text(str(state["last_error"]), style="red")))
    sheet = Table.grid(padding=(0, 2))
    sheet.add_column(style="bold", no_wrap=True)
    sheet.add_column()
    for name, value in rows:
        sheet.add_row(name, value)
    return sheet


def _seconds(value: Any) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else NONE


def reload_report(report: dict[str, Any]) -> Text:
    """``POST /api/v2/reload``: what changed."""
    text = Text(str(report.get("message") or "Configuration reloaded") + "\n")
    for key in ("swapped", "unloaded", "added"):
        names = report.get(key) or []
        text.append(f"  {key:<9} ", style="bold")
        text.append((", ".join(str(n) for n in names) if names else NONE) + "\n")
    text.rstrip()
    return text


def log_line(line: LogLine) -> Text:
    """``TIME ROLE[PID] text``, the prefix dimmed. A ``Text``, so brackets in llama-server's
    output are never read as rich markup."""
    pid = NONE if line.pid is None else str(line.pid)
    return Text.assemble((f"{line.time} {line.role}[{pid}] ", "dim"), line.line)


def run_with_spinner(
    work: Callable[[], Any],
    label: str,
    poll: Callable[[], str | None] | None = None,
    *,
    show: bool,
    poll_every: float = 0.5,
) -> Any:
    """Run ``work`` (a blocking admin request) in a thread while a spinner shows ``label``, the
    elapsed time and, when ``poll`` is given, what it says (the model's state) every
    ``poll_every`` seconds. Returns what ``work`` returns, or raises what it raised."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    # A daemon thread: after Ctrl-C the CLI exits without waiting for the gateway's answer.
    worker = threading.Thread(target=target, name="admin-request", daemon=True)
    worker.start()
    with _spinner(label, show) as describe:
        next_poll = time.monotonic() + poll_every
        while worker.is_alive():
            worker.join(0.1)
            if poll is not None and show and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + poll_every
                with contextlib.suppress(Exception):
                    state = poll()
                    if state:
                        describe(f"{label} ({state})")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@contextlib.contextmanager
def _spinner(label: str, show: bool) -> Iterator[Callable[[str], None]]:
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=stderr_console(),
        transient=True,
        disable=not show,
    )
    task = progress.add_task(label, total=None)
    with progress:
        yield lambda text: progress.update(task, description=text)


@contextlib.contextmanager
def download_bar(show: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A download bar for ``fetch_demo_model(progress=…)``, shown from the first report on;
    yields None when no display is wanted."""
    if not show:
        yield None
        return
    progress = Progress(
        TextColumn("downloading"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=True,
    )
    task = progress.add_task("download", total=None, visible=False)

    def report(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total or None, visible=True)

    with progress:
        yield report
