"""Token counts in llama-server's answers, for the metrics.

Passthrough answers are bytes the gateway does not parse, so the counts are looked for
cheaply: only bytes that carry ``"usage"`` or ``"timings"`` are decoded, and then only the
small object after the key, not the whole answer (an embeddings answer can be megabytes).
The last ``timings`` object also says how long the generation took (``predicted_n`` tokens in
``predicted_ms``), for the /api/v2 surface's performance figures (``performance.py``): those
two numbers are read off its bytes, once per answer, without decoding it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

WINDOW = 2048  # bytes read after a key: usage and timings objects are a few hundred
MAX_PARTIAL = 65536  # longest SSE event kept while it arrives in pieces
_DECODER = json.JSONDecoder()
_NUMBER_END = rb"(?=\s*[,}])"  # a whole JSON number: 10 of 10.5 is no integer
_PREDICTED_N = re.compile(rb'"predicted_n"\s*:\s*(\d+)' + _NUMBER_END)
_PREDICTED_MS = re.compile(rb'"predicted_ms"\s*:\s*(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)' + _NUMBER_END)


def answer_tokens(answer: object) -> tuple[int, int] | None:
    """(tokens in, tokens out) of a parsed answer or stream event: its ``usage`` (OpenAI's,
    the Responses API's or Anthropic's), else llama.cpp's ``timings``; None if it carries
    neither."""
    if not isinstance(answer, dict):
        return None
    usage = answer.get("usage")
    if isinstance(usage, dict):
        counts = _usage_tokens(usage)
        if counts is not None:
            return counts
    return _timings_tokens(answer.get("timings"))


def _timings_tokens(timings: object) -> tuple[int, int] | None:
    if isinstance(timings, dict):
        prompt, predicted = timings.get("prompt_n"), timings.get("predicted_n")
        cached = timings.get("cache_n", 0)  # prompt tokens taken from the cache, not in prompt_n
        if isinstance(prompt, int) and isinstance(predicted, int) and isinstance(cached, int):
            return prompt + cached, predicted
    return None


def generation(timings: object) -> tuple[int, float] | None:
    """(tokens generated, milliseconds it took) of llama.cpp's ``timings``, if it has them."""
    if isinstance(timings, dict):
        count, millis = timings.get("predicted_n"), timings.get("predicted_ms")
        if isinstance(count, int) and isinstance(millis, int | float):
            return count, float(millis)
    return None


def _usage_tokens(usage: dict[str, object]) -> tuple[int, int] | None:
    """OpenAI's chat and completions ``usage`` (prompt_tokens, completion_tokens); else the
    Responses API's and Anthropic's (input_tokens, output_tokens). Anthropic's input leaves
    out the tokens read from the cache, counted apart (llama-server's: its prompt cache);
    an Anthropic stream's last usage (message_delta) has its output only."""
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens", 0)
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    prompt, completion = usage.get("input_tokens", 0), usage.get("output_tokens")
    cached = usage.get("cache_read_input_tokens", 0)
    if isinstance(prompt, int) and isinstance(completion, int) and isinstance(cached, int):
        return prompt + cached, completion
    return None


def scan_tokens(data: bytes, *, first: bool = False) -> tuple[int, int] | None:
    """``answer_tokens`` of raw answer bytes, read from the last ``usage`` (else ``timings``)
    object in them, or the first. A key inside a JSON string cannot match: its quotes are
    escaped."""
    usage = _value_after(data, b'"usage"', first)
    counts = _usage_tokens(usage) if isinstance(usage, dict) else None
    return counts or _timings_tokens(_value_after(data, b'"timings"', first))


def scan_generation(data: bytes) -> tuple[int, float] | None:
    """``generation`` of the last ``timings`` object in raw answer bytes: its two numbers
    found in its bytes (it is flat, so it ends at its first ``}``), not decoded."""
    at = data.rfind(b'"timings"')
    end = data.find(b"}", at, at + WINDOW) if at >= 0 else -1
    if end < 0:
        return None
    count = _PREDICTED_N.search(data, at, end + 1)
    millis = _PREDICTED_MS.search(data, at, end + 1)
    if count is None or millis is None:
        return None
    return int(count[1]), float(millis[1])


