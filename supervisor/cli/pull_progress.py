"""How the CLI shows a model pull's progress: a rich bar on a terminal, a few plain lines in a
pipe or a log. The figures come from the gateway's ``progress`` events (``bytes``, ``total``,
``rate``); turning them into text is pure."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn

from supervisor.cli.render import NONE, format_bytes, stderr_console


def _pull_numbers(data: dict[str, Any]) -> tuple[int, int | None, float]:
    """``bytes``, ``total`` (None when unknown) and ``rate`` of a pull event, whatever came."""
    done, total, rate = data.get("bytes"), data.get("total"), data.get("rate")
    return (
        done if isinstance(done, int) else 0,
        total if isinstance(total, int) and total > 0 else None,
        float(rate) if isinstance(rate, int | float) and rate > 0 else 0.0,
    )


def pull_fields(data: dict[str, Any]) -> dict[str, str]:
    """A ``progress`` event's figures as text: ``amount`` (``24.5MB/98.0MB``, or the bytes alone
    when the total is unknown), ``rate`` (``5.2MB/s``) and ``left`` (``0:00:14 left``, ``-`` when
    the total or the rate is unknown). From the gateway's own rate, which knows about a resumed
    download's first bytes, not one guessed from the updates."""
    done, total, rate = _pull_numbers(data)
    amount = format_bytes(done) + (f"/{format_bytes(total)}" if total else "")
    left = NONE
    if total and rate:
        seconds = max(0, round((total - done) / rate))
        left = f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d} left"
    return {"amount": amount, "rate": f"{format_bytes(round(rate))}/s" if rate else NONE,
            "left": left}  # fmt: skip


def pull_line(data: dict[str, Any]) -> str:
    """One plain progress line: ``pulling smol.gguf: 24.5MB/98.0MB (25%), 5.2MB/s, 0:00:14
    left``."""
    done, total, _ = _pull_numbers(data)
    fields = pull_fields(data)
    share = f" ({100 * done // total}%)" if total else ""
    text = f"pulling {data.get('file') or '?'}: {fields['amount']}{share}, {fields['rate']}"
    return text + (f", {fields['left']}" if fields["left"] != NONE else "")


class PlainPullProgress:
    """A pull's progress as a few plain lines, for a log or a pipe where a bar would be noise:
    one as each quarter of a known total is passed, and without a total at most one every
    ``every_s`` seconds of ``clock``."""

    MARKS = (0.25, 0.5, 0.75)

    def __init__(
        self,
        write: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        every_s: float = 30.0,
    ) -> None:
        self._write, self._clock, self._every_s = write, clock, every_s
        self._marks_passed = 0
        self._next_at: float | None = None

    def report(self, data: dict[str, Any]) -> None:
        done, total, _ = _pull_numbers(data)
        if total:
            passed = sum(1 for mark in self.MARKS if done >= mark * total)
            if passed > self._marks_passed:
                self._marks_passed = passed
                self._write(pull_line(data))
            return
        now = self._clock()
        if self._next_at is None:
            self._next_at = now + self._every_s
        elif now >= self._next_at:
            self._next_at = now + self._every_s
            self._write(pull_line(data))


@contextlib.contextmanager
def pull_progress(label: str, *, bar: bool) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Yields the function each ``progress`` event's data goes to: a bar on stderr (bytes,
    total, rate, time left; one that sweeps when the total is unknown) when ``bar``, else
    ``PlainPullProgress``'s few lines on stderr."""
    if not bar:
        yield PlainPullProgress(lambda text: print(text, file=sys.stderr, flush=True)).report
        return
    progress = Progress(
        # markup=False: a file name with brackets is text, not rich markup
        TextColumn("pulling {task.description}", markup=False),
        BarColumn(),
        TextColumn("{task.fields[amount]} {task.fields[rate]} {task.fields[left]}"),
        console=stderr_console(),
        transient=True,
    )
    task = progress.add_task(label, total=None, amount="", rate="", left="")

    def report(data: dict[str, Any]) -> None:
        done, total, _ = _pull_numbers(data)
        fields = pull_fields(data)
        progress.update(
            task,
            description=str(data.get("file") or label),
            completed=done,
            total=total,  # None leaves it unknown: the bar sweeps
            amount=fields["amount"],
            rate=fields["rate"],
            left=fields["left"],
        )

    with progress:
        yield report
