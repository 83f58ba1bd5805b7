"""The OpenAI surface (/v1, and the OpenAI-shaped native routes): pure functions."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from supervisor.errors import BadRequest, SupervisorError
from supervisor.models.registry import ModelEntry
from supervisor.peers.model import PeerModel

OWNER = "llama-supervisor"


def parse_json(body: bytes) -> Any:
    """Any JSON value, held to ``parse_body``'s rules; bad JSON is a 400."""
    try:
        return _decode(body)
    except ValueError as exc:  # JSONDecodeError; an integer of thousands of digits
        raise _not_json(str(exc)) from exc
    except RecursionError as exc:  # thousands of nested brackets: no request needs them
        raise BadRequest("Request body is nested too deeply") from exc


def parse_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object; bad JSON or a non-object is a 400. Bad JSON is whatever
    llama-server's parser (nlohmann::json) would refuse, so that no body reaches a child
    only to fail there with a 500: text that is not UTF-8 (UTF-16 and UTF-32 included;
    one leading UTF-8 byte order mark is skipped, as nlohmann does), ``NaN`` and
    ``Infinity``, numbers beyond a double (``1e400``), unpaired surrogate escapes."""
    data = parse_json(body) if body else None
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object")
    return data


def _decode(body: bytes) -> Any:
    """``json.loads(body)`` held to strict JSON, the short way for the usual body: UTF-8
    text that is one JSON value from its first byte to its last. On the gateway's hot path,
    run cold after each wait for the model, json.loads's own wrappers (the encoding sniff,
    two whitespace regexes) took longer than the scan itself. Anything else, errors
    included, takes ``_decode_slowly``, which words the error. Strict as llama-server is at
    little cost: the decoder's hooks (one call per float, none for other values) refuse
    what is not a finite number, and only a body with a surrogate's escape is walked."""
    try:
        text = body.decode()
        data, end = _DECODER.raw_decode(text)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return _decode_slowly(body)
    if end != len(text):
        return _decode_slowly(body)
    if "\\" in text and _SURROGATE_ESCAPE.search(text):  # a memchr first, then the regex
        _refuse_lone_surrogates(data)
    return data


def _decode_slowly(body: bytes) -> Any:
    """Whitespace around the value, a byte order mark, and every error, worded."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise _not_json(f"it is not UTF-8 (byte {byte:#04x} at offset {exc.start})") from None
    if "\x00" in text:  # no JSON holds a raw NUL; UTF-16 and UTF-32 text is full of them
        raise _not_json("it holds NUL bytes (UTF-16 or UTF-32?); only UTF-8 is accepted")
    data = _DECODER.decode(text)
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(data)
    return data


def _refuse_lone_surrogates(data: Any) -> None:
    """Python's json pairs escaped surrogates as it reads them (``"\\ud83d\\ude00"`` is one
    emoji); one left unpaired stays in the string, where UTF-8 cannot encode it and which
    nlohmann refuses. Walked with a list rather than recursion: the parser's own depth is
    all the nesting there is."""
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                raise _not_json("it holds an unpaired UTF-16 surrogate escape") from None
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _not_json(reason: str) -> BadRequest:
    return BadRequest(f"Request body is not valid JSON: {reason}")


def _refuse_constant(name: str) -> Any:
    """``NaN``, ``Infinity``, ``-Infinity``: Python's extensions to JSON."""
    raise _not_json(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: Python reads it as infinity, nlohmann refuses it
        raise _not_json(f"the number {text[:40]} is out of range")
    return value


# The escape of a UTF-16 surrogate, \ud800 to \udfff: an unpaired one, a pair (an emoji), or
# an escaped backslash then text. Walking the parsed strings tells which.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Holds no state between calls. Its hooks raise BadRequest, which no JSON error catches.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def requested_model(data: dict[str, Any]) -> str | None:
    model = data.get("model")
    if model is None or model == "":
        return None
    if not isinstance(model, str):
        raise BadRequest("'model' must be a string", param="model")
    return model


def wants_stream(data: dict[str, Any]) -> bool:
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream")
    return stream


def model_object(entry: ModelEntry) -> dict[str, Any]:
    """OpenAI's model object; ``capabilities`` only where it says more than "completion", so a
    plain text model keeps the exact OpenAI shape (clients of /v1 check its keys)."""
    body: dict[str, Any] = {
        "id": entry.id,
        "object": "model",
        "created": int(entry.modified),
        "owned_by": OWNER,
    }
    if entry.capabilities != ("completion",):
        body["capabilities"] = list(entry.capabilities)
    return body


def peer_model_object(model: PeerModel) -> dict[str, Any]:
    """A peer's model in OpenAI's shape, owned by the peer (its file is not ours to date)."""
    return {"id": model.id, "object": "model", "created": 0, "owned_by": model.peer}


def model_list(entries: list[ModelEntry], peers: Sequence[PeerModel] = ()) -> dict[str, Any]:
    """The local models, then the peers' (``Peers.models``)."""
    data = [model_object(e) for e in entries] + [peer_model_object(m) for m in peers]
    return {"object": "list", "data": data}


def error_body(error: SupervisorError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.error_type,
            "param": error.param,
            "code": error.code,
        }
    }


def error_event(error: SupervisorError) -> bytes:
    """The one SSE event a failed stream ends with, then the usual terminator."""
    payload = json.dumps(error_body(error), separators=(",", ":"))
    return f"data: {payload}\n\ndata: [DONE]\n\n".encode()
