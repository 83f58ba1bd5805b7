"""Server-sent events as the load generator sees them: split a byte stream into events and
tell what each one is. Pure functions over bytes, so they are tested with literals."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum


class EventKind(Enum):
    TOKEN = "token"  # carries generated text
    DONE = "done"  # data: [DONE]
    ERROR = "error"  # an {"error": …} event: the stream failed upstream
    OTHER = "other"  # role-only first chunk, the closing chunk, comments


@dataclass
class SSEScanner:
    """Feeds on raw chunks as they arrive and yields each complete event's ``data`` payload;
    a chunk may end mid-event, so the tail waits for the next one."""

    _buffer: bytes = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        if b"\r" in self._buffer:
            self._buffer = self._buffer.replace(b"\r\n", b"\n")
        *complete, self._buffer = self._buffer.split(b"\n\n")
        payloads = []
        for block in complete:
            data = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line[:5] == b"data:"]
            if data:
                payloads.append(b"\n".join(data))
        return payloads

    @property
    def pending(self) -> bytes:
        """Bytes after the last complete event (a stream cut mid-event leaves some)."""
        return self._buffer


@dataclass(frozen=True)
class Event:
    kind: EventKind
    reported_tokens: int | None = None  # the generation's token count, from the last chunk


def classify(payload: bytes) -> Event:
    """What one event's data is: OpenAI chat (``delta.content``), OpenAI completions
    (``text``) and llama.cpp's native ``content`` all count as text when non-empty. The
    closing chunk's ``usage.completion_tokens`` (or llama.cpp's ``timings.predicted_n``) is
    the stream's token count: a token that ends mid-character sends no text of its own."""
    if payload.strip() == b"[DONE]":
        return Event(EventKind.DONE)
    try:
        event = json.loads(payload)
    except ValueError:
        return Event(EventKind.OTHER)
    if not isinstance(event, dict):
        return Event(EventKind.OTHER)
    if "error" in event:
        return Event(EventKind.ERROR)
    kind = EventKind.TOKEN if _has_text(event) else EventKind.OTHER
    return Event(kind, _reported_tokens(event))


def _reported_tokens(event: dict[str, object]) -> int | None:
    for key, field in (("usage", "completion_tokens"), ("timings", "predicted_n")):
        block = event.get(key)
        if isinstance(block, dict) and isinstance(block.get(field), int):
            return int(block[field])
    return None


def _has_text(event: dict[str, object]) -> bool:
    choices = event.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict) and delta.get("content"):
            return True
        return bool(choice.get("text"))
    return bool(event.get("content"))
