"""Request bodies are read as llama-server reads them (issue 21, item 3). Python's json takes
``NaN``, ``Infinity``, ``1e400`` (as infinity), unpaired surrogate escapes and UTF-16 or UTF-32
text; llama-server's parser refuses them all, and its 500 reached the client, on relayed routes
and on those that rebuild the body (/api/chat, /api/generate, /api/v2/chat) alike. The gateway
now answers each with a 400 in the surface's format, and the child never sees it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from error_format import assert_error_format
from fake_child import FakeChild, Reply
from served import Serve

from supervisor.errors import BadRequest
from supervisor.surfaces.openai.dialect import parse_body

MakeGGUF = Callable[..., Path]
MODEL = "tiny.Q4_1"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
ANSWER = {
    "id": "c1", "object": "chat.completion", "created": 0, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "text": "hi",
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}  # fmt: skip

# (body, what the message says); each also tried after a space, which takes the slow path.
REFUSED = [
    (b'{"a": NaN}', "NaN is not allowed"),
    (b'{"a": Infinity}', "Infinity is not allowed"),
    (b'{"a": -Infinity}', "-Infinity is not allowed"),
    (b'{"a": 1e400}', "the number 1e400 is out of range"),
    (b'{"a": [-1E+999]}', "the number -1E+999 is out of range"),
    (b'{"a": "\\ud800"}', "unpaired UTF-16 surrogate"),
    (b'{"a": "\\udc00"}', "unpaired UTF-16 surrogate"),
    (b'{"a": "\\ud800\\u0041"}', "unpaired UTF-16 surrogate"),  # a high one, then no low one
    (b'{"a": "\\uD83D\\uD83D\\uDE00"}', "unpaired UTF-16 surrogate"),  # two highs, one low
    (b'{"a": "\\udc00\\ud800"}', "unpaired UTF-16 surrogate"),  # low before high
    (b'{"\\udfff": 1}', "unpaired UTF-16 surrogate"),  # in a key
    (b'{"a": [{"b": ["x", "y\\udbff"]}]}', "unpaired UTF-16 surrogate"),  # nested
    ('{"a": 1}'.encode("utf-16"), "is not UTF-8"),
    ('{"a": 1}'.encode("utf-16-le"), "UTF-16 or UTF-32"),
    ('{"a": 1}'.encode("utf-16-be"), "UTF-16 or UTF-32"),
    ('{"a": 1}'.encode("utf-32"), "is not UTF-8"),
    ('{"a": 1}'.encode("utf-32-le"), "UTF-16 or UTF-32"),
    ('{"a": 1}'.encode("utf-32-be"), "UTF-16 or UTF-32"),
    (b'{"a": "\xed\xa0\x80"}', "is not UTF-8"),  # a surrogate encoded raw (CESU-8)
    (b'{"a": "\xe9"}', "is not UTF-8 (byte 0xe9 at offset"),  # Latin-1
    (b'\xef\xbb\xbf\xef\xbb\xbf{"a": 1}', "Expecting value"),  # only one mark is skipped
]
# Bodies llama-server takes: these must still parse, as json.loads reads them.
ACCEPTED = [
    b'{"a": "\\ud83d\\ude00"}',  # an escaped pair: one emoji, as json.dumps writes it
    b'{"a": "\\uD83D\\uDE00 \\ud83d\\ude00"}',
    b'{"a": "\\\\ud800"}',  # an escaped backslash, then text
    b'{"a": "\\ud55c\\uae00"}',  # Hangul escapes near the surrogates
    b'{"a": "\\u0000"}',
    b'\xef\xbb\xbf{"a": 1}',  # one UTF-8 byte order mark, which llama-server skips
    b'{"a": 1e-400, "b": 1.7976931348623157e308, "c": -0.0, "d": 123456789012345678901234}',
    b' \t\r\n{"a": [1.5, -2e10]}\n',
]


@pytest.mark.parametrize(("body", "reason"), REFUSED)
def test_what_llama_server_refuses_is_a_clear_400(body: bytes, reason: str) -> None:
    for sent in (body, b" " + body if body.startswith(b"{") else body):
        with pytest.raises(BadRequest) as caught:
            parse_body(sent)
        message = caught.value.message
        assert message.startswith("Request body is not valid JSON: "), message
        assert reason in message, message
        assert "/" not in message and "Traceback" not in message, message


@pytest.mark.parametrize("body", ACCEPTED)
def test_what_llama_server_takes_still_parses(body: bytes) -> None:
    for sent in (body, body + b"\n"):
        assert parse_body(sent) == json.loads(sent)


# -- through the app, over ASGI and through the relay lane -------------------------------------


@pytest.fixture
def client(serve: Serve, make_gguf: MakeGGUF, fake_child: FakeChild) -> Iterator[httpx.Client]:
    make_gguf(f"models/{MODEL}.gguf")
    for path in ("/v1/chat/completions", "/v1/completions", "/completion"):
        fake_child.answer("POST", path, Reply(json=ANSWER))
    with serve() as http_client:
        yield http_client


# A body each route takes; ``VALUE`` marks where the non-standard value goes.
ROUTES = {
    "/v1/chat/completions": b'{"model": "tiny.Q4_1", "messages": [], "x": VALUE}',
    "/v1/completions": b'{"model": "tiny.Q4_1", "prompt": "hi", "x": VALUE}',
    "/completion": b'{"model": "tiny.Q4_1", "prompt": "hi", "x": [1, VALUE]}',
    f"/api/v2/chat/{MODEL}": b'{"messages": [{"role": "user", "content": "hi"}], "x": VALUE}',
    f"/api/v2/chat/{MODEL}/stream": b'{"messages": [{"role": "user", "content": "hi"}], '
    b'"x": VALUE}',
}
# Where the /api routes take free text, and pass it on.
TEXT_ROUTES = {
    "/api/chat": b'{"model": "tiny.Q4_1", "messages": [{"role": "user", "content": VALUE}]}',
    "/api/generate": b'{"model": "tiny.Q4_1", "prompt": VALUE}',
    "/v1/chat/completions": b'{"model": "tiny.Q4_1", "messages": [{"role": "user", '
    b'"content": VALUE}]}',
}
NUMBERS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"]
STRINGS = [b'"\\ud800"', b'"\\udc00"', b'"a\\ud800\\u0041"', b'"\\uDBFF\\uDBFF"']


def test_every_surface_answers_a_400_and_the_child_sees_nothing(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    cases = [(path, body, value) for path, body in ROUTES.items() for value in NUMBERS + STRINGS]
    cases += [(path, body, value) for path, body in TEXT_ROUTES.items() for value in STRINGS]
    for path, template, value in cases:
        body = template.replace(b"VALUE", value)
        for sent in (body, body.decode().encode("utf-16"), body.decode().encode("utf-32-le")):
            reply = client.post(path, content=sent)
            where = f"{path} {sent[:60]!r}: {reply.status_code} {reply.text}"
            assert reply.status_code == 400, where
            assert_error_format(path, reply.json())
            assert "not valid JSON" in reply.text, where
    assert [r.path for r in fake_child.requests if r.method == "POST"] == []


def test_a_byte_order_mark_and_escaped_pairs_still_reach_the_child(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    """Relayed bodies go to the child byte for byte (it skips the mark itself); rebuilt ones
    are written anew, without it."""
    emoji = b'"\\ud83d\\ude00"'
    relayed = b'\xef\xbb\xbf{"model": "tiny.Q4_1", "messages": [{"role": "user", "content": '
    relayed += emoji + b"}]}"
    assert client.post("/v1/chat/completions", content=relayed).status_code == 200
    assert fake_child.received("POST", "/v1/chat/completions")[-1].body == relayed
    rebuilt = relayed.replace(b'"messages"', b'"stream": false, "messages"')
    for path in ("/api/chat", f"/api/v2/chat/{MODEL}"):
        reply = client.post(path, content=rebuilt)
        assert reply.status_code == 200, f"{path}: {reply.text}"
        sent = fake_child.received("POST", "/v1/chat/completions")[-1].body
        assert not sent.startswith(b"\xef\xbb\xbf")
        assert json.loads(sent)["messages"][-1]["content"] == "\U0001f600"