def _value_after(data: bytes, key: bytes, first: bool = False) -> object:
    at = data.find(key) if first else data.rfind(key)
    if at < 0:
        return None
    start = at + len(key)
    text = data[start : start + WINDOW].decode("utf-8", "replace").lstrip()
    if not text.startswith(":"):
        return None
    try:
        value, _ = _DECODER.raw_decode(text[1:].lstrip())
    except ValueError:
        return None
    return value


class TokenMeter:
    """Counts one answer's tokens exactly once: a whole body (``body``) right away; a stream's
    chunks (``chunk``) or parsed events (``event``) at ``close``, with the latest figures seen
    (llama-server may repeat cumulative timings in every event). ``timed``, if given, gets
    the answer's generation (tokens, milliseconds) from its last ``timings``, also once: a
    stream's only at ``close``, so that no chunk costs more for it. What it counted stays on
    it (``tokens``, ``generated``), for the request's activity entry."""

    tokens: tuple[int, int] | None = None  # (in, out), once counted
    generated: tuple[int, float] | None = None  # (tokens, milliseconds), once timed

    def __init__(
        self,
        count: Callable[[int, int], None],
        timed: Callable[[int, float], None] | None = None,
    ) -> None:
        self._count = count
        self._timed = timed
        self._latest: tuple[int, int] | None = None
        self._timings: bytes | dict[object, object] | None = None  # a stream's latest
        self._partial = b""  # the start of an SSE event that arrived in pieces

    def body(self, data: bytes) -> None:
        if b'"usage"' in data or b'"timings"' in data:
            counts = scan_tokens(data)
            if counts is not None:
                self.tokens = counts
                self._count(*counts)
            if self._timed is not None:
                generated = scan_generation(data)
                if generated is not None:
                    self.generated = generated
                    self._timed(*generated)

    def chunk(self, data: bytes) -> None:
        if self._partial or not data.endswith(b"\n\n"):
            data = self._whole_events(data)
        timings = b'"timings"' in data
        if timings or b'"usage"' in data:
            self._see(scan_tokens(data))
            if data.count(b'"usage"') > 1:  # an Anthropic stream's first and last, say
                self._see(scan_tokens(data, first=True))
            if timings:
                self._timings = data  # read at close: cumulative, so the last says it all

    def event(self, event: object) -> None:
        self._see(answer_tokens(event))
        timings = event.get("timings") if isinstance(event, dict) else None
        if isinstance(timings, dict):
            self._timings = timings

    def _see(self, counts: tuple[int, int] | None) -> None:
        """A stream's figures only grow (cumulative timings; Anthropic's input in its first
        event, its output in its last), so the largest of each is the answer's."""
        latest = self._latest
        if counts is None or latest is None:
            self._latest = counts or latest
        else:
            self._latest = (max(latest[0], counts[0]), max(latest[1], counts[1]))

    def close(self) -> None:
        latest, self._latest = self._latest, None
        if latest is not None:
            self.tokens = latest
            self._count(*latest)
        timings, self._timings = self._timings, None
        if timings is not None and self._timed is not None:
            generated = (
                scan_generation(timings) if isinstance(timings, bytes) else generation(timings)
            )
            if generated is not None:
                self.generated = generated
                self._timed(*generated)

    def _whole_events(self, data: bytes) -> bytes:
        """The complete events so far; an unfinished one waits for its next piece."""
        data = self._partial + data
        end = data.rfind(b"\n\n") + 2
        if end == 1:
            self._partial = data if len(data) <= MAX_PARTIAL else b""
            return b""
        rest = data[end:]
        self._partial = rest if len(rest) <= MAX_PARTIAL else b""
        return data[:end]
