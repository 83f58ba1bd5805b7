"""The prompt and completion text of an activity entry, kept only when ``activity_text`` is on.

Nothing here runs with the setting off. With it on, the answer's bytes (or parsed events) are
kept by the request's token meter (``TextMeter``: the one object that sees every answer, on
both ways in and on every surface), and the request's body by whichever way it came in; the
text is pulled out of them once, when the request is over, and cut to ``TEXT_CHARS``. That
happens on the event loop, so what is parsed is bounded: a request body or a whole answer
over ``PARSE_BYTES`` is not parsed (its text shows as ``TOO_LONG``), and a stream's events are
read from its first ``PARSE_BYTES`` only, until ``TEXT_CHARS`` of text are gathered.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable

from supervisor.telemetry.tokens import TokenMeter

TEXT_CHARS = 4096  # what an entry keeps of each text
CAPTURE_BYTES = 1024 * 1024  # what a meter keeps of an answer's bytes (text is cut far shorter)
PARSE_BYTES = 64 * 1024  # the most JSON parsed for one text, when the request is recorded
TOO_LONG = "(not shown: over {limit} bytes of JSON)"


class TextMeter(TokenMeter):
    """A token meter that also keeps what it saw of the answer (up to ``CAPTURE_BYTES``)."""

    def __init__(
        self,
        count: Callable[[int, int], None],
        timed: Callable[[int, float], None] | None = None,
    ) -> None:
        super().__init__(count, timed)
        self.seen: list[bytes | object] = []
        self._kept = 0

    def _keep(self, piece: bytes | object, size: int) -> None:
        if self._kept < CAPTURE_BYTES:
            self.seen.append(piece)
            self._kept += size

    def body(self, data: bytes) -> None:
        self._keep(data, len(data))
        super().body(data)

    def chunk(self, data: bytes) -> None:
        self._keep(data, len(data))
        super().chunk(data)

    def event(self, event: object) -> None:
        self._keep(event, 256)  # a parsed event: its size is a guess, its text is small
        super().event(event)


def completion_text(meter: TokenMeter | None) -> str | None:
    """The answer's text as a ``TextMeter`` saw it: a whole answer's, or a stream's pieces
    joined; None when there was none to see."""
    if not isinstance(meter, TextMeter) or not meter.seen:
        return None
    parts: list[str] = []
    raw = b"".join(piece for piece in meter.seen if isinstance(piece, bytes))
    if raw:
        parts.extend(_answer_texts(raw))
    gathered = sum(len(part) for part in parts)
    for piece in meter.seen:
        if gathered >= TEXT_CHARS:
            break
        if not isinstance(piece, bytes):
            parts.append(answer_text(piece))
            gathered += len(parts[-1])
    return _cut("".join(parts))


def _answer_texts(raw: bytes) -> Iterable[str]:
    """A whole JSON answer's text (up to ``PARSE_BYTES``), or each SSE event's piece of it
    (the events in the first ``PARSE_BYTES``, until ``TEXT_CHARS`` are gathered)."""
    stripped = raw.lstrip()
    if stripped.startswith(b"{"):
        if len(raw) > PARSE_BYTES:
            return [TOO_LONG.format(limit=PARSE_BYTES)]
        try:
            return [answer_text(json.loads(raw))]
        except ValueError:
            return []
    texts: list[str] = []
    gathered = 0
    events = raw[:PARSE_BYTES].split(b"\n\n")
    if len(raw) > PARSE_BYTES:
        events.pop()  # cut short: the last may be a piece of an event
    for event in events:
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload and payload != b"[DONE]":
                    with contextlib.suppress(ValueError):
                        texts.append(answer_text(json.loads(payload)))
                        gathered += len(texts[-1])
        if gathered >= TEXT_CHARS:
            break
    return texts


def answer_text(answer: object) -> str:
    """The generated text in one answer or stream event of any surface: OpenAI's chat and
    completions (whole or delta), llama.cpp's native ``content``, Anthropic's content blocks
    and deltas, the Responses API's output and text deltas, the /api surface's ``message``
    and ``response``; "" for anything else."""
    if not isinstance(answer, dict):
        return ""
    choices = answer.get("choices")
    if isinstance(choices, list):
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        for holder in (choice.get("delta"), choice.get("message")):
            if isinstance(holder, dict) and isinstance(holder.get("content"), str):
                return str(holder["content"])
        text = choice.get("text")
        return text if isinstance(text, str) else ""
    content = answer.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return _parts_text(content)
    delta = answer.get("delta")
    if isinstance(delta, dict) and isinstance(delta.get("text"), str):
        return str(delta["text"])
    if isinstance(delta, str) and answer.get("type") == "response.output_text.delta":
        return delta
    output = answer.get("output")
    if isinstance(output, list):
        return "".join(
            _parts_text(item.get("content")) for item in output if isinstance(item, dict)
        )
    message = answer.get("message")
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        return str(message["content"])
    response = answer.get("response")
    return response if isinstance(response, str) else ""


def prompt_text(body: bytes | None) -> str | None:
    """The prompt in a request's JSON body: its messages (one ``role: text`` line each, after
    any Anthropic ``system``), else its ``prompt`` or ``input``; None if it has none;
    ``TOO_LONG`` for a body over ``PARSE_BYTES``, which is not parsed."""
    if not body:
        return None
    if len(body) > PARSE_BYTES:
        return TOO_LONG.format(limit=PARSE_BYTES)
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    lines: list[str] = []
    system = data.get("system")
    if system:
        lines.append("system: " + _parts_text(system))
    messages = data.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                lines.append(f"{message.get('role', '?')}: {_parts_text(message.get('content'))}")
    else:
        for key in ("prompt", "input", "content"):
            value = data.get(key)
            if value:
                lines.append(_parts_text(value))
                break
    return _cut("\n".join(lines)) if lines else None


def _parts_text(value: object) -> str:
    """Text given as a string, or as a list of strings and ``{"text"}``/``{"content"}`` parts."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return ""
    texts = []
    for part in value:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            text = part.get("text", part.get("content"))
            texts.append(_parts_text(text))
    return "".join(texts) if all(isinstance(p, str) for p in value) else " ".join(texts)


def _cut(text: str) -> str:
    return text[:TEXT_CHARS]
