"""Server-sent events as the tests write them (a fake child's stream) and read them (an answer's
events and ``data:`` payloads, whole or line by line as they arrive), and the chat body most
tests send."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

DATA = "data: "
DONE = b"data: [DONE]\n\n"


def event(payload: Any) -> bytes:
    """One ``data:`` event carrying ``payload`` as JSON."""
    return f"data: {json.dumps(payload)}\n\n".encode()


def delta(text: str) -> bytes:
    """A chat chunk whose delta carries ``text``."""
    return event({"choices": [{"delta": {"content": text}}]})


def typed_event(name: str, payload: Any) -> bytes:
    """A typed event (Anthropic Messages, OpenAI Responses), compact JSON as llama-server's."""
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def sse_events(raw: str) -> list[str]:
    """The events of a whole answer, in order; blank ones dropped."""
    return [e for e in raw.split("\n\n") if e.strip()]


def sse_data(raw: str, *, strict: bool) -> list[str]:
    """The payloads of a whole answer's ``data:`` events. ``strict``: every event must be
    one (asserted); else the others (typed events, comments) are skipped."""
    events = sse_events(raw)
    if strict:
        assert all(e.startswith(DATA) for e in events), raw[:300]
    return [e.removeprefix(DATA) for e in events if e.startswith(DATA)]


def data_lines(lines: Iterable[str], *, strict: bool) -> Iterator[str]:
    """The payloads of the ``data:`` lines among ``lines`` (httpx's ``iter_lines()``), as they
    arrive. ``strict``: every line that is not blank must be one (asserted)."""
    for line in lines:
        if strict and line:
            assert line.startswith(DATA), line
        if line.startswith(DATA):
            yield line.removeprefix(DATA)


def last_event(raw: str) -> tuple[str, Any]:
    """The name and JSON data of a typed answer's last event: an ``event:`` line, then a
    ``data:`` line, and nothing else."""
    name, data = sse_events(raw)[-1].split("\n")
    assert name.startswith("event: ") and data.startswith(DATA), (name, data)
    return name.removeprefix("event: "), json.loads(data.removeprefix(DATA))


def chat_body(model: str, content: object = "Hi", **extra: Any) -> dict[str, Any]:
    """A chat request of one user message; ``extra``: more fields (``max_tokens``)."""
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}
