"""A child's output pipe: split into lines, read in batches, every line delivered, closed at
end of file (real pipes)."""

from __future__ import annotations

import asyncio
import os

import pytest

from supervisor.children import output
from supervisor.children.output import LineSplitter, PipeReader

pytestmark = pytest.mark.anyio


def test_lines_are_split_across_pieces() -> None:
    lines = LineSplitter()
    assert lines.feed(b"one\ntw") == ["one"]
    assert lines.feed(b"o\r\n\n  \nthree") == ["two"]  # empty and blank lines are dropped
    assert lines.finish() == ["three"]
    assert lines.finish() == []


def test_bad_utf8_and_overlong_lines_still_come_through() -> None:
    lines = LineSplitter()
    assert lines.feed(b"caf\xe9\n") == ["caf\ufffd"]
    huge = b"x" * (output.MAX_LINE + 1)
    assert lines.feed(huge) == [huge.decode()]  # passed on unfinished rather than kept
    assert lines.feed(b"end\n") == ["end"]


async def test_a_burst_of_writes_is_read_in_one_batch() -> None:
    read_fd, write_fd = os.pipe()
    got: list[str] = []
    batches: list[int] = []
    reader = PipeReader(read_fd, got.append, batch_s=0.05)
    original = reader._drain

    def counted() -> None:
        batches.append(len(got))
        original()

    reader._drain = counted  # type: ignore[method-assign]
    for n in range(5):  # one write per line, as llama-server does
        os.write(write_fd, f"line {n}\n".encode())
    await asyncio.sleep(0.2)
    assert got == [f"line {n}" for n in range(5)]
    assert batches == [0]  # woken once, read all five
    os.write(write_fd, b"last, unfinished")
    os.close(write_fd)
    await asyncio.wait_for(reader.finished, 2)
    assert got[-1] == "last, unfinished"


async def test_more_than_one_batch_of_output_is_all_read() -> None:
    read_fd, write_fd = os.pipe()
    got: list[str] = []
    reader = PipeReader(read_fd, got.append, batch_s=0.001)
    line = b"y" * 999 + b"\n"
    count = output.READ_SIZE * output.READS_PER_BATCH // len(line) + 50

    async def write_all() -> None:
        data = line * count
        while data:  # the pipe holds 64 KiB: write as the reader makes room
            try:
                data = data[os.write(write_fd, data) :]
            except BlockingIOError:
                await asyncio.sleep(0.001)
        os.close(write_fd)

    os.set_blocking(write_fd, False)
    await asyncio.wait_for(asyncio.gather(write_all(), reader.finished), 10)
    assert len(got) == count


async def test_a_failing_handler_does_not_stop_the_reading() -> None:
    read_fd, write_fd = os.pipe()
    got: list[str] = []

    def handler(line: str) -> None:
        if line == "bad":
            raise RuntimeError("boom")
        got.append(line)

    reader = PipeReader(read_fd, handler, batch_s=0.001)
    os.write(write_fd, b"bad\ngood\n")
    os.close(write_fd)
    await asyncio.wait_for(reader.finished, 2)
    assert got == ["good"]


async def test_close_stops_reading_and_closes_the_pipe() -> None:
    read_fd, write_fd = os.pipe()
    reader = PipeReader(read_fd, lambda line: None)
    reader.close()
    reader.close()  # twice is harmless
    assert reader.finished.done()
    with pytest.raises(OSError):
        os.fstat(read_fd)
    os.close(write_fd)
