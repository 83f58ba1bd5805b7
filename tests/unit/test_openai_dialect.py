from __future__ import annotations

import json

import pytest

from supervisor.errors import BackendError, BadRequest, ModelNotFound
from supervisor.surfaces.openai import dialect as openai


def test_parse_body_accepts_objects_only() -> None:
    assert openai.parse_body(b'{"model": "m", "tools": []}') == {"model": "m", "tools": []}
    for bad in (b"", b"{", b"[1]", b'"text"', b"\xff"):
        with pytest.raises(BadRequest):
            openai.parse_body(bad)


def test_parse_body_reads_what_json_loads_reads() -> None:
    # The short way (one scan of UTF-8 text) must agree with json.loads on every JSON body.
    for body in (
        b'{"model": "m", "messages": [{"role": "user", "content": "h\\u00e9 \xc3\xa9"}]}',
        b'  {"a": 1}\n',  # whitespace around the value
        b'\xef\xbb\xbf{"a": 1}',  # a UTF-8 byte order mark
        b'{"a": 1, "b": 1e-999, "a": 2}',  # the last "a" wins, in llama-server's parser too
    ):
        assert openai.parse_body(body) == json.loads(body)
    # What json.loads reads beyond JSON, and llama-server refuses (test_strict_json.py).
    beyond = ('{"a": 1}'.encode("utf-16"), b'{"a": NaN}', b'{"a": 1e999}', b'{"a": "\\ud800"}')
    for bad in (b'{"a": 1} x', b'{"a": 1}{}', b'{"a": "\x00"}', *beyond):
        with pytest.raises(BadRequest, match="not valid JSON"):
            openai.parse_body(bad)


def test_parse_body_refuses_deep_nesting_as_bad_request() -> None:
    # json.loads recurses per bracket: 100,000 of them raised RecursionError (a 500).
    for deep in (b"[" * 100_000, b'{"a":' * 100_000):
        with pytest.raises(BadRequest, match="nested too deeply"):
            openai.parse_body(deep)


def test_model_and_stream_fields_are_typed() -> None:
    assert openai.requested_model({"model": "m"}) == "m"
    assert openai.requested_model({}) is None
    assert openai.wants_stream({"stream": True}) is True
    assert openai.wants_stream({}) is False
    with pytest.raises(BadRequest):
        openai.requested_model({"model": 3})
    with pytest.raises(BadRequest):
        openai.wants_stream({"stream": "yes"})


def test_error_envelope_has_the_four_openai_fields() -> None:
    body = openai.error_body(ModelNotFound("nope"))
    assert body == {
        "error": {
            "message": "Model not found: nope",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def test_error_event_is_one_sse_event_then_done() -> None:
    raw = openai.error_event(BackendError("child died")).decode()
    events = [e for e in raw.split("\n\n") if e]
    assert len(events) == 2
    assert json.loads(events[0].removeprefix("data: "))["error"]["code"] == "backend_error"
    assert events[1] == "data: [DONE]"
