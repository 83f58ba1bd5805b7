"""The prompt and completion text of an activity entry, kept only when ``activity_text`` is on.

Nothing here runs with the setting off. With it on, the answer's bytes (or parsed events) are
kept by the request's token meter (``TextMeter``: the one object that sees every answer, on
both ways in and on every surface), and the request's body by whichever way it came in; the
text is pulled out of them once, when the request is over, and cut to ``TEXT_CHARS``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable

from supervisor.telemetry.tokens import TokenMeter

TEXT_CHARS = 4096  # what an entry keeps of each text
CAPTURE_BYTES = 1024 * 1024  # what a meter keeps of an answer's bytes (text is cut far shorter)


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
    parts.extend(answer_text(piece) for piece in meter.seen if not isinstance(piece, bytes))
    return _cut("".join(parts))


def _answer_texts(raw: bytes) -> Iterable[str]:
    """A whole JSON answer's text, or each SSE event's piece of it."""
    stripped = raw.lstrip()
    if stripped.startswith(b"{"):
        try:
            return [answer_text(json.loads(raw))]
        except ValueError:
            return []
    texts = []
    for event in raw.split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload and payload != b"[DONE]":
                    with contextlib.suppress(ValueError):
                        texts.append(answer_text(json.loads(payload)))
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
    any Anthropic ``system``), else its ``prompt`` or ``input``; None if it has none."""
    if not body:
        return None
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
